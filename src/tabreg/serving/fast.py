"""The serving fast path: the fitted model's inference as plain numpy, for small requests.

scikit-learn spends most of a one-row prediction on fixed costs, not arithmetic: every
transformer re-validates its input, the column transformer selects and stacks columns
through pandas, a forest starts threads, and a blend recomputes its members' features. On the
default blend one row took about 80 ms that way, of which the trees' own arithmetic is well
under one. :func:`compile_model` reads the fitted objects once (imputers' statistics, scalers'
means, k-means centres, encoders' categories, the trees) and returns a function of the
checked input frame that does only the arithmetic, with the same numbers: a test holds it to
the registered pyfunc model within 1e-6 relative on the whole test split.

Only the steps the project builds are compiled (its ColumnTransformer blocks, imputers,
scalers, the ratio and log functions, the k-means similarity, one-hot and ordinal encoders,
random forests, gradient boosting, the MLP, a blend, the interval). Anything else raises
:class:`NotCompiled`, and the server then keeps the plain path for that model: slower, never
different. Why hand-written rather than ONNX: skl2onnx would need converters for the
project's own transformers and torch's exporter for the MLP, its float32 trees agreed only to
9.6e-7 relative (the bound is 1e-6), and on the default blend's forest ONNX Runtime was slower
than scikit-learn's tree loops (84 ms per 1,000 rows against 58, after an 18 s conversion to
a 115 MB graph).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

#: A compiled step: the input frame's columns as arrays (by name) to a 2-D float matrix.
Columns = dict[str, np.ndarray]
Step = Callable[[np.ndarray], np.ndarray]


class NotCompiled(Exception):
    """The model holds a step the fast path does not know: serve it the plain way."""


# --- transformers -----------------------------------------------------------------------

def _impute(stats: np.ndarray) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        missing = _isnan(X)
        if not missing.any():
            return X
        X = X.copy()
        X[missing] = np.broadcast_to(stats, X.shape)[missing]
        return X
    return run


def _isnan(X: np.ndarray) -> np.ndarray:
    if X.dtype == object:
        return pd.isna(X)
    return np.isnan(X)


def _scale(mean: np.ndarray | None, scale: np.ndarray | None) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        X = X.astype(np.float64, copy=mean is None and scale is None)
        if mean is not None:
            X = X - mean
        if scale is not None:
            X = X / scale
        return X
    return run


def _onehot(categories: list[np.ndarray]) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        return np.hstack([(X[:, [j]] == cats[None, :]).astype(np.float64)
                          for j, cats in enumerate(categories)])
    return run


def _ordinal(categories: list[np.ndarray], unknown: float, missing: float) -> Step:
    lookups = [{v: float(i) for i, v in enumerate(cats)} for cats in categories]

    def run(X: np.ndarray) -> np.ndarray:
        out = np.empty(X.shape, dtype=np.float64)
        for j, lookup in enumerate(lookups):
            column = X[:, j]
            out[:, j] = [missing if pd.isna(v) else lookup.get(v, unknown) for v in column]
        return out
    return run


def _similarity(centres: np.ndarray, gamma: float) -> Step:
    cc = np.einsum("ij,ij->i", centres, centres)[None, :]

    def run(X: np.ndarray) -> np.ndarray:
        X = X.astype(np.float64)
        # As sklearn's rbf_kernel computes it: squared distances as -2x·c + ||x||² + ||c||².
        sq = -2 * (X @ centres.T)
        sq += np.einsum("ij,ij->i", X, X)[:, None]
        sq += cc
        np.maximum(sq, 0, out=sq)
        sq *= -gamma
        return np.exp(sq, sq)
    return run


def _chain(steps: list[Step]) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        for step in steps:
            X = step(X)
        return X
    return run


def compile_transformer(t: Any) -> Step:
    """A fitted transformer of the kinds the project builds, as a function of its input."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        OneHotEncoder,
        OrdinalEncoder,
        StandardScaler,
    )

    from tabreg.models.features import ClusterSimilarity, ratio, safe_log

    if isinstance(t, Pipeline):
        return _chain([compile_transformer(step) for _, step in t.steps])
    if isinstance(t, SimpleImputer) and t.strategy in ("median", "mean", "most_frequent",
                                                       "constant"):
        if not t.keep_empty_features or t.add_indicator:
            raise NotCompiled("an imputer that drops empty features or adds indicators")
        return _impute(np.asarray(t.statistics_))
    if isinstance(t, FunctionTransformer) and t.func is None:  # "passthrough", once fitted
        return lambda X: X
    if isinstance(t, FunctionTransformer) and t.func in (ratio, safe_log) and t.inverse_func \
            is None and not t.kw_args:
        func = t.func
        return lambda X: func(X)
    if isinstance(t, StandardScaler):
        return _scale(t.mean_ if t.with_mean else None, t.scale_ if t.with_std else None)
    if isinstance(t, ClusterSimilarity):
        return _similarity(np.asarray(t.kmeans_.cluster_centers_, dtype=np.float64),
                           float(t.gamma))
    if isinstance(t, OneHotEncoder) and t.handle_unknown == "ignore" and t.drop is None \
            and not getattr(t, "_infrequent_enabled", False):
        return _onehot([np.asarray(c, dtype=object) for c in t.categories_])
    if isinstance(t, OrdinalEncoder) and t.handle_unknown == "use_encoded_value":
        return _ordinal(list(t.categories_), float(t.unknown_value),
                        float(t.encoded_missing_value))
    raise NotCompiled(f"no fast path for {type(t).__name__}")


