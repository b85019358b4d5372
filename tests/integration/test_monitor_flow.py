"""``make monitor`` on a project trained by the real training flow, with traffic scored by
``make predict`` into the inference log and labels dropped into ``data/labels``: clean traffic
says ``ok``; traffic with injected drift says ``act`` and the monitoring flow starts the retrain
flow on the Prefect server; a champion worse than the version it replaced gets the advice to
roll back instead; an empty window says there is nothing to monitor."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from flows.monitor import DEPLOYMENT, deployment, monitor
from flows.training import training
from tabreg import cli
from tabreg.config import ROW_ID, load_config
from tabreg.data import synthetic
from tabreg.promotion import registry
from tabreg.serving.scoring import predict_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, params):
    """One project with a champion; the tests take turns on its log (each monitors the
    traffic it scores, in a window of its own)."""
    from tests.conftest import PER_MACHINE, build_project

    with pytest.MonkeyPatch.context() as env:
        for var in PER_MACHINE:
            env.delenv(var, raising=False)
        root = build_project(tmp_path_factory.mktemp("monitor"), params, rows=2000,
                             promotion={"max_rmse": 1e9}, monitor={"min_labels": 200})
        subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, check=True)
        training(root=str(root))
        yield root


@pytest.fixture(autouse=True)
def _the_projects_own_log(project, monkeypatch):
    """The project's inference log, not the session's shared one (tests/conftest.py)."""
    monkeypatch.setenv("INFERENCE_LOG", str(project / "logs/inference"))


def traffic(root: Path, rows: pd.DataFrame, name: str, labelled: bool = True) -> str:
    """Score ``rows`` with ``make predict``'s code (logged), drop their labels into
    data/labels, and return the time just after, the end of the window that holds them."""
    config = load_config(root / "params.yaml")
    source, dest = root / f"{name}.csv", root / f"{name}-scored.csv"
    rows[list(config.schema.features)].to_csv(source, index=False)
    predict_file(config, root, source, dest)
    if labelled:
        scored = pd.read_csv(dest)
        (root / "data/labels").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({ROW_ID: scored[ROW_ID], config.schema.target: rows[
            config.schema.target].to_numpy()}).to_csv(root / f"data/labels/{name}.csv",
                                                       index=False)
    return pd.Timestamp.now(tz="UTC").isoformat()


def champion(root: Path) -> str:
    config = load_config(root / "params.yaml")
    return str(registry.alias_version(registry.client(config, root), config.registry.model_name,
                                      registry.CHAMPION).version)


def ledger(root: Path) -> list[dict]:
    return registry.read_ledger(root / "registry/ledger.jsonl")


def test_clean_traffic_is_ok_and_a_report_is_written(project):
    until = traffic(project, synthetic.generate(1200, seed=31), "clean")
    summary = monitor(root=str(project), until=until)
    assert summary["verdict"] == "ok", summary["reasons"]
    assert summary["rows"] == 1200 and summary["labels"]["joined"] == 1200
    assert summary["action"]["kind"] == "none"
    live, figures = summary["live"], summary["champion"]
    assert live["rmse_low"] < figures["rmse_high"] and live["rows"] == 1200
    assert live["interval_coverage"] == pytest.approx(figures["level"], abs=0.05)
    assert summary["champion_slices"] and {"slice", "rmse"} <= set(summary["champion_slices"][0])
    folder = project / "reports/monitoring"
    written = json.loads((folder / "summary.json").read_text())
    assert written["window"]["until"] == summary["window"]["until"]
    assert "Monitoring" in (folder / "report.html").read_text()
    assert len(pd.read_csv(folder / "to_label.csv")) == 0  # every row came with its label
    entry = ledger(project)[-1]
    assert (entry["action"], entry["verdict"], entry["remedy"]) == ("monitor", "ok", "none")
    from mlflow import MlflowClient

    run = MlflowClient().get_run(summary["mlflow_run"])
    assert run.data.tags["verdict"] == "ok" and run.data.metrics["rows"] == 1200
    assert {a.path for a in MlflowClient().list_artifacts(run.info.run_id)} == {
        "report.html", "summary.json", "to_label.csv"}
    # The next window starts where this one ended: nothing new, nothing to monitor.
    assert cli.run(["--root", str(project), "monitor"]) == 0
    assert ledger(project)[-1]["mlflow_run"] == summary["mlflow_run"]


def test_injected_drift_acts_and_starts_the_retrain_flow(project):
    drifted = synthetic.generate(1200, seed=32)
    drifted["median_income"] *= 1.8
    until = traffic(project, drifted, "drifted", labelled=False)
    before = champion(project)
    summary = monitor(root=str(project), until=until)
    assert summary["verdict"] == "act" and summary["reasons"][0].startswith(
        "major input drift: median_income"), summary["reasons"]
    assert summary["action"]["kind"] == "retrain" and summary["action"]["retrain"] == "skip"
    retrained, monitored = ledger(project)[-2:]
    assert (retrained["action"], retrained["trigger"]) == ("skip", "monitor")
    assert "to_label.csv" in retrained["reasons"][1]
    assert (monitored["verdict"], monitored["remedy"]) == ("act", "retrain")
    assert len(pd.read_csv(project / "reports/monitoring/to_label.csv")) == 100
    assert champion(project) == before
    assert asyncio.run(_retrain_ran_inside_a_monitor_run())


async def _retrain_ran_inside_a_monitor_run() -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(
            name=FlowFilterName(any_=["retrain"])))
        return any(r.parent_task_run_id is not None and
                   r.parameters.get("trigger") == "monitor" for r in runs)


def test_an_empty_window_has_nothing_to_monitor(project, capsys):
    assert cli.run(["--root", str(project), "monitor", "--since", "2020-01-01",
                    "--until", "2020-01-02"]) == 0
    assert "nothing to monitor" in capsys.readouterr().out


def test_the_scheduled_deployment_carries_the_cron(project):
    made = deployment(load_config(project / "params.yaml"), "params.yaml", str(project))
    assert [(d.name, d.schedules[0].schedule.cron) for d in made] == [(DEPLOYMENT,
                                                                       "0 6 * * *")]


def test_a_champion_worse_than_the_one_it_replaced_gets_the_rollback_advice(project):
    from tests.scoring_helpers import fit_small, register_by_hand

    config = load_config(project / "params.yaml")
    client = registry.client(config, project)
    name, good = config.registry.model_name, champion(project)
    weak, _ = fit_small(config, rows=300, max_iter=2)  # a model that learnt little
    bad = register_by_hand(project, config, weak)
    registry.set_tags(client, name, bad, client.get_model_version(name, good).tags)
    registry.promote(client, name, bad, previous=good)  # claims the good one's test figures
    until = traffic(project, synthetic.generate(600, seed=33), "after-a-bad-promotion")
    entries = len(ledger(project))
    summary = monitor(root=str(project), until=until)
    assert summary["verdict"] == "act" and "above the champion's test interval" in " ".join(
        summary["reasons"]), summary["reasons"]
    rollback = summary["rollback"]
    assert rollback["previous"] == good and rollback["previous_better"], rollback
    assert summary["action"]["kind"] == "rollback"
    assert f"version {good}" in summary["action"]["detail"]
    added = ledger(project)[entries:]  # the advice is recorded; no retrain was started
    assert [(e["action"], e["remedy"]) for e in added] == [("monitor", "rollback")]
    assert champion(project) == bad  # said, not done
