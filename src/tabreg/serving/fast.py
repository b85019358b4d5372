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
from dataclasses import dataclass
from typing import Any, TypeAlias

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


class Features:
    """A fitted ColumnTransformer compiled: its blocks, each (the input columns it reads, its
    step, a fingerprint of the fitted transformer).

    The members of a blend and the interval's difficulty model each have a ColumnTransformer
    of their own, but fitted on the same rows most of their blocks are equal (imputers,
    ratios, logs, scalers, encoders: only the k-means similarity differs). Given a ``cache``
    for one request, each distinct block is computed once: for the default run's champion,
    six transformers' work becomes that of one and five similarity blocks."""

    def __init__(self, blocks: list[tuple[list[str], Step | None, bytes]]) -> None:
        self.blocks = blocks

    def __call__(self, columns: Columns, cache: dict[bytes, np.ndarray] | None = None
                 ) -> np.ndarray:
        parts = []
        for names, step, key in self.blocks:
            out = cache.get(key) if cache is not None else None
            if out is None:
                X = _stack(columns, names)
                out = X.astype(np.float64) if step is None else step(X)
                if cache is not None:
                    cache[key] = out
            parts.append(out)
        return np.hstack(parts)


def _fingerprint(names: list[str], transformer: Any) -> bytes:
    """Equal for blocks that compute the same thing: the same columns through transformers
    in the same fitted state (their pickles, which hold all of it)."""
    import hashlib
    import pickle

    return hashlib.sha256(pickle.dumps((names, transformer))).digest()


def compile_columns(ct: Any) -> Features:
    """A fitted ColumnTransformer as a function of the input's columns (by name)."""
    from sklearn.compose import ColumnTransformer

    if not isinstance(ct, ColumnTransformer):
        raise NotCompiled(f"no fast path for {type(ct).__name__}")
    blocks: list[tuple[list[str], Step | None, bytes]] = []
    for _, transformer, columns in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        names = [str(c) for c in np.atleast_1d(columns)]
        if not names:
            continue
        key = _fingerprint(names, transformer)
        if isinstance(transformer, str) and transformer == "passthrough":
            blocks.append((names, None, key))
        elif isinstance(transformer, ColumnTransformer):
            inner = compile_columns(transformer)
            blocks.append((names, _nested(inner, names), key))
        else:
            blocks.append((names, compile_transformer(transformer), key))
    return Features(blocks)


def _nested(inner: Features, names: list[str]) -> Step:
    def run(X: np.ndarray) -> np.ndarray:
        return inner({name: X[:, j] for j, name in enumerate(names)})
    return run


def _stack(columns: Columns, names: list[str]) -> np.ndarray:
    arrays = [columns[n] for n in names]
    if all(a.dtype != object for a in arrays):
        return np.column_stack(arrays).astype(np.float64, copy=False)
    return np.column_stack(arrays).astype(object)


# --- models -------------------------------------------------------------------------------

#: Up to this many rows, the trees of the whole model (every member of a blend, and the
#: interval's difficulty model) are walked in one pass: a few numpy operations per tree level
#: for all of them at once, instead of a call per tree or a pass per member. Larger requests
#: take scikit-learn's per-tree loops, which are faster once there are rows to share a call.
SMALL = 64


@dataclass
class _Term:
    """One fitted model inside the whole: its share of an output (``slot`` 0: the prediction,
    1: the interval's difficulty) and the compiled features it reads."""

    slot: int
    weight: float
    features: Features
    model: Any


def _terms(est: Any, slot: int, weight: float = 1.0) -> list[_Term]:
    """The model as a weighted sum of feature-pipeline + regressor terms."""
    from sklearn.ensemble import VotingRegressor
    from sklearn.pipeline import Pipeline

    if isinstance(est, VotingRegressor):
        # VotingRegressor: np.average of the members' predictions, i.e. sum(w_i p_i) / sum(w).
        weights = np.asarray(est.weights if est.weights is not None
                             else np.ones(len(est.estimators_)), dtype=np.float64)
        return [term for member, w in zip(est.estimators_, weights / weights.sum(), strict=True)
                for term in _terms(member, slot, weight * float(w))]
    if isinstance(est, Pipeline) and len(est.steps) == 2:
        return [_Term(slot, weight, compile_columns(est.steps[0][1]), est.steps[1][1])]
    raise NotCompiled(f"no fast path for {type(est).__name__}")