def compile_columns(ct: Any) -> Callable[[Columns], np.ndarray]:
    """A fitted ColumnTransformer as a function of the input's columns (by name)."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(ct, ColumnTransformer):
        raise NotCompiled(f"no fast path for {type(ct).__name__}")
    blocks: list[tuple[list[str], Step | None]] = []
    for _, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        names = [str(c) for c in np.atleast_1d(columns)]
        if not names:
            continue
        if isinstance(transformer, str) and transformer == "passthrough":
            blocks.append((names, None))
        elif isinstance(transformer, ColumnTransformer):
            inner = compile_columns(transformer)
            blocks.append((names, _nested(inner, names)))
        else:
            blocks.append((names, compile_transformer(transformer)))

    def run(columns: Columns) -> np.ndarray:
        parts = []
        for names, step in blocks:
            X = _stack(columns, names)
            parts.append(X.astype(np.float64) if step is None else step(X))
        return np.hstack(parts)
    return run


def _nested(inner: Callable[[Columns], np.ndarray], names: list[str]) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        return inner({name: X[:, j] for j, name in enumerate(names)})
    return run


def _stack(columns: Columns, names: list[str]) -> np.ndarray:
    arrays = [columns[n] for n in names]
    if all(a.dtype != object for a in arrays):
        return np.column_stack(arrays).astype(np.float64, copy=False)
    return np.column_stack(arrays).astype(object)


# --- models -------------------------------------------------------------------------------

def compile_estimator(est: Any) -> Callable[[Columns], np.ndarray]:
    """A fitted regressor of the kinds the project builds, as a function of the input's
    columns, returning one prediction per row."""
    from sklearn.ensemble import VotingRegressor
    from sklearn.pipeline import Pipeline

    if isinstance(est, VotingRegressor):
        members = [compile_estimator(m) for m in est.estimators_]
        weights = np.asarray(est.weights if est.weights is not None
                             else np.ones(len(members)), dtype=np.float64)

        def vote(columns: Columns) -> np.ndarray:
            # VotingRegressor: np.average of the members' predictions with the weights.
            return np.average(np.column_stack([m(columns) for m in members]), axis=1,
                              weights=weights)
        return vote
    if isinstance(est, Pipeline) and len(est.steps) == 2:
        features, model = compile_columns(est.steps[0][1]), _compile_model(est.steps[1][1])
        return lambda columns: model(features(columns))
    raise NotCompiled(f"no fast path for {type(est).__name__}")


#: Up to this many rows, tree ensembles are walked all trees at once (a few numpy operations
#: per level instead of a call per tree); larger requests take scikit-learn's per-tree loops.
SMALL = 64


class TreeTable:
    """Every node of an ensemble's trees in flat arrays, walked level by level for all the
    trees and rows at once: one row through 300 trees is some 30 numpy operations rather than
    300 calls of a few microseconds each."""

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                 right: np.ndarray, missing_left: np.ndarray, leaf: np.ndarray,
                 value: np.ndarray, roots: np.ndarray, depth: int) -> None:
        self.feature, self.threshold = feature.astype(np.intp), threshold
        self.left, self.right = left.astype(np.intp), right.astype(np.intp)
        self.missing_left, self.leaf = missing_left.astype(bool), leaf.astype(bool)
        self.value, self.roots, self.depth = value, roots.astype(np.intp), depth

    @classmethod
    def of(cls, parts: list[dict[str, np.ndarray]], depth: int) -> TreeTable:
        """From per-tree node arrays (node ids local to each tree)."""
        offsets = np.cumsum([0] + [len(p["value"]) for p in parts[:-1]])
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        shift = np.concatenate([np.full(len(p["value"]), o) for p, o in zip(parts, offsets,
                                                                              strict=True)])
        left = np.where(cat["leaf"], 0, cat["left"] + shift)
        right = np.where(cat["leaf"], 0, cat["right"] + shift)
        return cls(cat["feature"], cat["threshold"], left, right, cat["missing_left"],
                   cat["leaf"], cat["value"], offsets, depth)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """The leaf value each row reaches in each tree: (rows, trees)."""
        node = np.broadcast_to(self.roots, (X.shape[0], self.roots.size)).copy()
        rows = np.arange(X.shape[0])[:, None]
        for _ in range(self.depth):
            at_leaf = self.leaf[node]
            if at_leaf.all():
                break
            x = X[rows, self.feature[node]]
            left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(at_leaf, node, np.where(left, self.left[node], self.right[node]))
        return self.value[node]


def _forest_table(model: Any) -> TreeTable:
    parts = []
    for estimator in model.estimators_:
        t = estimator.tree_
        leaf = t.children_left == -1
        missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8))
        parts.append({"feature": np.where(leaf, 0, t.feature), "threshold": t.threshold,
                      "left": t.children_left, "right": t.children_right,
                      "missing_left": missing, "leaf": leaf, "value": t.value[:, 0, 0]})
    return TreeTable.of(parts, max(e.tree_.max_depth for e in model.estimators_) + 1)


def _boosting_table(model: Any) -> TreeTable:
    parts = []
    for predictors in model._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise NotCompiled("gradient boosting with categorical splits")
            parts.append({"feature": nodes["feature_idx"], "threshold": nodes["num_threshold"],
                          "left": nodes["left"].astype(np.int64),
                          "right": nodes["right"].astype(np.int64),
                          "missing_left": nodes["missing_go_to_left"],
                          "leaf": nodes["is_leaf"], "value": nodes["value"]})
    depth = max(int(p.nodes["depth"].max()) for ps in model._predictors for p in ps) + 1
    return TreeTable.of(parts, depth)


def _compile_model(model: Any) -> Step:
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    from tabreg.models.mlp import TorchMLPRegressor

    if isinstance(model, RandomForestRegressor) and model.n_outputs_ == 1:
        trees, table = [t.tree_ for t in model.estimators_], _forest_table(model)

        def forest(X: np.ndarray) -> np.ndarray:
            X32 = np.ascontiguousarray(X, dtype=np.float32)  # as the trees compare
            if X32.shape[0] <= SMALL:
                return table.leaves(X32.astype(np.float64)).mean(axis=1)
            total = np.zeros(X32.shape[0], dtype=np.float64)
            for tree in trees:  # as sklearn accumulates: the trees in order, then / n
                total += tree.predict(X32)[:, 0]
            return total / len(trees)
        return forest
    if isinstance(model, HistGradientBoostingRegressor) and model.n_trees_per_iteration_ == 1 \
            and model._loss.link.__class__.__name__ == "IdentityLink":
        try:
            boosting = _boosting_table(model)
        except NotCompiled:
            return model.predict
        baseline = float(np.ravel(model._baseline_prediction)[0])

        def boosted(X: np.ndarray) -> np.ndarray:
            X = np.ascontiguousarray(X, dtype=np.float64)
            if X.shape[0] > SMALL:
                return model.predict(X)
            return baseline + boosting.leaves(X).sum(axis=1)
        return boosted
    if isinstance(model, HistGradientBoostingRegressor | TorchMLPRegressor):
        return model.predict  # on a matrix: no column selection, one validation
    raise NotCompiled(f"no fast path for {type(model).__name__}")


# --- the whole model ------------------------------------------------------------------------

Scored = tuple[np.ndarray, Any, Any]
#: Requests of at least this many rows are scored in parts, one per thread: the trees' loops
#: (scikit-learn's Cython) release the GIL, so on two idle cores the default blend answers
#: 1,000 rows in 49 ms instead of 77. Not by default (``serve.request_threads: 1``): beside
#: a process that keeps one of two cores busy it took 90 ms instead of 55, as both parts wait
#: for the slower core, and finer parts cost more than they win (each walks the forest's 186
#: MB of nodes again). A small request is not worth the hand-over between threads.
SPLIT = 256


def compile_model(model: Any, threads: int = 1) -> Callable[[pd.DataFrame], Scored]:
    """A fitted model (a :class:`~tabreg.models.intervals.ConformalRegressor`, or an
    estimator without intervals) as a function of the checked input frame returning
    (prediction, lower, upper), the bounds None without intervals; a request of
    :data:`SPLIT` rows or more is shared by ``threads`` threads. Raises
    :class:`NotCompiled` when a step has no fast path."""
    run = _compile_whole(model)
    if threads <= 1:
        return run
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads, thread_name_prefix="fast-path", initializer=_one_thread)

    def in_parts(frame: pd.DataFrame) -> Scored:
        if len(frame) < SPLIT:
            return run(frame)
        cuts = np.linspace(0, len(frame), threads + 1).astype(int)
        parts = list(pool.map(run, [frame.iloc[a:b] for a, b in zip(cuts, cuts[1:],
                                                                       strict=False)]))
        lower, upper = (None if parts[0][k] is None
                        else np.concatenate([p[k] for p in parts]) for k in (1, 2))
        return np.concatenate([p[0] for p in parts]), lower, upper
    return in_parts


def _one_thread() -> None:
    """Each part's BLAS/OpenMP work on its own thread only: the parts are the parallelism."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _compile_whole(model: Any) -> Callable[[pd.DataFrame], Scored]:
    from tabreg.models.intervals import ConformalRegressor

    if isinstance(model, ConformalRegressor):
        point = compile_estimator(model.estimator)
        quantile, floor = float(model.quantile_), float(model.floor_)
        spread = (compile_estimator(model.difficulty_) if model.difficulty_ is not None
                  else None)

        def with_interval(frame: pd.DataFrame) -> tuple[np.ndarray, Any, Any]:
            columns = _columns(frame)
            pred = point(columns)
            scale = (np.maximum(spread(columns), floor) if spread is not None
                     else np.ones_like(pred))
            half = quantile * scale
            return pred, pred - half, pred + half
        return with_interval
    point = compile_estimator(model)
    return lambda frame: (point(_columns(frame)), None, None)


def _columns(frame: pd.DataFrame) -> Columns:
    """The frame's columns as arrays: numbers as float64, text as objects (None for NaN)."""
    out: Columns = {}
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind in "biuf":
            out[str(name)] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            array = values.to_numpy(dtype=object)
            out[str(name)] = np.where(pd.isna(array), np.nan, array).astype(object)
    return out
