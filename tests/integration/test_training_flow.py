"""The Prefect flow and DVC drive the same steps and agree on what is up to date."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from flows.training import main, training
from tabreg.config import ROW_ID
from tabreg.data import synthetic
from tabreg.data.landing import BatchRejected
from tests.conftest import ROOT, build_project, noise, set_params
from tests.integration.prefect_view import prefect_view

pytestmark = pytest.mark.integration


def dvc(root: Path, *args: str) -> str:
    done = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


ALL = ["ingest", "validate", "split", "features", "tune", "train", "evaluate", "register"]
AFTER_TRAIN = ["evaluate", "register"]


def ran(stages: list[dict]) -> list[str]:
    return [s["stage"] for s in stages if s["ran"]]


def stale(root: Path) -> set[str]:
    return set(json.loads(dvc(root, "status", "--json")))


def run_flow(root: Path) -> tuple[list[dict], Any]:
    """The training flow on ``root``: its stages, and its flow run's id."""
    state = training(root=str(root), return_state=True)
    return state.result(), state.state_details.flow_run_id


@pytest.fixture(scope="module")
def trained(params, tmp_path_factory) -> dict:
    """A git + DVC project on 3,000 generated rows after its first training flow, which the
    tests below take in turn, in this order: the flow and DVC agree (that test changes only
    evaluation settings), then the bad batch is refused and changes nothing (which that test
    checks), then the good batch is appended."""
    root = build_project(tmp_path_factory.mktemp("trained"), params, rows=3000, git=True)
    stages, flow_run = run_flow(root)
    return {"root": root, "stages": stages, "flow_run": flow_run}


def test_flow_and_dvc_agree(trained):
    root, stages, first = trained["root"], trained["stages"], trained["flow_run"]
    assert ran(stages) == ALL
    assert stale(root) == set()
    lock = (root / "dvc.lock").read_text()
    # `dvc metrics show` lists measurements, not the split's or evaluation's settings.
    shown = dvc(root, "metrics", "show")
    assert "rmse" in shown and "max_stratum_test_share_deviation" in shown
    assert not re.search(r"\b(seed|strategy|test_size|confidence|family)\b", shown), shown

    # Nothing changed: the flow and dvc repro both recompute nothing.
    stages, second = run_flow(root)
    assert ran(stages) == []
    assert "didn't change" in dvc(root, "repro")
    assert (root / "dvc.lock").read_text() == lock

    # In the Prefect UI: task runs named after their stages; an up-to-date stage shows as
    # Skipped; the summary in the run's logs and as artifacts (Markdown, and a table of the
    # stages, the metrics and the promotion decision).
    assert prefect_view(first)["tasks"] == dict.fromkeys(ALL, "Completed")
    view = prefect_view(second, wait_for_log="Training pipeline summary")
    assert view["tasks"] == dict.fromkeys(ALL, "Skipped")
    assert any("ingest     up to date (skipped)" in m for m in view["logs"]), view["logs"]
    assert {"training-summary", "training-table"} <= set(view["artifacts"])
    assert "| tune | skipped |" in view["artifacts"]["training-summary"]
    table = json.loads(view["artifacts"]["training-table"])
    assert [r["name"] for r in table if r["kind"] == "stage"] == ALL
    assert {"test RMSE", "promotion"} <= {r["name"] for r in table}

    # Only evaluate.confidence changed: evaluate reruns, and register after it (it reads the
    # metrics); nothing before it does. (A change that reruns tune: the new-batch test below.)
    set_params(root, "evaluate", confidence=0.9)
    assert stale(root) == {"evaluate"}
    assert ran(training(root=str(root))) == AFTER_TRAIN
    assert "RMSE 90% interval" in (root / "reports/model_card.md").read_text()
    assert stale(root) == set()

    # The DVC driver reruns the same stages.
    set_params(root, "evaluate", seed=7)
    out = dvc(root, "repro")
    assert "Running stage 'evaluate'" in out and "Running stage 'train'" not in out
    assert stale(root) == set()




def test_command_line_prints_the_summary(make_project, capsys):
    """`make run` on generated data: everything it prints (run as make runs it, against the
    test session's Prefect server), the summary on stdout, and none of the noise."""
    from prefect.settings import PREFECT_API_URL

    root = make_project(rows=2000)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_LOGGING_EXTRA_LOGGERS": "tabreg", "DVC_NO_ANALYTICS": "1",
           "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, str(ROOT / "flows/training.py"), "--root", str(root)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out, printed = done.stdout, (done.stdout + done.stderr).splitlines()
    assert not noise(printed), done.stderr
    stamped = [line for line in printed if re.match(r"^\d", line)]
    assert stamped and all(re.match(r"^\d\d:\d\d:\d\d\.\d{3} \| ", line) for line in stamped)
    assert "ingest: not run before, running" in done.stderr  # decisions as sentences
    version = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["ingest"]["outs"][0]["md5"]
    assert f"2000 rows from 1 file(s), version {version}" in out
    assert "ingest     ran in" in out and "test rows" in out
    assert "tuning     best" in out and "test       RMSE" in out and "interval" in out

    set_params(root, "split", test_size=3)  # a bad configuration: message and exit 2
    assert main(["--root", str(root)]) == 2
    assert "split.test_size" in capsys.readouterr().err


def test_bad_batch_stops_before_split_and_keeps_outputs(trained):
    root = trained["root"]
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
    assert not (root / "data/landing/2026-11-02.csv").exists()  # moved: the next run is clean


def test_new_batch_appends_and_keeps_the_test_set(trained):
    root = trained["root"]
    test_before = set(pd.read_parquet(root / "data/split/test.parquet")[ROW_ID])

    synthetic.write_csv(synthetic.generate(800, seed=5), root / "data/landing/2026-11-01.csv")
    assert ran(training(root=str(root)))[:3] == ["ingest", "validate", "split"]
    raw = pd.read_parquet(root / "data/raw/housing.parquet")
    test_after = set(pd.read_parquet(root / "data/split/test.parquet")[ROW_ID])
    assert len(raw) == 3800
    assert test_before <= test_after
    summary = json.loads((root / "reports/validation/summary.json").read_text())
    assert summary["success"] and "batch-2026-11-01.csv" in summary["tables"]