def _model_predict(model: Any) -> Step:
    """A regressor's prediction on its feature matrix, for requests over :data:`SMALL` rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    from tabreg.models.mlp import TorchMLPRegressor

    if isinstance(model, RandomForestRegressor) and model.n_outputs_ == 1:
        trees = [t.tree_ for t in model.estimators_]

        def forest(X: np.ndarray) -> np.ndarray:
            # The trees' own loops, without the threads a forest starts for every call.
            X32 = np.ascontiguousarray(X, dtype=np.float32)  # as the trees compare
            total = np.zeros(X32.shape[0], dtype=np.float64)
            for tree in trees:  # as sklearn accumulates: the trees in order, then / n
                total += tree.predict(X32)[:, 0]
            return total / len(trees)
        return forest
    if isinstance(model, HistGradientBoostingRegressor | TorchMLPRegressor):
        return model.predict  # on a matrix: no column selection, one validation
    raise NotCompiled(f"no fast path for {type(model).__name__}")


def _forest_parts(model: Any) -> tuple[list[dict[str, np.ndarray]], int] | None:
    """A single-output forest's trees (each leaf's value already divided by their number),
    and its depth; None for other models."""
    from sklearn.ensemble import RandomForestRegressor

    if not (isinstance(model, RandomForestRegressor) and model.n_outputs_ == 1):
        return None
    parts = []
    for estimator in model.estimators_:
        t = estimator.tree_
        missing = getattr(t, "missing_go_to_left", np.zeros(t.node_count, dtype=np.uint8))
        parts.append({"feature": t.feature, "threshold": t.threshold,
                      "left": t.children_left, "right": t.children_right,
                      "missing_left": missing, "leaf": t.children_left == -1,
                      "value": t.value[:, 0, 0] / len(model.estimators_)})
    return parts, max(e.tree_.max_depth for e in model.estimators_)


def _boosting_parts(model: Any) -> tuple[list[dict[str, np.ndarray]], int, float] | None:
    """The trees of an identity-link gradient boosting, their depth and the baseline; None
    for other models (categorical splits included: those keep their own ``predict``)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if not (isinstance(model, HistGradientBoostingRegressor)
            and model.n_trees_per_iteration_ == 1
            and model._loss.link.__class__.__name__ == "IdentityLink"):
        return None
    parts = []
    for predictors in model._predictors:
        for predictor in predictors:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                return None
            parts.append({"feature": nodes["feature_idx"], "threshold": nodes["num_threshold"],
                          "left": nodes["left"], "right": nodes["right"],
                          "missing_left": nodes["missing_go_to_left"],
                          "leaf": nodes["is_leaf"].astype(bool), "value": nodes["value"]})
    depth = max(int(p.nodes["depth"].max()) for ps in model._predictors for p in ps)
    return parts, depth, float(np.ravel(model._baseline_prediction)[0])


