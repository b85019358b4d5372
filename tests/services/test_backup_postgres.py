"""``make backup`` / ``make restore`` with the MLflow store in PostgreSQL (the bundled server,
started alone): ``pg_dump`` while in use, the database lost, ``pg_restore`` by one command, and
the same champion in the registry afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PER_MACHINE, ROOT
from tests.faults.conftest import CONFIG as PARAMS
from tests.scoring_helpers import (
    fit_small,
    isolated_mlflow,
    register_by_hand,
    write_test_split_and_store,
)

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A PostgreSQL server of the bundled binaries with an ``mlflow`` database."""
    from tabreg.errors import ServiceError
    from tabreg.services import postgres

    try:
        postgres.bin_dir()
    except ServiceError as exc:
        pytest.skip(f"no PostgreSQL binaries: {exc}")
    base = tmp_path_factory.mktemp("pg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    postgres.init(base / "data", base / "password")
    postgres.start(base / "data", "127.0.0.1", port, base / "postgres.log")
    try:
        url = postgres.url("postgres", (base / "password").read_text().strip(), "127.0.0.1",
                           port, "postgres")
        postgres.create_databases(url, ("mlflow",))
        yield url
    finally:  # a fast shutdown (SIGINT), as root or not
        import psutil

        pid = postgres.server_pid(base / "data")
        if pid is not None and psutil.pid_exists(pid):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def tabreg(root: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    return subprocess.run([sys.executable, "-m", "tabreg", "--params", str(ROOT / "params.yaml"),
                           "--root", str(root), *args], cwd=root, capture_output=True,
                          text=True, env={**env, "MLFLOW_TRACKING_URI": uri}, timeout=300)


def test_a_postgresql_store_is_dumped_lost_and_restored(server, tmp_path, monkeypatch):
    from tabreg.services import postgres
    from tabreg.steps import register as steps
    from tabreg.store import backup

    uri = postgres.with_database(server, "mlflow")
    config = PARAMS.model_copy(update={
        "tracking": PARAMS.tracking.model_copy(update={"uri": uri}),
        "promotion": PARAMS.promotion.model_copy(update={"max_rmse": 1e9})})
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)  # a database store's artifacts default to ./mlruns
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)
    with isolated_mlflow():
        write_test_split_and_store(root, config)
        register_by_hand(root, config, fit_small(config, rows=600)[0])
        assert steps.gate(config, root, trigger="test")["action"] == "promote"
        made = backup.backup(config, root)
    assert made["aliases"]["housing@champion"] == "1" and made["artifact_files"] > 0
    assert (Path(made["backup"]) / "mlflow.dump").stat().st_size > 0

    with postgres.connect(server) as db:  # the database is lost, and comes back empty
        db.execute("drop database mlflow with (force)")
        db.execute("create database mlflow")
    lost = tabreg(root, uri, "status")
    assert lost.returncode != 0 and "has lost what the ledger" in lost.stderr, lost.stderr
    assert "Traceback" not in lost.stderr

    done = tabreg(root, uri, "restore")
    assert done.returncode == 0, done.stderr[-3000:]
    status = tabreg(root, uri, "status")
    assert status.returncode == 0 and "champion   version 1" in status.stdout, status.stderr
