"""The real stack of ``make services``: each service does its job, as a client on another
host would use it (only the URLs), and the start/stop commands handle their bad inputs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.scoring_helpers import requirements
from tests.services.conftest import Stack, free_port

pytestmark = pytest.mark.services

HERE = Path(__file__).parent


def test_postgres_answers_and_wants_the_password(stack: Stack) -> None:
    import psycopg

    from tabreg.services import postgres

    url = stack.exports["OPTUNA_STORAGE"]
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        names = {r[0] for r in conn.execute("select datname from pg_database")}
    assert set(postgres.DATABASES) <= names
    wrong = url.replace(url.split(":")[2].split("@")[0], "wrong-password")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(wrong, connect_timeout=5)


def test_mlflow_server_proxies_artifacts_and_keeps_the_registry(stack: Stack,
                                                                 tmp_path: Path) -> None:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LinearRegression

    uri = stack.exports["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = client.create_experiment("services-test")
    assert client.get_experiment(experiment_id).artifact_location.startswith(
        "mlflow-artifacts:")
    note = tmp_path / "note-7f3a.txt"
    note.write_text("through the proxy")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metric("rmse", 1.5)
            mlflow.log_artifact(str(note), artifact_path="notes")
            model = LinearRegression().fit(np.arange(10.0).reshape(-1, 1), np.arange(10.0))
            mlflow.sklearn.log_model(model, name="model", registered_model_name="services-m",
                                     input_example=np.array([[1.0]]),
                                     pip_requirements=requirements())
    finally:
        mlflow.set_tracking_uri(previous)
    stored = list(Path(stack.layout.artifacts).rglob(note.name))
    assert len(stored) == 1 and stored[0].read_text() == "through the proxy"
    back = client.download_artifacts(run.info.run_id, f"notes/{note.name}", str(tmp_path / "d"))
    assert Path(back).read_text() == "through the proxy"
    version = client.search_model_versions("name='services-m'")[0].version
    client.set_registered_model_alias("services-m", "champion", version)
    assert client.get_model_version_by_alias("services-m", "champion").version == version
    assert client.get_run(run.info.run_id).data.metrics["rmse"] == 1.5


def test_the_mlflow_server_starts_no_job_runner(stack: Stack) -> None:
    """MLflow's GenAI job runner (Huey consumers), which the pipeline never uses, is off: left
    on, its seven processes took a third of a core around the clock on an idle stack."""
    import psutil

    [server] = [p["pid"] for n, p in stack.status["services"].items() if n == "mlflow server"]
    family = psutil.Process(server).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in family if p.is_running()]
    assert commands, "the MLflow server has no worker processes"
    assert not [c for c in commands if "huey" in c or "mlflow.server.jobs" in c], commands


def test_optuna_study_is_shared_between_processes(stack: Stack) -> None:
    import optuna

    storage = stack.exports["OPTUNA_STORAGE"]
    study = optuna.create_study(study_name="services-shared", storage=storage,
                                direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=3)
    other = subprocess.run(
        [sys.executable, "-c",
         "import optuna, sys\n"
         "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
         "s = optuna.load_study(study_name='services-shared', storage=sys.argv[1])\n"
         "n = len(s.trials)\n"
         "s.optimize(lambda t: t.suggest_float('x', -1, 1) ** 2, n_trials=2)\n"
         "print(n)", storage], capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "3"
    assert len(optuna.load_study(study_name="services-shared", storage=storage).trials) == 5


def test_deployment_runs_on_a_started_worker(stack: Stack, tmp_path: Path) -> None:
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tabreg.services import deployments

    api = stack.exports["PREFECT_API_URL"]
    name = deployments.deploy(api, str(HERE / "flows"), "hello_flow.py:hello", "services-test",
                              stack.services.work_pool)
    out = tmp_path / "ran.txt"
    with temporary_settings(updates={PREFECT_API_URL: api}):
        flow_run = run_deployment(name, parameters={"out": str(out), "text": "worker"},
                                  timeout=240)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    text, pid = out.read_text().split()
    assert text == "worker"
    worker_pids = {p["pid"] for n, p in stack.status["services"].items()
                   if n.startswith("prefect worker")}
    assert len(worker_pids) == 2
    import psutil

    parents = {p.pid for p in psutil.Process(int(pid)).parents()} if psutil.pid_exists(
        int(pid)) else worker_pids  # the flow run's process may be gone already
    assert parents & worker_pids


def test_tune_worker_is_deployed_when_its_flow_exists(stack: Stack) -> None:
    from tabreg.services import deployments

    entry = deployments.TUNE_WORKER_ENTRYPOINT.split(":")[0]
    if not (stack.root / entry).exists():
        assert stack.status["deployments"] == []
        assert any("tune-worker deployment was not created" in line for line in stack.output)
        pytest.skip(f"{entry} is not in the project yet: only the note is checked")
    assert stack.status["deployments"] and stack.status["deployments"][0].endswith(
        "/tune-worker")


def test_dvc_push_and_pull_through_the_remote(stack: Stack, tmp_path: Path) -> None:
    from tabreg.services import dvc_remote

    repo = tmp_path / "repo"
    repo.mkdir()

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    remote = dvc_remote.configure(repo, str(stack.root / stack.services.dvc_remote))
    assert remote == str((stack.root / stack.services.dvc_remote).resolve())
    assert remote not in (repo / ".dvc/config").read_text()  # machine paths stay local
    assert remote in (repo / ".dvc/config.local").read_text()
    (repo / "data.csv").write_text("a,b\n1,2\n")
    run(sys.executable, "-m", "dvc", "add", "-q", "data.csv")
    run(sys.executable, "-m", "dvc", "push", "-q")
    assert any(p.is_file() for p in Path(remote).rglob("*"))
    (repo / "data.csv").unlink()
    subprocess.run(["rm", "-rf", str(repo / ".dvc/cache")], check=True)
    run(sys.executable, "-m", "dvc", "pull", "-q")
    assert (repo / "data.csv").read_text() == "a,b\n1,2\n"


def test_second_start_reports_instead_of_starting_a_copy(stack: Stack, tmp_path: Path) -> None:
    from tabreg.errors import ServiceError
    from tabreg.services import stack as services_stack

    lines: list[str] = []
    again = services_stack.start(stack.services, stack.root, echo=lines.append)
    assert again["already_running"] and "already running" in lines[0]
    assert {n: p["pid"] for n, p in again["services"].items()} == \
        {n: p["pid"] for n, p in stack.status["services"].items()}

    elsewhere = stack.services.model_copy(update={"state_dir": str(tmp_path / "other")})
    with pytest.raises(ServiceError) as caught:
        services_stack.start(elsewhere, tmp_path, echo=lines.append)
    message = str(caught.value)
    for service, port in (("PostgreSQL", stack.services.postgres_port),
                          ("MLflow server", stack.services.mlflow_port),
                          ("Prefect server", stack.services.prefect_port)):
        assert f"port {port} ({service})" in message
    assert not (tmp_path / "other" / "stack.json").exists()


def test_stop_with_nothing_running_says_so_and_exits_0(tmp_path: Path) -> None:
    from tests.conftest import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["services"]["state_dir"] = str(tmp_path / "nothing")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "-m", "tabreg", "--root", str(tmp_path),
                           "services", "stop"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "nothing to stop" in done.stdout


def test_reachability_names_each_unreachable_url(stack: Stack) -> None:
    from tabreg.errors import ServiceError
    from tabreg.services.reachability import check_reachable

    ex = stack.exports
    check_reachable(ex["MLFLOW_TRACKING_URI"], ex["OPTUNA_STORAGE"], ex["PREFECT_API_URL"])
    check_reachable(None, "sqlite:///optuna.db", None)  # local stores: nothing to check

    dead = free_port()
    tracking = f"http://127.0.0.1:{dead}"
    storage = ex["OPTUNA_STORAGE"].replace(f":{stack.services.postgres_port}/", f":{dead}/")
    began = time.monotonic()
    with pytest.raises(ServiceError) as caught:
        check_reachable(tracking, storage, ex["PREFECT_API_URL"])
    message = str(caught.value)
    assert tracking in message and f"127.0.0.1:{dead}/optuna" in message
    assert ex["PREFECT_API_URL"] not in message  # the live one is not blamed
    assert storage.split(":")[2].split("@")[0] not in message  # nor its password shown
    with pytest.raises(ServiceError, match=f"Prefect API http://127.0.0.1:{dead}/api"):
        check_reachable(ex["MLFLOW_TRACKING_URI"], None, f"http://127.0.0.1:{dead}/api")
    assert time.monotonic() - began < 15


def test_start_time_is_reported(stack: Stack) -> None:
    assert any(line.startswith("services started in") for line in stack.output)
    assert stack.started_in_s < 180


def test_the_inference_log_goes_to_the_stacks_postgresql(stack: Stack) -> None:
    """``INFERENCE_LOG`` from the stack's exports: the servers of any host log into one table
    that monitoring reads with SQL."""
    import pandas as pd
    from sqlalchemy import create_engine

    from tabreg.serving import inference_log as il

    url = stack.exports["INFERENCE_LOG"]
    log = il.InferenceLog(il.open_writer(url, stack.root), target="stack", batch_rows=2,
                          flush_seconds=0.1).start()
    for i in range(5):
        features = pd.DataFrame({"median_income": [1.0 + i, 2.0], "ocean_proximity": ["INLAND",
                                                                                     None]})
        log.append(features, {"prediction": [10.0 * i, 1.0], "lower": [1.0, 0.0],
                              "upper": [20.0 * i + 1, 2.0], "flags": ["", "missing:x"]},
                   request_id=f"q{i}", source="serve", model="housing", version="2")
    log.close()
    assert log.status()["rows_logged"] == 10 and log.status()["status"] == "ok"
    table = pd.read_sql(f"select * from {il.TABLE} where model_version = '2' order by "
                        "request_id, row", create_engine(url))
    assert len(table) == 10 and table["request_id"].tolist()[:2] == ["q0", "q0"]
    assert table["prediction"].tolist()[:2] == [0.0, 1.0]
    assert table["ocean_proximity"].isna().sum() == 5 and str(table["time"].dt.tz) == "UTC"
    # What `make monitor` reads: the window's rows only, oldest first, times in UTC.
    from datetime import timedelta

    from tabreg.monitoring.window import read_window

    last = table["time"].max().to_pydatetime()
    window = read_window(url, stack.root, last - timedelta(days=1), last)
    assert set(table["request_id"]) <= set(window["request_id"])
    assert window["time"].is_monotonic_increasing and str(window["time"].dt.tz) == "UTC"
    later = read_window(url, stack.root, last, last + timedelta(seconds=1))
    assert later.empty or not (later["model_version"] == "2").any()
