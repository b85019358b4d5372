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
from tabreg.config import load_config
from tabreg.data import batches, synthetic
from tabreg.promotion import registry
from tabreg.promotion import retrain as rt
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


@pytest.fixture(scope="module")
def project(tmp_path_factory, params):
    """One project with a first champion, which the scenarios below take in turn: each is
    its own test, so a failure in one does not hide what the others find."""
    from tests.conftest import PER_MACHINE, build_project

    with pytest.MonkeyPatch.context() as env:
        for var in PER_MACHINE:
            env.delenv(var, raising=False)
        root = build_project(tmp_path_factory.mktemp("retrain"), params, rows=1000,
                             promotion={"max_rmse": 1e9},
                             retrain={"drift_check_cron": "*/30 * * * *"})
        subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
        training(root=str(root))
        first = json.loads((root / "reports/promotion.json").read_text())
        assert first["action"] == "promote" and _champion(root) == first["challenger"]
        yield {"root": root, "first": first["challenger"]}


def test_a_scheduled_run_with_no_new_data_skips(project):
    # The deployments carry the crons from params.yaml; a run triggered through the
    # deployment completes, and with no new data it trains nothing.
    root = project["root"]
    made = deployments(load_config(root / "params.yaml"), "params.yaml", str(root))
    schedules, state = asyncio.run(_deploy_and_trigger(made))
    assert schedules == {DEPLOYMENT: ("0 3 * * 1", "schedule", 1),
                         DRIFT_DEPLOYMENT: ("*/30 * * * *", "drift", 1)}
    assert (state.type.value, state.name) == ("COMPLETED", "Skipped")  # apart in the UI
    assert _ledger(root)[-1]["action"] == "skip"
    assert _ledger(root)[-1]["reasons"] == ["no new data"]
    assert _champion(root) == project["first"]


def test_a_corrupt_batch_is_quarantined_and_changes_nothing(project):
    root = project["root"]
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
    assert train.read_bytes() == before and _champion(root) == project["first"]


def test_a_large_clean_batch_is_retrained_on_and_promoted(project):
    root = project["root"]
    synthetic.write_csv(batches.make_batch(5000, seed=22), root / "data/landing/2026-11-08.csv")
    run = retrain(root=str(root), return_state=True)
    outcome = run.result()
    assert outcome["action"] == "retrain" and outcome["decision"] == "promote", outcome
    assert outcome["ran"][:3] == ["ingest", "validate", "split"]
    drift = json.loads((root / "reports/drift.json").read_text())
    assert drift["rows_current"] == 5000 and drift["level"] in ("none", "moderate")
    project["second"] = _champion(root)
    assert project["second"] == outcome["challenger"] != project["first"]
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


def test_retraining_again_at_once_skips(project):
    again = retrain(root=str(project["root"]), return_state=True)
    assert again.name == "Skipped" and again.result()["action"] == "skip"


def test_rollback_gives_champion_back_to_the_first_model(project):
    root = project["root"]
    if "second" not in project:
        pytest.skip("needs the promotion of test_a_large_clean_batch_is_retrained_on_and_promoted")
    done = subprocess.run(["python", "-m", "tabreg", "--root", str(root), "-q", "rollback"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _champion(root) == project["first"] and _ledger(root)[-1]["action"] == "rollback"
    status = subprocess.run(["python", "-m", "tabreg", "--root", str(root), "status"],
                            capture_output=True, text=True)
    assert f"champion   version {project['first']}" in status.stdout, status.stderr


def test_the_command_line_runs_the_same_steps_without_prefect(project):
    # `python -m tabreg retrain` and `pipeline`: the retrain flow's and the training flow's
    # steps, in the same order, with no Prefect engine or server involved.
    root = project["root"]

    def tabreg(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["python", "-m", "tabreg", "--root", str(root), *argv],
                              capture_output=True, text=True)

    done = tabreg("pipeline")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("up to date (skipped)") == 8, done.stdout
    assert "Training pipeline summary" in done.stdout

    done = tabreg("retrain")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["action"] == "skip"
    assert _ledger(root)[-1]["reasons"] == ["no new data"]

    champion = _champion(root)
    synthetic.write_csv(batches.make_batch(300, seed=23, corrupt="nulls"),
                        root / "data/landing/2026-11-15.csv")
    done = tabreg("retrain")
    assert done.returncode != 0 and "2026-11-15.csv" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _ledger(root)[-1]["action"] == "reject batch" and _champion(root) == champion


def test_a_second_run_exits_clearly_while_one_holds_the_lock(make_project):
    root = make_project(rows=1000)
    with rt.exclusive(root, 0), pytest.raises(rt.RetrainBusy, match="in progress"):
        retrain(root=str(root))
