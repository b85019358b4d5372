"""Features: the book's preprocessing as one ColumnTransformer driven by params.yaml.

The custom transformers honour sklearn's estimator contract; the preprocessor gives the book's
24 features, learns every statistic from the frame it is fitted on (train) only, ignores
extra columns and column order, never outputs NaN, and clones and pickles."""

import pickle
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from tabreg.config import BATCH, ROW_ID, FeaturesConfig, GeoConfig, load_config
from tabreg.config import Ratio as RatioConfig
from tabreg.data import synthetic
from tabreg.models.features import (
    ClusterSimilarity,
    Ratio,
    build_preprocessor,
    feature_names,
    ratio_transformer,
)
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
SCHEMA, FEATURES = CONFIG.schema, CONFIG.features
N_TRAIN = 2400
CATEGORIES = ("<1H OCEAN", "INLAND", "ISLAND", "NEAR BAY", "NEAR OCEAN")

EXPECTED_NAMES = (
    ["ratio__bedrooms_ratio", "ratio__rooms_per_house", "ratio__people_per_house"]
    + [f"log__{c}" for c in ("total_bedrooms", "total_rooms", "population", "households",
                             "median_income")]
    + [f"geo__cluster_{i}_similarity" for i in range(10)]
    + [f"cat__ocean_proximity_{c}" for c in CATEGORIES]
    + ["num__housing_median_age"]
)

# --- sklearn's estimator contract -----------------------------------------------------------

# Same reason as sklearn's own expected failure for KMeans.
KMEANS_WEIGHTS = "k-means: sample_weight is not equivalent to removing/repeating samples"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([ClusterSimilarity()], expected_failed_checks=lambda _: {
    "check_sample_weight_equivalence_on_dense_data": KMEANS_WEIGHTS,
    "check_sample_weight_equivalence_on_sparse_data": KMEANS_WEIGHTS})
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- the ratio and the cluster similarity ---------------------------------------------------

def two_columns(rows: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 10.0, size=(rows, 2))


def test_ratio_divides_first_column_by_second_and_names_its_output():
    X = pd.DataFrame({"a": [1.0, 6.0, 5.0], "b": [2.0, 3.0, 0.5]})
    ratio = ratio_transformer("a_per_b").fit(X)
    np.testing.assert_allclose(ratio.transform(X), [[0.5], [2.0], [10.0]])
    assert list(ratio.feature_names_in_) == ["a", "b"]
    assert list(ratio.get_feature_names_out()) == ["a_per_b"]


def test_ratio_outputs_nan_where_it_is_not_finite():
    X = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 2.0], [3.0, 2.0], [-1.0, 0.0]])
    out = ratio_transformer("r").fit(X).transform(X)
    assert out.dtype == np.float64
    assert np.isnan(out[[0, 1, 2, 4], 0]).all()
    assert out[3, 0] == 1.5


@pytest.mark.parametrize("n_columns", [1, 3])
def test_ratio_rejects_anything_but_two_columns(n_columns):
    with pytest.raises(ValueError, match="exactly 2 features"):
        ratio_transformer("r").fit_transform(np.ones((5, n_columns)))


def test_ratio_keeps_order_subsets_dtypes_and_survives_pickle_and_clone():
    X = two_columns()
    ratio = ratio_transformer("r").fit(X)
    expected = X[:, [0]] / X[:, [1]]
    for dtype in (np.float32, np.int64):
        np.testing.assert_allclose(ratio.transform(X.astype(dtype)),
                                   X.astype(dtype)[:, [0]] / X.astype(dtype)[:, [1]])
    perm = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_array_equal(ratio.transform(X[perm]), ratio.transform(X)[perm])
    np.testing.assert_array_equal(ratio.transform(X[:7]), expected[:7])
    restored = pickle.loads(pickle.dumps(ratio))
    np.testing.assert_array_equal(restored.transform(X), expected)
    assert list(restored.get_feature_names_out()) == ["r"]
    np.testing.assert_array_equal(clone(ratio).fit_transform(X), expected)


