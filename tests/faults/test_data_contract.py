"""Data that passes every per-column rule but is wrong as a whole: a shuffled target (the
issue's source whose ``median_house_value`` was shuffled, which trained a useless model that
became champion) and a numeric column stuck at one value. The contract's own checks (declared
in the suites' ``meta.tabreg_checks``) fail them, at validation, ``check-file`` and the retrain
flow's batch check; small tables, where chance could trip them, are left alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabreg import cli
from tabreg.config import load_config
from tabreg.data import ingest, synthetic
from tabreg.data import validate as V
from tabreg.errors import ValidationFailed
from tabreg.steps.ingest import ingest as ingest_step
from tabreg.steps.validate import validate as validate_step
from tests.conftest import ROOT, set_params

SCHEMA = load_config(ROOT / "params.yaml", env={}).schema
SUITES = {name: ROOT / "expectations" / f"{name}.json" for name in ("raw", "batch")}


def shuffled(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    out = frame.copy()
    out[SCHEMA.target] = np.random.default_rng(seed).permutation(out[SCHEMA.target].to_numpy())
    return out


def stuck(frame: pd.DataFrame, column: str = "median_income") -> pd.DataFrame:
    return frame.assign(**{column: 3.5})


def identified(frame: pd.DataFrame, name: str = "2026-11-01.csv") -> pd.DataFrame:
    return ingest.with_identity(frame, SCHEMA, name)


def failures(report: V.ValidationReport) -> set[tuple[str, tuple[str, ...]]]:
    return {(f.expectation, f.columns) for f in report.failures}


@pytest.fixture(scope="module")
def districts() -> pd.DataFrame:
    return synthetic.generate(1500, seed=6)


@pytest.mark.parametrize("suite", SUITES)
def test_a_shuffled_target_fails_the_contract(districts, suite):
    assert V.validate_frame(identified(districts), SUITES[suite]).success
    report = V.validate_frame(identified(shuffled(districts)), SUITES[suite])
    pair = ("median_income", "median_house_value")
    assert failures(report) == {(V.RANK_CORRELATION, pair)}, report.summary()
    (failure,) = report.failures
    assert "min_value=0.4" in failure.detail and "on 1500 rows" in failure.detail
    observed = next(c for c in report.result["tabreg_checks"] if c["type"] == V.RANK_CORRELATION)
    assert abs(observed["observed_value"]) < 0.1


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("column", ["median_income", "households", "median_house_value"])
def test_a_column_stuck_at_one_value_fails_the_contract(districts, suite, column):
    report = V.validate_frame(identified(stuck(districts, column)), SUITES[suite])
    assert (V.NOT_CONSTANT, (column,)) in failures(report), report.summary()
    failure = next(f for f in report.failures if f.expectation == V.NOT_CONSTANT)
    assert failure.sample == (3.5,) and "observed one value in all 1500 rows" in failure.detail
    assert f"{V.NOT_CONSTANT} [{column}]" in report.summary()


def test_small_batches_are_left_to_chance(districts):
    """Below min_rows the rules are not judged: 299 shuffled rows and 29 identical incomes."""
    assert V.validate_frame(identified(shuffled(districts.head(299))), SUITES["batch"]).success
    assert V.validate_frame(identified(stuck(districts.head(29))), SUITES["batch"]).success
    report = V.validate_frame(identified(shuffled(districts.head(300))), SUITES["batch"])
    assert V.RANK_CORRELATION in {f.expectation for f in report.failures}


def test_the_pair_and_floor_come_from_the_suite(districts, tmp_path):
    data = json.loads(SUITES["batch"].read_text())
    (check,) = [c for c in data["meta"]["tabreg_checks"] if c["type"] == V.RANK_CORRELATION]
    check["kwargs"].update(column_A="population", column_B="households", min_value=0.99)
    suite = tmp_path / "batch.json"
    suite.write_text(json.dumps(data))
    report = V.validate_frame(identified(districts), suite)
    assert failures(report) == {(V.RANK_CORRELATION, ("population", "households"))}


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.update(type="expect_vibes"), r"#0 \(expect_vibes\): unknown type"),
    (lambda c: c["kwargs"].pop("min_rows"), rf"#0 \({V.RANK_CORRELATION}\): kwargs must be "
                                            r"exactly \['column_A', 'column_B', 'min_rows'"),
    (lambda c: c["kwargs"].update(min_rows=0), r"#0 .*: min_rows must be an integer"),
])
def test_a_mistyped_check_is_refused(tmp_path, change, message):
    data = json.loads(SUITES["raw"].read_text())
    change(data["meta"]["tabreg_checks"][0])
    suite = tmp_path / "raw.json"
    suite.write_text(json.dumps(data))
    with pytest.raises(ValidationFailed, match=rf"raw\.json: invalid expectation suite: "
                                               rf"meta\.tabreg_checks {message}"):
        V.load_suite(suite)


def test_validate_stops_a_shuffled_source(make_project, districts):
    root = make_project(rows=1200)
    archive = root.parent / "source" / "shuffled.tgz"
    sha = synthetic.write_archive(shuffled(districts), archive)
    set_params(root, "data", source=str(archive), sha256=sha)
    config = load_config(root / "params.yaml", env={})
    ingest_step(config, root)
    with pytest.raises(ValidationFailed, match=rf"(?s)validation failed for raw.*"
                                               rf"{V.RANK_CORRELATION} \[median_income, "
                                               rf"median_house_value\]"):
        validate_step(config, root)
    summary = json.loads((root / "reports/validation/summary.json").read_text())
    assert summary["success"] is False
    saved = json.loads((root / "reports/validation/raw.json").read_text())
    assert saved["result"]["tabreg_checks"][0]["success"] is False


def test_check_file_and_retrain_reject_a_batch_with_a_stuck_column(make_project, capsys):
    from flows.retrain import check_new_batches
    from tabreg.promotion import retrain as rt

    root = make_project(rows=1200)
    config = load_config(root / "params.yaml", env={})
    ingest_step(config, root)
    batch = root / config.data.landing_dir / "2026-11-01.csv"
    synthetic.write_csv(stuck(synthetic.generate(400, seed=9), "housing_median_age"), batch)

    assert cli.run(["--root", str(root), "check-file", str(batch)]) == 1
    err = capsys.readouterr().err
    assert f"{V.NOT_CONSTANT} [housing_median_age]" in err and "Traceback" not in err

    with pytest.raises(rt.BatchRejected, match=rf"(?s)2026-11-01\.csv.*{V.NOT_CONSTANT}"):
        check_new_batches.fn(config, root, rt.detect_new_data(config, root))
    assert list(Path(root / config.retrain.quarantine_dir).glob("*/2026-11-01.csv"))
