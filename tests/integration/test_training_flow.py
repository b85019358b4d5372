"""The Prefect flow and DVC drive the same steps and agree on what is up to date."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.training import main, training
from tabreg.config import ROW_ID
from tabreg.data import synthetic
from tabreg.data.landing import BatchRejected
from tests.conftest import set_params

pytestmark = pytest.mark.integration


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


ALL = ["ingest", "validate", "split", "features", "tune", "train", "evaluate", "register"]
AFTER_SPLIT = ["split", "features", "tune", "train", "evaluate", "register"]


def ran(stages: list[dict]) -> list[str]:
    return [s["stage"] for s in stages if s["ran"]]


def stale(root: Path) -> set[str]:
    return set(json.loads(dvc(root, "status", "--json")))


def test_flow_and_dvc_agree(make_project):
    root = make_project(rows=3000, git=True)
    assert ran(training(root=str(root))) == ALL
    assert stale(root) == set()
    lock = (root / "dvc.lock").read_text()

    # Nothing changed: the flow and dvc repro both recompute nothing.
    assert ran(training(root=str(root))) == []
    assert "didn't change" in dvc(root, "repro")
    assert (root / "dvc.lock").read_text() == lock

    # Only split.test_size changed: split reruns, ingest and validate do not.
    set_params(root, "split", test_size=0.25)
    assert stale(root) == {"split"}
    assert ran(training(root=str(root))) == AFTER_SPLIT
    report = json.loads((root / "reports/split.json").read_text())
    assert report["test_size"] == 0.25 and stale(root) == set()

    # The DVC driver reruns the same single stage.
    set_params(root, "split", seed=7)
    out = dvc(root, "repro")
    assert "Running stage 'split'" in out and "Running stage 'ingest'" not in out
    assert stale(root) == set()


def test_command_line_prints_the_summary(make_project, capsys):
    root = make_project(rows=2000)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    assert main(["--root", str(root)]) == 0
    out = capsys.readouterr().out
    version = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["ingest"]["outs"][0]["md5"]
    assert f"2000 rows from 1 file(s), version {version}" in out
    assert "ingest     ran in" in out and "test rows" in out
    assert "tuning     best" in out and "test       RMSE" in out and "interval" in out

    set_params(root, "split", test_size=3)  # a bad configuration: message and exit 2
    assert main(["--root", str(root)]) == 2
    assert "split.test_size" in capsys.readouterr().err


def test_new_batch_appends_and_keeps_the_test_set(make_project):
    root = make_project(rows=3000)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    training(root=str(root))
    test_before = set(pd.read_parquet(root / "data/split/test.parquet")[ROW_ID])

    synthetic.write_csv(synthetic.generate(800, seed=5), root / "data/landing/2026-11-01.csv")
    assert ran(training(root=str(root)))[:3] == ["ingest", "validate", "split"]
    raw = pd.read_parquet(root / "data/raw/housing.parquet")
    test_after = set(pd.read_parquet(root / "data/split/test.parquet")[ROW_ID])
    assert len(raw) == 3800
    assert test_before <= test_after
    summary = json.loads((root / "reports/validation/summary.json").read_text())
    assert summary["success"] and "batch-2026-11-01.csv" in summary["tables"]


def test_bad_batch_stops_before_split_and_keeps_outputs(make_project):
    root = make_project(rows=3000)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    training(root=str(root))
    train, test = root / "data/split/train.parquet", root / "data/split/test.parquet"
    before = train.read_bytes(), test.read_bytes()

    bad = synthetic.generate(500, seed=6)
    bad.loc[:9, "latitude"] = 48.0  # outside California
    synthetic.write_csv(bad, root / "data/landing/2026-11-02.csv")
    # Met first by the flow's ingest, the batch is judged by the batch contract there and
    # quarantined as the retrain flow would (tests/faults/test_landing.py has the rest).
    with pytest.raises(BatchRejected, match=r"(?s)2026-11-02\.csv.*latitude"):
        training(root=str(root))
    assert (train.read_bytes(), test.read_bytes()) == before
    assert list((root / "data/quarantine").glob("*/2026-11-02.csv"))
    assert json.loads((root / "reports/validation/summary.json").read_text())["success"]