def test_the_former_ratio_class_still_predicts_as_the_new_transformer():
    """Models registered before the switch hold the class; they must predict the same."""
    X = np.vstack([two_columns(), [[1.0, 0.0], [np.nan, 2.0]]])
    old = Ratio("r").fit(X).transform(X)
    np.testing.assert_array_equal(old, ratio_transformer("r").fit_transform(X))


def test_cluster_similarity_is_seeded_named_and_bounded():
    X = np.random.default_rng(0).normal(size=(200, 2))
    a = ClusterSimilarity(n_clusters=4, gamma=0.5, random_state=3).fit(X)
    b = ClusterSimilarity(n_clusters=4, gamma=0.5, random_state=3).fit(X)
    out = a.transform(X)
    assert out.shape == (200, 4)
    assert ((out > 0) & (out <= 1)).all()
    np.testing.assert_array_equal(out, b.transform(X))
    assert a.kmeans_.n_init == 10
    assert list(a.get_feature_names_out()) == [f"cluster_{i}_similarity" for i in range(4)]


def test_cluster_similarity_keeps_dataframe_column_names():
    frame = synthetic.generate(300)[["latitude", "longitude"]]
    sim = ClusterSimilarity(n_clusters=3, random_state=0).fit(frame)
    assert list(sim.feature_names_in_) == ["latitude", "longitude"]
    with pytest.raises(ValueError, match="feature names"):
        sim.transform(frame[["longitude", "latitude"]])


# --- the preprocessor -----------------------------------------------------------------------
# Fits are the slow part (k-means, n_init=10): tests share ``pre``, fitted once on ``train``,
# and only read it.

@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return synthetic.generate(3000)


@pytest.fixture(scope="module")
def train(frame) -> pd.DataFrame:
    return frame.iloc[:N_TRAIN]


@pytest.fixture(scope="module")
def held_out(frame) -> pd.DataFrame:
    return frame.iloc[N_TRAIN:]


def fitted(data: pd.DataFrame, features: FeaturesConfig = FEATURES, **overrides):
    return build_preprocessor(SCHEMA, features, **overrides).fit(data)


@pytest.fixture(scope="module")
def pre(train):
    return fitted(train)


def blocks(preprocessor) -> dict:
    """The blocks of an unfitted preprocessor, by name."""
    return {name: block for name, block, _ in preprocessor.transformers}


def test_project_params_give_the_books_24_named_features(frame):
    preprocessor = build_preprocessor(SCHEMA, FEATURES, n_clusters=10)
    out = preprocessor.fit_transform(frame)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert out.shape == (3000, 24)
    assert np.isfinite(out).all()
    names = feature_names(preprocessor)
    assert len(names) == out.shape[1] == len(set(names))
    assert names == EXPECTED_NAMES
    assert all(re.fullmatch(r"(ratio|log|geo|cat|num)__[\w <>]+", n) for n in names)
    assert names == list(preprocessor.get_feature_names_out())


def test_names_do_not_depend_on_the_data(pre):
    assert feature_names(pre) == EXPECTED_NAMES
    with pytest.raises(NotFittedError):
        feature_names(build_preprocessor(SCHEMA, FEATURES))


def test_no_nan_out_when_any_numeric_or_categorical_input_is_missing(train, held_out, pre):
    rng = np.random.default_rng(0)
    holes, holes_train = held_out.copy(), train.copy()
    for column in SCHEMA.features:
        holes.loc[holes.index[rng.random(len(holes)) < 0.1], column] = np.nan
        holes_train.loc[holes_train.index[rng.random(len(holes_train)) < 0.05], column] = np.nan
    holes.iloc[0, :] = np.nan  # a row with nothing at all
    for preprocessor in (pre, fitted(holes_train)):
        out = preprocessor.transform(holes)
        assert out.shape == (len(held_out), 24)
        assert np.isfinite(out).all()


def test_unseen_category_encodes_as_all_zeros(held_out, pre):
    odd = held_out.copy()
    odd.iloc[0, odd.columns.get_loc("ocean_proximity")] = "MARS"
    out = pre.transform(odd)
    cat = [i for i, n in enumerate(feature_names(pre)) if n.startswith("cat__")]
    assert (out[0, cat] == 0).all()
    assert (out[1:, cat].sum(axis=1) == 1).all()