class TreeWalk:
    """Every node of every tree of the model in one table, walked level by level for all
    trees and rows at once.

    A node is one row of four integers (feature, threshold's bits, left child, right
    child), so that a level fetches each tree's node with one gather: about six numpy
    operations per level. A leaf is its own child whichever way a value goes (threshold
    +inf), so a level needs no test for leaves, and a tree that did not move has reached
    one: every few levels those leave the walk. One row through the default run's champion
    (five members and the difficulty model: 3,967 trees, up to 52 levels deep) takes about a
    millisecond; a walk per member took about four, and scikit-learn's call per tree 39 ms
    for eight rows."""

    #: Trees at a leaf leave the walk every this many levels.
    EVERY = 6

    def __init__(self, groups: list[tuple[list[dict[str, np.ndarray]], int, int]],
                 slots: int, depth: int) -> None:
        """``groups``: (per-tree node arrays with node ids local to each tree, the group's
        first column in the combined feature matrix, its output slot); ``depth``: the most
        edges from a root to a leaf."""
        parts = [(p, offset, slot) for trees, offset, slot in groups for p in trees]
        sizes = np.array([len(p["value"]) for p, _, _ in parts], dtype=np.intp)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)

        def joined(key: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(p[key], dtype=dtype) for p, _, _ in parts])

        leaf = joined("leaf", bool)
        ids = np.arange(leaf.size, dtype=np.int64)
        shift = np.repeat(starts, sizes)
        feature = np.concatenate([np.asarray(p["feature"], dtype=np.int64) + offset
                                  for p, offset, _ in parts])
        self.nodes = np.empty((leaf.size, 4), dtype=np.int64)
        self.nodes[:, 0] = np.where(leaf, 0, feature)
        self.nodes[:, 1] = np.where(leaf, np.inf, joined("threshold", np.float64)
                                    ).view(np.int64)
        self.nodes[:, 2] = np.where(leaf, ids, joined("left", np.int64) + shift)
        self.nodes[:, 3] = np.where(leaf, ids, joined("right", np.int64) + shift)
        # A missing value goes right where the tree learnt so; at a leaf it stays there.
        self.missing_right = ~(joined("missing_left", bool) | leaf)
        self.value = joined("value", np.float64)
        self.roots = starts
        slot = np.array([slot for _, _, slot in parts], dtype=np.intp)
        self.by_slot = [np.flatnonzero(slot == s) for s in range(slots)]
        self.depth = depth  # a bound on the levels: the walk usually leaves earlier

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Each slot's sum of the leaf values the rows reach: (rows, slots)."""
        rows, trees = X.shape[0], self.roots.size
        flat = np.ascontiguousarray(X, dtype=np.float64).ravel()
        nan = bool(np.isnan(flat).any())
        one = rows == 1  # one row: a node's feature is its place in ``flat``
        base = np.repeat(np.arange(rows, dtype=np.int64) * X.shape[1], trees)
        node = np.tile(self.roots, rows).astype(np.int64)
        where = np.arange(node.size)  # the walking trees' places in ``final``
        final = node.copy()
        for level in range(1, self.depth + 1):
            at = np.take(self.nodes, node, axis=0)
            x = flat[at[:, 0] if one else base + at[:, 0]]
            right = x > at[:, 1].view(np.float64)
            if nan:
                right |= np.isnan(x) & self.missing_right[node]
            moved = np.where(right, at[:, 3], at[:, 2])
            if level % self.EVERY == 0:
                going = moved != node
                final[where] = moved
                if not going.any():
                    break
                node, base, where = moved[going], base[going], where[going]
            else:
                node = moved
        else:
            final[where] = node
        leaves = self.value[final].reshape(rows, trees)
        out = np.zeros((rows, len(self.by_slot)))
        for slot, trees_of_slot in enumerate(self.by_slot):
            out[:, slot] = leaves[:, trees_of_slot].sum(axis=1)
        return out


