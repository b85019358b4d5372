"""The book's preprocessing (Géron, *Hands-On Machine Learning*, chapter 2) as one transformer.

:func:`build_preprocessor` turns ``schema`` and ``features`` from ``params.yaml`` into a
scikit-learn :class:`~sklearn.compose.ColumnTransformer` that takes the raw table as it is and
returns a dense float matrix without NaN:

* ``ratio``: one feature per ``features.ratios`` entry (numerator / denominator, e.g.
  bedrooms per room), from median-imputed inputs, standard-scaled;
* ``log``: the columns ``features.log`` names (heavy-tailed counts, say), median-imputed,
  ``log``-ed, standard-scaled;
* ``geo`` (only when ``features.geo`` names two coordinate columns): similarity (an RBF
  kernel) of each row's coordinates to the centres of a k-means clustering of the
  coordinates, so a model sees "near which cluster", not raw latitude / longitude
  (:class:`ClusterSimilarity`);
* ``cat``: the categorical columns, most-frequent-imputed and one-hot encoded; a category
  never seen in training encodes as all zeros rather than failing;
* ``num``: every other numeric column, median-imputed and standard-scaled.

Every other column (the target, ``row_id``, ``batch``, anything extra) is dropped, and columns
are selected by name, so their order in the input does not matter. A block nothing is
configured for is absent: with an empty ``features:`` section the model sees the numeric
columns imputed and scaled and the categories one-hot encoded, nothing more.

Every statistic (medians, most frequent categories, means and scales, k-means centres) is
learnt by ``fit``, which the pipeline calls on the training split only: transforming the test
split or a new batch reuses the training statistics, so nothing about the test set leaks
into the features. A value that cannot be computed (a zero denominator, the log of a
non-positive number) counts as missing and gets the training median of that feature.

Feature names are ``<block>__<feature>``: ``ratio__bedrooms_ratio``, ``log__total_rooms``,
``geo__cluster_3_similarity``, ``cat__ocean_proximity_INLAND``, ``num__housing_median_age``.
Everything here is plain module-level classes and functions, so the fitted transformer
clones, pickles and cloudpickles.
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from tabreg.config import FeaturesConfig, SchemaConfig

__all__ = ["ClusterSimilarity", "build_preprocessor", "feature_names", "ratio_transformer"]


class ClusterSimilarity(TransformerMixin, BaseEstimator):
    """RBF similarity of each row to the centres of a k-means clustering (the book's class).

    ``fit`` clusters the rows (``n_init=10``, optionally weighted); ``transform`` returns
    ``exp(-gamma * ||x - centre||^2)`` for each of the ``n_clusters`` centres.
    """

    def __init__(self, n_clusters=10, gamma=1.0, random_state=None):
        self.n_clusters = n_clusters
        self.gamma = gamma
        self.random_state = random_state

    def fit(self, X, y=None, sample_weight=None):
        X = validate_data(self, X, reset=True)
        self.kmeans_ = KMeans(self.n_clusters, n_init=10, random_state=self.random_state)
        self.kmeans_.fit(X, sample_weight=sample_weight)
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        return rbf_kernel(X, self.kmeans_.cluster_centers_, gamma=self.gamma)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        _check_input_features(self, input_features)
        n = self.kmeans_.cluster_centers_.shape[0]
        return np.asarray([f"cluster_{i}_similarity" for i in range(n)], dtype=object)


class Ratio(TransformerMixin, BaseEstimator):
    """The former ratio transformer, kept only so that models registered with it still load
    and predict the same: new models use :func:`ratio_transformer`, the book's own
    ``FunctionTransformer``, which is the same arithmetic without a class of our own."""

    def __init__(self, name="ratio"):
        self.name = name

    def fit(self, X, y=None):
        X = validate_data(self, X, reset=True, ensure_all_finite="allow-nan")
        _require_two_columns(X.shape[1])
        return self

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = X[:, [0]] / X[:, [1]]
        return _nan_if_not_finite(ratio)

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self)
        _check_input_features(self, input_features)
        return np.asarray([self.name], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


def _check_input_features(estimator, input_features) -> None:
    """What ``get_feature_names_out`` must reject: names that are not the fitted input's."""
    if input_features is None:
        return
    given = np.asarray(input_features, dtype=object)
    if len(given) != estimator.n_features_in_:
        raise ValueError(f"input_features should have length equal to number of features "
                         f"({estimator.n_features_in_}), got {len(given)}")
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is not None and not np.array_equal(fitted, given):
        raise ValueError("input_features is not equal to feature_names_in_")


def _require_two_columns(n_columns: int) -> None:
    if n_columns != 2:
        raise ValueError(f"Ratio needs exactly 2 features (numerator, denominator), "
                         f"got {n_columns} feature(s)")


def _nan_if_not_finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    values[~np.isfinite(values)] = np.nan
    return values


def safe_log(X) -> np.ndarray:
    """Natural log; a non-positive value gives NaN (not -inf), for the imputer after it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _nan_if_not_finite(np.log(np.asarray(X, dtype=np.float64)))


def _imputer(strategy: str = "median") -> SimpleImputer:
    # keep_empty_features: a column missing throughout training still yields its feature, so
    # the output width (and the names) never depends on the data.
    return SimpleImputer(strategy=strategy, keep_empty_features=True)


def ratio(X) -> np.ndarray:
    """The first column over the second; a ratio that is not finite (a zero denominator, a
    missing input) comes out as NaN, so that the imputer after it decides what it becomes."""
    X = np.asarray(X, dtype=np.float64)
    _require_two_columns(X.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return _nan_if_not_finite(X[:, [0]] / X[:, [1]])


def _named(name: str, transformer: object, input_features: object) -> list[str]:
    return [name]


def ratio_transformer(name: str) -> FunctionTransformer:
    """Two columns in, their ratio out as one feature called ``name``: as the book builds it
    (a ``FunctionTransformer`` with ``feature_names_out``); a partial, not a lambda, so the
    fitted pipeline pickles with the standard library too."""
    return FunctionTransformer(ratio, feature_names_out=functools.partial(_named, name))


def _ratio_pipeline(name: str) -> Pipeline:
    return Pipeline([("impute", _imputer()), ("ratio", ratio_transformer(name)),
                     ("fill", _imputer()), ("scale", StandardScaler())])


def _log_pipeline() -> Pipeline:
    log = FunctionTransformer(safe_log, feature_names_out="one-to-one")
    return Pipeline([("impute", _imputer()), ("log", log),
                     ("fill", _imputer()), ("scale", StandardScaler())])


def _geo_pipeline(n_clusters: int, gamma: float, seed: int) -> Pipeline:
    # Coordinates are never missing in the real data; the imputer keeps a stray NaN harmless.
    similarity = ClusterSimilarity(n_clusters=n_clusters, gamma=gamma, random_state=seed)
    return Pipeline([("impute", _imputer()), ("similarity", similarity)])


def _cat_pipeline() -> Pipeline:
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    return Pipeline([("impute", _imputer("most_frequent")), ("onehot", encoder)])


def _num_pipeline() -> Pipeline:
    return Pipeline([("impute", _imputer()), ("scale", StandardScaler())])


def _ratio_block(features: FeaturesConfig) -> ColumnTransformer:
    """One pipeline per ratio, each named (and its feature named) after the ratio."""
    per_ratio = [(r.name, _ratio_pipeline(r.name), [r.numerator, r.denominator])
                 for r in features.ratios]
    return ColumnTransformer(per_ratio, remainder="drop", sparse_threshold=0.0,
                             verbose_feature_names_out=False)


def _unique(columns) -> list[str]:
    return list(dict.fromkeys(columns))


def _other_numeric(schema: SchemaConfig, features: FeaturesConfig) -> list[str]:
    special = set(features.log)
    if features.geo is not None:
        special.update(features.geo.columns)
    return [c for c in schema.numeric if c not in special]


def _geo_settings(features: FeaturesConfig, n_clusters: int | None,
                  gamma: float | None) -> tuple[int, float]:
    geo = features.geo
    if geo is None:
        if n_clusters is not None or gamma is not None:
            raise ValueError("n_clusters / gamma given but features.geo is null "
                             "(there is no geographic block to tune)")
        return 0, 0.0
    return (geo.n_clusters if n_clusters is None else int(n_clusters),
            geo.gamma if gamma is None else float(gamma))


def build_preprocessor(schema: SchemaConfig, features: FeaturesConfig, *,
                       n_clusters: int | None = None,
                       gamma: float | None = None) -> ColumnTransformer:
    """The unfitted preprocessing for ``schema``; ``n_clusters`` / ``gamma`` override
    ``features.geo`` (the tuner passes its trial's values). Blocks with no column are left
    out."""
    k, g = _geo_settings(features, n_clusters, gamma)
    ratio_inputs = _unique(c for r in features.ratios for c in (r.numerator, r.denominator))
    blocks = [("ratio", _ratio_block(features), ratio_inputs),
              ("log", _log_pipeline(), list(features.log))]
    if features.geo is not None:
        blocks.append(("geo", _geo_pipeline(k, g, features.seed), list(features.geo.columns)))
    blocks += [("cat", _cat_pipeline(), list(schema.categorical)),
               ("num", _num_pipeline(), _other_numeric(schema, features))]
    return ColumnTransformer([b for b in blocks if b[2]], remainder="drop",
                             sparse_threshold=0.0, verbose_feature_names_out=True)


def feature_names(preprocessor: ColumnTransformer) -> list[str]:
    """The fitted preprocessor's output names, in column order (``<block>__<feature>``)."""
    check_is_fitted(preprocessor)
    return [str(name) for name in preprocessor.get_feature_names_out()]
