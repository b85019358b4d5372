"""The retrain flow's own logic: drift, new-data detection, batch checks, the decision to
retrain, demonstration batches and the overlap lock."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabreg.config import DriftConfig, load_config
from tabreg.data import batches, synthetic
from tabreg.promotion import retrain as rt
from tabreg.promotion.drift import drift_report
from tests.conftest import ROOT

CONFIG = load_config(ROOT / "params.yaml", env={})
SCHEMA = CONFIG.schema
DRIFT = DriftConfig()


def _report(current: pd.DataFrame, reference: pd.DataFrame | None = None) -> dict:
    reference = synthetic.generate(4000, seed=1) if reference is None else reference
    return drift_report(reference, current, SCHEMA.numeric, SCHEMA.categorical, DRIFT)


def test_same_distribution_shows_no_drift():
    report = _report(synthetic.generate(3000, seed=2))
    assert report["level"] == "none", report["worst_feature"]
    assert report["max_psi"] < DRIFT.psi_moderate
    assert set(report["features"]) == set(SCHEMA.features)


def test_rising_incomes_are_major_drift_on_income():
    report = _report(batches.make_batch(3000, seed=2, drift=0.5))
    income = report["features"]["median_income"]
    assert report["level"] == "major" and income["level"] == "major"
    assert income["ks"] > 0.2 and income["mean_current"] > income["mean_reference"]
    assert report["features"]["latitude"]["level"] == "none"


def test_new_categories_and_missing_rates_are_reported():
    current = batches.make_batch(1000, seed=3, corrupt="new-category")
    current.loc[:299, "total_bedrooms"] = np.nan
    report = _report(current)
    ocean = report["features"]["ocean_proximity"]
    assert ocean["new_categories"] == ["LAKESIDE"] and ocean["level"] != "none"
    beds = report["features"]["total_bedrooms"]
    assert beds["missing_change"] == pytest.approx(beds["missing_current"]
                                                   - beds["missing_reference"])
    assert beds["missing_current"] >= 0.3


@pytest.mark.parametrize("kind", sorted(batches.CORRUPTIONS))
def test_each_corrupted_batch_is_rejected_by_the_contract(tmp_path: Path, kind: str):
    landing = tmp_path / "landing"
    good, bad = landing / "a-good.csv", landing / f"b-{kind}.csv"
    synthetic.write_csv(batches.make_batch(300, seed=4), good)
    synthetic.write_csv(batches.make_batch(300, seed=5, corrupt=kind), bad)
    checked = rt.check_batches(CONFIG, ROOT, [good, bad])
    assert list(checked.accepted) == [good.name] and len(checked.accepted[good.name]) == 300
    assert list(checked.rejected) == [bad.name]
    where = rt.quarantine(CONFIG.model_copy(update={"retrain": CONFIG.retrain.model_copy(
        update={"quarantine_dir": "q"})}), tmp_path, [good, bad], checked.rejected)
    assert good.exists() and not bad.exists()
    assert (where / bad.name).exists() and (where / f"{bad.name}.reason.txt").read_text()


def test_new_data_is_what_the_last_ingest_did_not_see(tmp_path: Path):
    landing = tmp_path / CONFIG.data.landing_dir
    landing.mkdir(parents=True)
    assert rt.detect_new_data(CONFIG, tmp_path).first_run
    (landing / "2026-01.csv").write_text("x")
    report = tmp_path / CONFIG.paths.reports / "ingest.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"sha256": CONFIG.data.sha256,
                                  "batches": [{"name": "2026-01.csv"}]}))
    assert not rt.detect_new_data(CONFIG, tmp_path).found
    (landing / "2026-02.csv").write_text("x")
    new = rt.detect_new_data(CONFIG, tmp_path)
    assert [p.name for p in new.batches] == ["2026-02.csv"] and not new.source_changed
    report.write_text(json.dumps({"sha256": "0" * 64, "batches": [{"name": "2026-01.csv"},
                                                                  {"name": "2026-02.csv"}]}))
    assert rt.detect_new_data(CONFIG, tmp_path).source_changed


def test_retrain_decision_follows_rows_drift_and_trigger():
    config = CONFIG.model_copy(update={"retrain": CONFIG.retrain.model_copy(
        update={"min_new_rows": 500})})
    batch = rt.NewData([Path("b.csv")])
    assert rt.should_retrain(config, batch, 600, "none", "schedule")[0]
    go, why = rt.should_retrain(config, batch, 100, "none", "schedule")
    assert not go and "wait for more" in why
    assert rt.should_retrain(config, batch, 100, "major", "schedule")[0]
    assert not rt.should_retrain(config, batch, 5000, "moderate", "drift")[0]
    assert rt.should_retrain(config, batch, 10, "major", "drift")[0]
    assert rt.should_retrain(config, rt.NewData(first_run=True), 0, None, "drift")[0]


def _hold_lock(root: str, ready, release) -> None:
    with rt.exclusive(Path(root), 0):
        ready.set()
        release.wait(30)


def test_a_second_run_waits_then_fails_clearly_while_the_first_holds_the_lock(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        started = time.monotonic()
        with (pytest.raises(rt.RetrainBusy, match=r"another retrain run is in progress \(pid"),
              rt.exclusive(tmp_path, 0.5)):
            pass
        assert time.monotonic() - started >= 0.5  # it waited lock_timeout first
    finally:
        release.set()
        holder.join(30)
    with rt.exclusive(tmp_path, 5):  # released when the holder ended
        pass


def test_demonstration_batches_are_reproducible_and_checked():
    a = batches.make_batch(200, seed=9, drift=0.2)
    pd.testing.assert_frame_equal(a, batches.make_batch(200, seed=9, drift=0.2))
    assert a["median_income"].max() <= synthetic.INCOME_CAP
    with pytest.raises(ValueError, match="unknown corruption"):
        batches.make_batch(10, seed=0, corrupt="nope")
