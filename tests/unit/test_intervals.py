"""Split-conformal intervals on generated data with a known noise level: they cover the truth
as often as promised, overall and where the noise is large or small, and the difficulty
scale makes them narrow where the noise is small."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_predict

from tabreg.evaluation.metrics import coverage
from tabreg.models.intervals import (
    LOWER,
    PREDICTION,
    UPPER,
    ConformalRegressor,
    conformal_quantile,
    split_output,
)

NUMERIC, CATEGORICAL = ("x", "z"), ("kind",)


def noisy(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """y = 3x + noise whose standard deviation is 1 for kind "calm" and 6 for "wild"."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"x": rng.uniform(0, 10, n), "z": rng.normal(size=n),
                      "kind": rng.choice(["calm", "wild"], n)})
    sigma = np.where(X["kind"] == "wild", 6.0, 1.0)
    return X, 3 * X["x"].to_numpy() + rng.normal(scale=sigma), sigma


def point_model() -> LinearRegression:
    # The categorical column as a code: the point model need not know the noise.
    return LinearRegression()


@functools.cache
def fitted(scale: str, level: float = 0.9) -> tuple[ConformalRegressor, pd.DataFrame]:
    X, y, _ = noisy(4000, seed=0)
    codes = X.assign(kind=(X["kind"] == "wild").astype(float))
    model = point_model().fit(codes, y)
    oof = cross_val_predict(point_model(), codes, y, cv=5)
    wrapper = ConformalRegressor(_Coded(model), NUMERIC, CATEGORICAL, level=level, scale=scale)
    return wrapper.calibrate(X, y, oof), X


class _Coded:
    """The point model behind the raw columns (as the project's pipelines take them)."""

    def __init__(self, model):
        self.model = model

    def predict(self, X):
        return self.model.predict(X.assign(kind=(X["kind"] == "wild").astype(float)))


@pytest.mark.parametrize("scale", ["difficulty", "constant"])
def test_coverage_is_the_level_on_new_rows(scale):
    model, _ = fitted(scale)
    X, y, _ = noisy(6000, seed=1)
    out = model.predict_interval(X)
    assert list(out.columns) == [PREDICTION, LOWER, UPPER]
    assert coverage(y, out[LOWER].to_numpy(), out[UPPER].to_numpy())["coverage"] == \
        pytest.approx(0.9, abs=0.02)
    np.testing.assert_allclose(out[PREDICTION], model.predict(X))


def test_difficulty_keeps_each_kind_covered_and_narrows_the_calm_rows():
    X, y, _ = noisy(6000, seed=1)
    wild = (X["kind"] == "wild").to_numpy()
    scaled = fitted("difficulty")[0].predict_interval(X)
    constant = fitted("constant")[0].predict_interval(X)
    for rows in (wild, ~wild):
        got = coverage(y[rows], scaled[LOWER].to_numpy()[rows], scaled[UPPER].to_numpy()[rows])
        assert got["coverage"] == pytest.approx(0.9, abs=0.03)
    # One width for all misses the level on both kinds: over-covers calm rows, under wild.
    calm = coverage(y[~wild], constant[LOWER].to_numpy()[~wild],
                    constant[UPPER].to_numpy()[~wild])
    assert calm["coverage"] > 0.97
    width = (scaled[UPPER] - scaled[LOWER]).to_numpy()
    # Noise 1 vs 6: the calm rows' intervals are several times narrower.
    assert np.median(width[wild]) > 3 * np.median(width[~wild])


def test_calibration_coverage_and_a_higher_level_is_wider():
    at_90, X = fitted("constant", 0.9)
    at_95, _ = fitted("constant", 0.95)
    assert at_90.calibration_coverage_ >= 0.9 and at_90.n_calibration_ == 4000
    assert at_95.quantile_ > at_90.quantile_


def test_conformal_quantile_uses_the_finite_sample_correction():
    scores = np.arange(1.0, 10.0)  # nine scores
    assert conformal_quantile(scores, 0.8) == 8.0  # ceil(10 * 0.8) = 8th smallest
    assert conformal_quantile(scores, 0.95) == math.inf  # needs the 10th of nine
    assert conformal_quantile(np.array([]), 0.5) == math.inf


def test_calibration_refuses_mismatched_or_missing_predictions():
    model, X = fitted("constant")
    with pytest.raises(ValueError, match="one out-of-fold prediction per row"):
        model.calibrate(X, np.zeros(len(X)), np.zeros(3))
    with pytest.raises(ValueError, match="2 out-of-fold predictions are not finite"):
        model.calibrate(X, np.zeros(len(X)), np.r_[np.nan, np.inf, np.zeros(len(X) - 2)])


def test_split_output_reads_old_and_new_models():
    point, low, high = split_output(np.array([[1.0], [2.0]]))
    assert point.tolist() == [1.0, 2.0] and low is None and high is None
    frame = pd.DataFrame({PREDICTION: [1.0], LOWER: [0.5], UPPER: [1.5]})
    assert [a.tolist() for a in split_output(frame)] == [[1.0], [0.5], [1.5]]
