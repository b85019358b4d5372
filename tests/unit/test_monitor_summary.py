"""What ``make monitor`` concludes from a window of traffic: ``ok`` on traffic like the
training data, ``act`` on injected drift or on a live RMSE above the champion's test
interval, ``warn`` in between, and nothing to monitor in an empty window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabreg.config import load_config
from tabreg.data import synthetic
from tabreg.monitoring.summary import Champion, flag_shares, summarize, to_label
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
TARGET = CONFIG.schema.target
FEATURES = list(CONFIG.schema.features)
CHAMPION = Champion("3", rmse=40_000.0, rmse_low=38_000.0, rmse_high=42_000.0, level=0.9)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return synthetic.generate(4000, seed=1)


def window(rows: pd.DataFrame, noise: float, labelled: bool = True, seed: int = 0
           ) -> pd.DataFrame:
    """Logged rows: the prediction is the truth plus noise of standard deviation ``noise``,
    with a 90% interval for that noise."""
    rng = np.random.default_rng(seed)
    truth = rows[TARGET].to_numpy(dtype=float)
    pred = truth + rng.normal(scale=noise, size=len(rows))
    log = rows[FEATURES].reset_index(drop=True).assign(
        request_id=[f"q{i}" for i in range(len(rows))], row=0,
        time=pd.Timestamp("2026-11-30", tz="UTC"), model_version="3", prediction=pred,
        lower=pred - 1.645 * noise, upper=pred + 1.645 * noise, flags="")
    if labelled:
        log[TARGET] = truth
    return log


def reference_predictions(reference: pd.DataFrame) -> np.ndarray:
    return reference[TARGET].to_numpy(dtype=float)


def test_traffic_like_the_training_data_is_ok(reference):
    got = summarize(window(synthetic.generate(1500, seed=2), 40_000), reference[FEATURES],
                    reference_predictions(reference), CHAMPION, CONFIG)
    assert got["verdict"] == "ok", got["reasons"]
    assert got["input_drift"]["level"] == "none" and got["live"]["rows"] == 1500
    assert got["live"]["interval_coverage"] == pytest.approx(0.9, abs=0.03)
    assert got["rows"] == got["requests"] == 1500 and got["versions"] == ["3"]


def test_injected_drift_says_act(reference):
    drifted = synthetic.generate(1500, seed=3)
    drifted["median_income"] *= 1.8  # a richer population than the model learnt from
    got = summarize(window(drifted, 40_000, labelled=False), reference[FEATURES],
                    reference_predictions(reference), CHAMPION, CONFIG)
    assert got["verdict"] == "act"
    assert got["input_drift"]["worst_feature"] == "median_income"
    assert got["reasons"][0].startswith("major input drift: median_income")


def test_a_live_rmse_above_the_test_interval_says_act_and_a_slightly_worse_one_warns(
        reference):
    rows = synthetic.generate(1500, seed=2)
    worse = summarize(window(rows, 55_000), reference[FEATURES],
                      reference_predictions(reference), CHAMPION, CONFIG)
    assert worse["verdict"] == "act" and "above the champion's test interval" in \
        worse["reasons"][0]
    assert worse["live"]["slices"] and {"coverage", "rmse"} <= set(worse["live"]["slices"][0])
    many = synthetic.generate(6000, seed=4)
    slightly = summarize(window(many, 41_500, seed=1), reference[FEATURES],
                         reference_predictions(reference), CHAMPION, CONFIG)
    assert slightly["verdict"] == "warn", slightly["reasons"]
    assert slightly["live"]["rmse_low"] > CHAMPION.rmse > slightly["live"]["rmse_low"] - 2000
    # Above the test RMSE by chance alone (its interval reaches below it): not a warning.
    chance = summarize(window(rows, 40_300, seed=1), reference[FEATURES],
                       reference_predictions(reference), CHAMPION, CONFIG)
    assert chance["live"]["rmse"] > CHAMPION.rmse > chance["live"]["rmse_low"]
    assert chance["verdict"] == "ok", chance["reasons"]


def test_few_labels_are_shown_not_judged_and_an_empty_window_is_ok(reference):
    got = summarize(window(synthetic.generate(40, seed=2), 90_000), reference[FEATURES],
                    reference_predictions(reference), CHAMPION, CONFIG)
    assert got["live"]["rows"] == 40 and "not judged" in got["reasons"][-1]
    empty = summarize(window(synthetic.generate(5, seed=2), 1.0).head(0), reference[FEATURES],
                      reference_predictions(reference), CHAMPION, CONFIG)
    assert empty == {"rows": 0, "verdict": "ok",
                     "reasons": ["nothing to monitor: the window has no scored rows"]}


def test_flags_and_the_rows_to_label():
    assert flag_shares(pd.Series(["", "missing:a", "missing:a;unknown_category:b", None])) == {
        "any": 0.5, "by_flag": {"missing:a": 0.5, "unknown_category:b": 0.25}}
    log = window(synthetic.generate(50, seed=2), 1000.0, labelled=False)
    log["upper"] += np.arange(50)  # row 49 is the least sure
    picked = to_label(log, TARGET, 5)
    assert len(picked) == 5 and picked.index[0] == 49
    assert picked["interval_width"].is_monotonic_decreasing