def _compile_terms(terms: list[_Term], slots: int) -> Callable[[Columns], np.ndarray]:
    """The weighted sum of the terms per slot, as a function of the input's columns:
    (rows, slots)."""
    predicts = [(term, _model_predict(term.model)) for term in terms]
    groups, walked, others = [], [], []
    constant, offset, depth = np.zeros(slots), 0, 0
    for term, predict in predicts:
        forest, boosting = _forest_parts(term.model), _boosting_parts(term.model)
        if forest is not None:
            trees, deepest = forest
        elif boosting is not None:
            trees, deepest, baseline = boosting
            constant[term.slot] += term.weight * baseline
        else:
            others.append((term, predict))
            continue
        groups.append(([{**p, "value": p["value"] * term.weight} for p in trees], offset,
                       term.slot))
        walked.append((term, forest is not None))
        offset, depth = offset + int(term.model.n_features_in_), max(depth, deepest)
    walk = TreeWalk(groups, slots, depth) if groups else None

    def small(columns: Columns) -> np.ndarray:
        cache: dict[bytes, np.ndarray] = {}
        blocks = [term.features(columns, cache) for term, _ in walked]
        # A forest compares its input in float32, as scikit-learn's trees do.
        blocks = [X.astype(np.float32).astype(np.float64) if float32 else X
                  for X, (_, float32) in zip(blocks, walked, strict=True)]
        out = walk(np.hstack(blocks)) if walk else np.zeros((_rows(columns), slots))
        out += constant
        for term, predict in others:
            out[:, term.slot] += term.weight * predict(term.features(columns, cache))
        return out

    def large(columns: Columns) -> np.ndarray:
        out = np.zeros((_rows(columns), slots))
        cache: dict[bytes, np.ndarray] = {}
        for term, predict in predicts:
            out[:, term.slot] += term.weight * predict(term.features(columns, cache))
        return out

    return lambda columns: small(columns) if _rows(columns) <= SMALL else large(columns)


def _rows(columns: Columns) -> int:
    return len(next(iter(columns.values())))


def compile_estimator(est: Any) -> Callable[[Columns], np.ndarray]:
    """A fitted regressor of the kinds the project builds, as a function of the input's
    columns, returning one prediction per row."""
    run = _compile_terms(_terms(est, 0), 1)
    return lambda columns: run(columns)[:, 0]


# --- the whole model ------------------------------------------------------------------------

Scored = tuple[np.ndarray, Any, Any]
#: Requests of at least this many rows are scored in parts, one per thread: the trees' loops
#: (scikit-learn's Cython) release the GIL, so on two idle cores the default blend answers
#: 1,000 rows in 49 ms instead of 77. Not by default (``serve.request_threads: 1``): beside
#: a process that keeps one of two cores busy it took 90 ms instead of 55, as both parts wait
#: for the slower core, and finer parts cost more than they win (each walks the forest's 186
#: MB of nodes again). A small request is not worth the hand-over between threads.
SPLIT = 256


#: The input of a compiled model: the checked frame, or its columns as arrays (as
#: :func:`_columns` gives them; the input check builds them for a small request).
Input: TypeAlias = pd.DataFrame | Columns


def compile_model(model: Any, threads: int = 1) -> Callable[[Input], Scored]:
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

    def in_parts(frame: Input) -> Scored:
        if isinstance(frame, dict) or len(frame) < SPLIT:
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


def _compile_whole(model: Any) -> Callable[[Input], Scored]:
    from tabreg.models.intervals import ConformalRegressor

    if isinstance(model, ConformalRegressor):
        quantile, floor = float(model.quantile_), float(model.floor_)
        terms = _terms(model.estimator, 0)
        if model.difficulty_ is not None:
            terms += _terms(model.difficulty_, 1)
        run = _compile_terms(terms, 2)
        spread = model.difficulty_ is not None

        def with_interval(frame: Input) -> tuple[np.ndarray, Any, Any]:
            out = run(_columns(frame))
            pred = out[:, 0]
            scale = np.maximum(out[:, 1], floor) if spread else np.ones_like(pred)
            half = quantile * scale
            return pred, pred - half, pred + half
        return with_interval
    point = compile_estimator(model)
    return lambda frame: (point(_columns(frame)), None, None)


def _columns(frame: Input) -> Columns:
    """The frame's columns as arrays: numbers as float64, text as objects (NaN where
    missing); columns given as arrays already are taken as they are."""
    if isinstance(frame, dict):
        return frame
    out: Columns = {}
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind in "biuf":
            out[str(name)] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            array = values.to_numpy(dtype=object)
            out[str(name)] = np.where(pd.isna(array), np.nan, array).astype(object)
    return out
