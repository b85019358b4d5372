"""The retrain-and-promote flow on generated data, end to end: a first champion, a scheduled
deployment whose triggered run skips (no new data), a corrupt batch rejected with the champion
untouched, a large clean batch whose retrained model is promoted, and a rollback."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.retrain import DEPLOYMENT, DRIFT_DEPLOYMENT, deployments, retrain
from flows.training import training
from tabreg import registry
from tabreg import retrain as rt
from tabreg.config import load_config
from tabreg.data import batches, synthetic
from tests.integration.prefect_view import prefect_view

pytestmark = pytest.mark.integration


def _champion(root: Path) -> str | None:
    config = load_config(root / "params.yaml")
    client = registry.client(config, root)
    version = registry.alias_version(client, config.registry.model_name, registry.CHAMPION)
    return version and str(version.version)


def _ledger(root: Path) -> list[dict]:
    return registry.read_ledger(root / "registry/ledger.jsonl")


async def _deploy_and_trigger(made: list) -> tuple[dict, Any]:
    """Register the deployments with the (test) Prefect server, trigger the retrain one and
    let a runner execute it, as `make schedule` would; returns the schedules and the state."""
    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    runner = Runner(name="test-runner", limit=1)
    for deployment in made:
        await runner.aadd_deployment(deployment)
    async with get_client() as client:
        schedules = {}
        for name in (DEPLOYMENT, DRIFT_DEPLOYMENT):
            found = await client.read_deployment_by_name(f"retrain/{name}")
            schedules[name] = (found.schedules[0].schedule.cron, found.parameters["trigger"],
                               found.global_concurrency_limit.limit)
        found = await client.read_deployment_by_name(f"retrain/{DEPLOYMENT}")
        run = await client.create_flow_run_from_deployment(found.id)
        await runner.start(run_once=True)
        state = (await client.read_flow_run(run.id)).state
    return schedules, state


def test_retrain_skips_rejects_promotes_and_rolls_back(make_project):
    root = make_project(rows=1000, promotion={"max_rmse": 1e9},
                        retrain={"drift_check_cron": "*/30 * * * *"})
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
    training(root=str(root))
    first = json.loads((root / "reports/promotion.json").read_text())
    assert first["action"] == "promote" and _champion(root) == first["challenger"]
    v1 = first["challenger"]

    # The deployments carry the crons from params.yaml; a run triggered through the
    # deployment completes, and with no new data it trains nothing.
    made = deployments(load_config(root / "params.yaml"), "params.yaml", str(root))
    schedules, state = asyncio.run(_deploy_and_trigger(made))
    assert schedules == {DEPLOYMENT: ("0 3 * * 1", "schedule", 1),
                         DRIFT_DEPLOYMENT: ("*/30 * * * *", "drift", 1)}
    assert (state.type.value, state.name) == ("COMPLETED", "Skipped")  # apart in the UI
    assert _ledger(root)[-1]["action"] == "skip"
    assert _ledger(root)[-1]["reasons"] == ["no new data"]

    # A corrupt batch: quarantined, recorded, the run fails, nothing downstream changes.
    train = root / "data/split/train.parquet"
    before = train.read_bytes()
    landing = root / "data/landing"
    synthetic.write_csv(batches.make_batch(500, seed=21, corrupt="out-of-range"),
                        landing / "2026-11-01.csv")
    with pytest.raises(rt.BatchRejected, match=r"(?s)2026-11-01\.csv.*latitude"):
        retrain(root=str(root))
    assert not (landing / "2026-11-01.csv").exists()
    assert list((root / "data/quarantine").glob("*/2026-11-01.csv"))
    assert _ledger(root)[-1]["action"] == "reject batch"
    assert train.read_bytes() == before and _champion(root) == v1

    # Much more data: the retrained model is better on the same test rows and is promoted.
    synthetic.write_csv(batches.make_batch(5000, seed=22), landing / "2026-11-08.csv")
    run = retrain(root=str(root), return_state=True)
    outcome = run.result()
    assert outcome["action"] == "retrain" and outcome["decision"] == "promote", outcome
    assert outcome["ran"][:3] == ["ingest", "validate", "split"]
    drift = json.loads((root / "reports/drift.json").read_text())
    assert drift["rows_current"] == 5000 and drift["level"] in ("none", "moderate")
    v2 = _champion(root)
    assert v2 == outcome["challenger"] != v1
    assert len(pd.read_parquet(root / "data/raw/housing.parquet")) == 6000
    gate = json.loads((root / "reports/promotion.json").read_text())["evidence"]
    assert gate["challenger_rmse"] < gate["champion_rmse"] and gate["difference"]["high"] < 0

    # In the Prefect UI: the retrain's own tasks by name, its outcome as artifacts.
    view = prefect_view(run.state_details.flow_run_id, wait_for_log="retrain: retrain")
    assert {"check new batches", "measure drift", "version data"} <= set(view["tasks"])
    assert {"retrain-summary", "retrain-table"} <= set(view["artifacts"])
    table = json.loads(view["artifacts"]["retrain-table"])
    assert {"kind": "decision", "name": "promotion", "value": "promote"}.items() <= \
        next(r for r in table if r["kind"] == "decision").items()

    # Retrain again at once: nothing new, nothing trained, and the run shows as Skipped.
    again = retrain(root=str(root), return_state=True)
    assert again.name == "Skipped" and again.result()["action"] == "skip"

    # Rollback from the command line: champion back to the first model, recorded.
    done = subprocess.run(["python", "-m", "tabreg", "--root", str(root), "-q", "rollback"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _champion(root) == v1 and _ledger(root)[-1]["action"] == "rollback"
    status = subprocess.run(["python", "-m", "tabreg", "--root", str(root), "status"],
                            capture_output=True, text=True)
    assert f"champion   version {v1}" in status.stdout, status.stderr


def test_a_second_run_exits_clearly_while_one_holds_the_lock(make_project):
    root = make_project(rows=1000)
    with rt.exclusive(root, 0), pytest.raises(rt.RetrainBusy, match="in progress"):
        retrain(root=str(root))
