"""What the retrain flow records must be true of this run:

* a batch whose rows are all in the raw table already adds nothing: the flow skips, saying
  so, instead of logging "500 new rows" for it;
* rows ingested outside the flow (``python -m tabreg ingest``) are new to every model: the next
  retrain acts on them instead of saying "no new data";
* a run that never reached the gate reports no decision: the last ``promotion.json`` is an
  earlier model's, and neither the ledger nor the summary passes it off as this run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tabreg import cli
from tabreg.config import load_config
from tabreg.data import synthetic
from tabreg.errors import SourceError
from tabreg.io import file_md5, write_json
from tabreg.promotion import registry
from tabreg.promotion import retrain as rt
from tabreg.steps.register import read_decision

ROWS = 300  # in the source archive (seed 0)


def _ingested(make_project, **kwargs) -> tuple[Path, object]:
    root = make_project(rows=ROWS, **kwargs)
    assert cli.run(["--root", str(root), "-q", "ingest"]) == 0
    return root, load_config(root / "params.yaml", env={})


def _judged(root: Path, config, run_id: str) -> dict:
    """The gate's record of a decision on a model trained on the current raw table."""
    decision = {"action": "promote", "challenger": "1", "champion": None, "run_id": run_id,
                "data_version": file_md5(root / config.paths.raw), "reasons": ["first model"]}
    write_json(decision, root / config.paths.reports / "promotion.json")
    return decision


def _ledger(root: Path) -> list[dict]:
    return registry.read_ledger(root / "registry/ledger.jsonl")


def test_new_rows_are_rows_the_raw_table_lacks(make_project):
    root, config = _ingested(make_project)
    path = root / "data/landing/2026-11-01.csv"
    synthetic.write_csv(pd.concat([synthetic.generate(ROWS, seed=0).head(100),
                                   synthetic.generate(50, seed=5)], ignore_index=True), path)
    checked = rt.check_batches(config, root, [path])
    assert rt.count_new_rows(config, root, checked.accepted) == (50, 150)
    go, why = rt.should_retrain(config, rt.NewData([path]), 50, None, "schedule", 150)
    assert go and why == "50 new rows (100 more already in the raw table)"
    go, why = rt.should_retrain(config, rt.NewData([path]), 0, "major", "drift", 100)
    assert not go and "add no new rows: all 100 rows are already in the raw table" in why


def test_a_batch_of_rows_already_ingested_is_a_skip(make_project, prefect_api):
    from flows.retrain import retrain

    root, config = _ingested(make_project)
    _judged(root, config, "run-1")
    synthetic.write_csv(synthetic.generate(ROWS, seed=0).head(120),
                        root / "data/landing/2026-11-01.csv")
    outcome = retrain(root=str(root))
    entry = _ledger(root)[-1]
    assert outcome["action"] == entry["action"] == "skip"
    assert entry["reasons"][0] == ("the new batch file(s) add no new rows: all 120 rows are "
                                   "already in the raw table; nothing to retrain on")
    assert (entry["new_rows"], entry["batch_rows"]) == (0, 120)
    assert not entry.get("decision")


def test_rows_ingested_outside_the_flow_are_retrained_on(make_project):
    root, config = _ingested(make_project)
    _judged(root, config, "run-1")
    assert not rt.detect_new_data(config, root).found
    synthetic.write_csv(synthetic.generate(200, seed=8), root / "data/landing/2026-11-08.csv")
    assert cli.run(["--root", str(root), "-q", "ingest"]) == 0  # outside the retrain flow
    new = rt.detect_new_data(config, root)
    assert new.batches == [] and "rows ingested outside the retrain flow" in new.unmodelled
    assert rt.should_retrain(config, new, 0, None, "schedule", 0)[0]


def test_a_run_that_never_reached_the_gate_reports_no_decision(make_project, monkeypatch,
                                                                prefect_api):
    from flows.retrain import retrain
    from flows.training import summary

    root, config = _ingested(make_project, git=True)
    earlier = _judged(root, config, "run-1")
    synthetic.write_csv(synthetic.generate(200, seed=8), root / "data/landing/2026-11-08.csv")
    assert cli.run(["--root", str(root), "-q", "ingest"]) == 0
    # The retrain acts on those rows, and its training fails in its first stage.
    monkeypatch.setenv("DATA_SOURCE", str(root / "nowhere.tgz"))
    with pytest.raises(SourceError):
        retrain(root=str(root))
    entry = _ledger(root)[-1]
    assert entry["action"] == "fail" and "outside the retrain flow" in entry["reasons"][0]
    assert "the training flow failed: data source" in entry["reasons"][-1]
    assert not entry.get("decision") and not entry.get("challenger")
    decision_file = root / config.paths.reports / "promotion.json"
    assert json.loads(decision_file.read_text()) == earlier  # kept, and not passed off

    # A model trained since, that the gate has not judged: the summary shows no decision.
    write_json({"run_id": "run-2"}, root / "models/train.json")
    assert "promotion" not in summary([], root, "params.yaml")
    assert read_decision(config, root, run_id="run-2") is None
    assert read_decision(config, root, run_id="run-1") == earlier