def test_statistics_come_from_the_train_frame_alone(train, held_out, pre):
    before = pre.transform(held_out)
    num = pre.named_transformers_["num"]
    age = train["housing_median_age"]
    assert num["impute"].statistics_[0] == age.median()
    np.testing.assert_allclose(num["scale"].mean_, [age.mean()])
    assert num["scale"].mean_[0] != pytest.approx(held_out["housing_median_age"].mean())
    logged = train[list(FEATURES.log)]
    log = pre.named_transformers_["log"]
    np.testing.assert_allclose(log["impute"].statistics_, logged.median())
    np.testing.assert_allclose(log["scale"].mean_, np.log(logged.fillna(logged.median())).mean())
    bedrooms = pre.named_transformers_["ratio"].named_transformers_["bedrooms_ratio"]
    np.testing.assert_allclose(bedrooms["impute"].statistics_,
                               train[["total_bedrooms", "total_rooms"]].median())
    # transforming other data (even train and test together) refits nothing
    pre.transform(pd.concat([train, held_out]))
    np.testing.assert_array_equal(pre.transform(held_out), before)


def test_n_clusters_and_gamma_overrides_take_effect(train, held_out, pre):
    small = fitted(train, n_clusters=4)
    assert [n for n in feature_names(small) if n.startswith("geo__")] == [
        f"geo__cluster_{i}_similarity" for i in range(4)]
    assert small.transform(held_out).shape == (len(held_out), 24 - 10 + 4)
    similarity = blocks(build_preprocessor(SCHEMA, FEATURES, gamma=5.0))["geo"]["similarity"]
    assert (similarity.n_clusters, similarity.gamma) == (10, 5.0)
    assert similarity.random_state == FEATURES.seed
    sharp = fitted(train, gamma=5.0)
    geo = slice(8, 18)
    # same seed and data, same centres: only the kernel width differs
    np.testing.assert_array_equal(sharp.transform(held_out)[:, :8], pre.transform(held_out)[:, :8])
    assert not np.allclose(sharp.transform(held_out)[:, geo], pre.transform(held_out)[:, geo])


def test_geo_settings_come_from_the_config():
    features = FEATURES.model_copy(update={"geo": GeoConfig(n_clusters=3, gamma=0.25)})
    similarity = blocks(build_preprocessor(SCHEMA, features))["geo"]["similarity"]
    assert (similarity.n_clusters, similarity.gamma) == (3, 0.25)


def test_without_geo_the_coordinates_are_plain_numbers(train, held_out):
    features = FEATURES.model_copy(update={"geo": None})
    preprocessor = fitted(train, features)
    names = feature_names(preprocessor)
    assert not any(n.startswith("geo__") for n in names)
    assert names[-3:] == ["num__longitude", "num__latitude", "num__housing_median_age"]
    assert preprocessor.transform(held_out).shape == (len(held_out), 3 + 5 + 5 + 3)
    with pytest.raises(ValueError, match="features.geo is null"):
        build_preprocessor(SCHEMA, features, n_clusters=5)


def test_empty_ratios_and_logs(train, held_out):
    no_ratio_log = FeaturesConfig(ratios=(), log=(), geo=GeoConfig())
    names = feature_names(fitted(train, no_ratio_log))
    assert len(names) == 10 + 5 + 6
    assert not any(n.startswith(("ratio__", "log__")) for n in names)
    # nothing configured, nothing housing-specific: no ratio, log or geographic block
    assert FeaturesConfig() == FeaturesConfig(ratios=(), log=(), geo=None)
    bare = fitted(train, FeaturesConfig())
    out = bare.transform(held_out)
    assert feature_names(bare) == ([f"cat__ocean_proximity_{c}" for c in CATEGORIES]
                                   + [f"num__{c}" for c in SCHEMA.numeric])
    assert out.shape == (len(held_out), 5 + 8) and np.isfinite(out).all()


def test_clone_and_pickle_round_trips_transform_identically(train, held_out, pre):
    cloudpickle = pytest.importorskip("cloudpickle")
    expected = pre.transform(held_out)
    np.testing.assert_array_equal(clone(pre).fit(train).transform(held_out), expected)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        np.testing.assert_array_equal(pickle.loads(dumps(pre)).transform(held_out), expected)
        unfitted = pickle.loads(dumps(build_preprocessor(SCHEMA, FEATURES)))
        assert repr(unfitted) == repr(build_preprocessor(SCHEMA, FEATURES))


