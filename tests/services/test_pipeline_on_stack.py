"""The pipeline on the real stack, pointed at it by configuration only (the three URLs of
``make services``): tuning workers share a study on PostgreSQL, trials and the model land on
the MLflow server, the gate promotes in its registry, and tuning fans out as flow runs of the
``tune-worker`` deployment on the stack's Prefect workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tabreg.tuning.study import ATTR_WORKER, open_storage
from tests.conftest import PER_MACHINE, ROOT
from tests.services.conftest import Stack

pytestmark = pytest.mark.services

FOREST = {"families": ["random_forest", "hist_gradient_boosting"], "timeout": None,
          "space": {"random_forest": {"n_estimators": {"low": 5, "high": 15, "int": True}},
                    "hist_gradient_boosting": {"max_iter": {"low": 10, "high": 30,
                                                            "int": True}}}}


def env_for(stack: Stack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    return {**env, "PYTHONPATH": str(ROOT / "src"), **extra}


def run(root: Path, env: dict, *args: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stderr


def study_trials(url: str, prefix: str = "") -> tuple[str, list[optuna.trial.FrozenTrial]]:
    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)
             if s.study_name.startswith(prefix)]
    assert len(names) == 1, names
    return names[0], optuna.load_study(study_name=names[0], storage=storage).trials


@pytest.fixture
def database(stack: Stack) -> str:
    """A fresh Optuna database on the stack's PostgreSQL for each test."""
    import psycopg

    url = stack.exports["OPTUNA_STORAGE"]
    name = f"optuna_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name


def test_two_local_workers_share_a_postgres_study_and_survive_a_killed_one(
        stack: Stack, database: str, make_project) -> None:
    slow = {**FOREST, "families": ["random_forest"],
            "space": {"random_forest": {"n_estimators": {"low": 150, "high": 250, "int": True}}}}
    root = make_project(rows=1200, tune={**slow, "n_trials": 6, "workers": 2,
                                         "launcher": "local"})
    from tabreg import cli

    for step in ("ingest", "validate", "split"):  # in this process: nothing here uses the stack
        assert cli.run(["--root", str(root), "-q", step]) == 0
    env = env_for(stack, OPTUNA_STORAGE=database)
    proc = subprocess.Popen([sys.executable, "-m", "tabreg", "-q", "tune"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline:
        try:
            trials = study_trials(database)[1]
        except AssertionError:  # the study is not created yet
            trials = []
        running = [t for t in trials if t.state.name == "RUNNING"
                   and ATTR_WORKER in t.system_attrs]
        victim = running[0] if running else None
        time.sleep(0.3)
    assert victim is not None, "no trial started"
    os.kill(victim.system_attrs[ATTR_WORKER]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-4000:]
    _, trials = study_trials(database)
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))  # the budget exactly, no number twice
    states = {t.number: t.state.name for t in trials}
    assert states[victim.number] == "FAIL"
    assert all(s in ("COMPLETE", "PRUNED") for n, s in states.items() if n != victim.number)
    assert len({t.system_attrs[ATTR_WORKER]["pid"] for t in trials}) == 2


def test_the_training_flow_runs_on_the_stack_with_tuning_as_prefect_work(
        stack: Stack, make_project) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tabreg.services import deployments

    root = make_project(rows=1500, git=True, tune={**FOREST, "n_trials": 4, "workers": 2,
                                                   "launcher": "prefect"},
                        promotion={"max_rmse": 1e9})  # tiny data: any first model may ship
    shutil.copytree(ROOT / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    api = stack.exports["PREFECT_API_URL"]
    deployments.deploy_tune_worker(api, root, stack.services.work_pool)  # from this project
    uri = stack.exports["MLFLOW_TRACKING_URI"]
    experiment = f"stack-{time.monotonic_ns() % 10**9}"
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace(
        "experiment: housing", f"experiment: {experiment}"))
    # The stack's own URLs, as `make services` exports them: its Prefect workers have the
    # same OPTUNA_STORAGE, which is how the flow runs find the study.
    database = stack.exports["OPTUNA_STORAGE"]
    env = env_for(stack, OPTUNA_STORAGE=database, MLFLOW_TRACKING_URI=uri,
                  PREFECT_API_URL=api, PREFECT_HOME=str(root / ".prefect"),
                  PREFECT_LOGGING_EXTRA_LOGGERS="tabreg")  # as `make run` sets it
    err = run(root, env, "flows/training.py", timeout=900)
    assert "tune: submitted 2 flow runs of the tune-worker/tune-worker deployment" in err, \
        err[-3000:]

    name, trials = study_trials(database, prefix=experiment)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "pipeline"]
    assert len(parent) == 1
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id
              and r.data.tags.get("kind") == "trial"]
    assert sorted(int(r.data.tags["trial"]) for r in nested) == [0, 1, 2, 3]
    model = client.get_model_version_by_alias("housing", "champion")  # the gate promoted it
    assert model.run_id in {r.info.run_id for r in runs}
    assert "promotion  promote" in err or "promotion" in err

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as c:
        flow_runs = c.read_flow_runs()
    tune_runs = [r for r in flow_runs if r.parameters.get("study") == name]
    assert len(tune_runs) == 2 and all(r.state.is_completed() for r in tune_runs)
