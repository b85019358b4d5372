"""Prediction intervals with a coverage guarantee: split-conformal calibration on the
out-of-fold residuals of the training split.

The study already scores every candidate out of fold, so each training row has a prediction
from a model that never saw it: its residual is an honest sample of the error on new rows.
The ``level`` quantile of those residuals (with the ``(n + 1)`` correction) gives an interval
``prediction ± q`` that covers the truth at least ``level`` of the time on exchangeable rows,
whatever the model. With ``scale="difficulty"`` the residuals are first divided by an estimate
of each row's expected error (a small gradient boosting on the inputs, cross-fitted so that
the calibration never sees its own fit): the guarantee is the same, and intervals are narrow
where the model is sure and wide where it is not, which keeps the coverage of each slice
(cheap districts, the capped top) near the level instead of only the overall one.

The intervals travel inside the model: :class:`ConformalRegressor` wraps the fitted estimator,
``predict`` stays the point prediction (scikit-learn's contract, and what old clients read),
and ``predict_interval`` is the MLflow pyfunc output: ``prediction``, ``lower``, ``upper``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin

from tabreg.config import LOWER, PREDICTION, UPPER

OOF = "oof"  # the out-of-fold prediction column of ``paths.oof`` (the tune stage writes it)
#: A row's expected error is never taken below this share of the average one: a difficulty
#: model that predicts ~0 somewhere would otherwise give that row a zero-width interval.
FLOOR_SHARE = 0.1


def conformal_quantile(scores: np.ndarray, level: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) level)``-th smallest score (infinite
    when there are too few scores for that level: no finite interval is guaranteed)."""
    scores = np.sort(np.asarray(scores, dtype=float))
    n = scores.size
    k = math.ceil((n + 1) * level)
    if n == 0 or k > n:
        return math.inf
    return float(scores[k - 1])


def make_difficulty_model(numeric: list[str], categorical: list[str], seed: int) -> Any:
    """A small gradient boosting from the raw inputs to a row's absolute residual: shallow and
    slow-learning, since residuals are noisy and only their scale matters. Categories enter as
    their ordinal codes, split like numbers: enough for a scale, and plain numeric trees are
    what the serving fast path walks without a per-request encoder."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    encode = ColumnTransformer(
        [("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                        encoded_missing_value=-1), categorical),
         ("numeric", "passthrough", numeric)], verbose_feature_names_out=False)
    model = HistGradientBoostingRegressor(
        max_iter=100, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=100,
        categorical_features=None, early_stopping=False, random_state=seed)
    return Pipeline([("encode", encode), ("model", model)])


class ConformalRegressor(RegressorMixin, BaseEstimator):
    """A fitted regressor and its calibrated intervals (see the module docstring).

    ``estimator`` is already fitted (on the whole training split); :meth:`calibrate` learns
    only the interval from out-of-fold predictions of the same candidate on those rows.
    """

    def __init__(self, estimator: Any, numeric: tuple[str, ...] = (),
                 categorical: tuple[str, ...] = (), level: float = 0.9,
                 scale: Literal["difficulty", "constant"] = "difficulty", folds: int = 5,
                 random_state: int = 0) -> None:
        self.estimator = estimator
        self.numeric = numeric
        self.categorical = categorical
        self.level = level
        self.scale = scale
        self.folds = folds
        self.random_state = random_state

    def calibrate(self, X: pd.DataFrame, y: np.ndarray, oof: np.ndarray) -> ConformalRegressor:
        """Learn the interval from the residuals ``y - oof`` of the rows ``X``."""
        y, oof = np.asarray(y, dtype=float), np.asarray(oof, dtype=float)
        if not (len(X) == y.size == oof.size):
            raise ValueError(f"calibration needs one out-of-fold prediction per row: {len(X)} "
                             f"rows, {y.size} targets, {oof.size} predictions")
        if not np.isfinite(oof).all():
            raise ValueError(f"{int((~np.isfinite(oof)).sum())} out-of-fold predictions are "
                             "not finite")
        residual = np.abs(y - oof)
        self.floor_ = FLOOR_SHARE * float(residual.mean()) or 1e-12
        self.difficulty_ = None
        if self.scale == "difficulty":
            spread = self._cross_fitted_spread(X, residual)
            self.difficulty_ = self._new_difficulty().fit(X, residual)
        else:
            spread = np.ones_like(residual)
        self.quantile_ = conformal_quantile(residual / spread, self.level)
        self.n_calibration_ = int(y.size)
        self.calibration_coverage_ = float(np.mean(residual <= self.quantile_ * spread))
        return self

    def _new_difficulty(self) -> Any:
        return make_difficulty_model(list(self.numeric), list(self.categorical),
                                     self.random_state)

    def _cross_fitted_spread(self, X: pd.DataFrame, residual: np.ndarray) -> np.ndarray:
        """Each row's expected error from a difficulty model that did not see the row, so that
        the calibration scores are out of sample twice over."""
        from sklearn.model_selection import KFold

        spread = np.empty_like(residual)
        folds = KFold(self.folds, shuffle=True, random_state=self.random_state)
        for fit_rows, held_rows in folds.split(X):
            model = self._new_difficulty().fit(X.iloc[fit_rows], residual[fit_rows])
            spread[held_rows] = model.predict(X.iloc[held_rows])
        return np.maximum(spread, self.floor_)

    def spread(self, X: pd.DataFrame) -> np.ndarray:
        """Each row's half-width before the quantile: its expected error, or 1."""
        if self.difficulty_ is None:
            return np.ones(len(X))
        return np.maximum(self.difficulty_.predict(X), self.floor_)

    @property
    def estimators_(self) -> list[Any]:
        """The wrapped model, for code that walks ensembles (encoders, learning curves)."""
        return [self.estimator]

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict(X)

    def predict_interval(self, X: pd.DataFrame) -> pd.DataFrame:
        """``prediction``, ``lower`` and ``upper`` per row (the MLflow pyfunc output)."""
        point = np.asarray(self.predict(X), dtype=float).reshape(-1)
        half = self.quantile_ * self.spread(X)
        return pd.DataFrame({PREDICTION: point, LOWER: point - half, UPPER: point + half})


def split_output(output: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A model's output as (prediction, lower, upper): a pyfunc model with intervals returns a
    frame of the three; one registered before intervals returns the predictions alone."""
    if isinstance(output, pd.DataFrame) and PREDICTION in output.columns:
        point = output[PREDICTION].to_numpy(dtype="float64")
        if LOWER in output.columns and UPPER in output.columns:
            return (point, output[LOWER].to_numpy(dtype="float64"),
                    output[UPPER].to_numpy(dtype="float64"))
        return point, None, None
    return np.asarray(output, dtype="float64").reshape(-1), None, None