def test_extra_columns_and_column_order_do_not_matter(train, held_out, pre):
    def decorate(data: pd.DataFrame) -> pd.DataFrame:
        extra = data.assign(**{ROW_ID: [f"id{i}" for i in range(len(data))], BATCH: "b.csv",
                               "notes": "anything"})
        columns = list(extra.columns)
        np.random.default_rng(len(data)).shuffle(columns)
        return extra[columns]

    expected = pre.transform(held_out)
    assert list(decorate(held_out).columns) != list(held_out.columns)
    np.testing.assert_array_equal(pre.transform(decorate(held_out)), expected)
    np.testing.assert_array_equal(pre.transform(held_out.drop(columns=[SCHEMA.target])), expected)
    np.testing.assert_array_equal(fitted(decorate(train)).transform(held_out), expected)


def _imputed_then_scaled(pipeline, column: int = 0) -> float:
    """What a value replaced by the pipeline's ``fill`` median comes out as."""
    scale = pipeline["scale"]
    return (pipeline["fill"].statistics_[column] - scale.mean_[column]) / scale.scale_[column]


def test_zero_denominator_gets_the_train_median_ratio(held_out, pre):
    """Real data has no zero denominators; a stray one must neither crash nor leak inf/NaN."""
    zero = held_out.copy()
    zero.iloc[0, zero.columns.get_loc("total_rooms")] = 0.0
    zero.iloc[1, zero.columns.get_loc("households")] = 0.0
    out = pre.transform(zero)
    assert np.isfinite(out).all()
    names = feature_names(pre)
    ratios = pre.named_transformers_["ratio"].named_transformers_
    for row, name in ((0, "bedrooms_ratio"), (1, "rooms_per_house"), (1, "people_per_house")):
        assert out[row, names.index(f"ratio__{name}")] == pytest.approx(
            _imputed_then_scaled(ratios[name]))
    # log(0) is treated the same way: the train median of the log
    households = list(FEATURES.log).index("households")
    assert out[1, names.index("log__households")] == pytest.approx(
        _imputed_then_scaled(pre.named_transformers_["log"], households))


def test_zero_denominators_in_train_do_not_skew_the_ratio_statistics(train):
    zero = train.copy()
    zero.iloc[:10, zero.columns.get_loc("total_rooms")] = 0.0
    preprocessor = fitted(zero, FEATURES.model_copy(update={"geo": None}))
    step = preprocessor.named_transformers_["ratio"].named_transformers_["bedrooms_ratio"]
    bedrooms = zero["total_bedrooms"].fillna(zero["total_bedrooms"].median())
    assert step["fill"].statistics_[0] == pytest.approx((bedrooms / zero["total_rooms"])
                                                        .iloc[10:].median())
    assert np.isfinite(step["scale"].mean_).all()


def test_a_ratio_entry_is_one_feature_named_after_it(train):
    features = FeaturesConfig(ratios=(RatioConfig(name="income_per_room",
                                                  numerator="median_income",
                                                  denominator="total_rooms"),),
                              log=(), geo=None)
    names = feature_names(fitted(train, features))
    assert names[0] == "ratio__income_per_room" and len(names) == 1 + 5 + 8


def test_models_pickled_under_the_former_module_name_still_load():
    """Champions registered before the transformers moved to tabreg.models.features name
    tabreg.features in their pickles; they must still load, or serving and the gate break."""
    import pickle

    from tabreg.data import synthetic

    frame = synthetic.generate(300, seed=5)
    pre = build_preprocessor(CONFIG.schema, CONFIG.features).fit(frame)
    old = pickle.dumps(pre, protocol=0).replace(b"tabreg.models.features", b"tabreg.features")
    assert b"ctabreg.features\nClusterSimilarity" in old and b"tabreg.models" not in old
    loaded = pickle.loads(old)
    np.testing.assert_allclose(loaded.transform(frame), pre.transform(frame))
