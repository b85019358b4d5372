"""A lost or damaged MLflow store: a deleted, emptied, truncated or garbage ``mlflow.db``, or a
store that no longer holds the champion the ledger records, stops ``status``, ``promote``,
``register`` and the flows' preflight with one message naming what is lost and ``make
restore``, a non-zero exit and no traceback; MLflow never silently re-creates the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tabreg.errors import StoreError
from tabreg.promotion import registry
from tabreg.steps import register as steps
from tests import scoring_helpers as helpers
from tests.conftest import PER_MACHINE, ROOT, repoint_store
from tests.faults.conftest import CONFIG as PARAMS

pytestmark = pytest.mark.integration

#: No bar for the first champion: the small model fitted here is the one to lose and restore.
CONFIG = PARAMS.model_copy(update={"promotion": PARAMS.promotion.model_copy(
    update={"max_rmse": 1e9})})
NAME = CONFIG.registry.model_name


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A project whose store holds a champion promoted by the gate (so the ledger says so)."""
    with helpers.isolated_mlflow():
        root = helpers.write_test_split_and_store(tmp_path_factory.mktemp("base"), CONFIG)
        version = helpers.register_by_hand(root, CONFIG, helpers.fit_small(CONFIG, rows=600)[0])
        assert steps.gate(CONFIG, root, trigger="test")["action"] == "promote"
    assert version == "1"
    return root


@pytest.fixture
def project(base, tmp_path, monkeypatch) -> Path:
    """A copy of the base project to damage (its store is named by a path inside it)."""
    for var in PER_MACHINE:
        monkeypatch.delenv(var, raising=False)
    root = tmp_path / "project"
    shutil.copytree(base, root)
    # The store names its artifacts by absolute path: point the copy's at the copy's files.
    repoint_store(root / "mlflow.db", base, root)
    return root


def store_client(root: Path):
    """A client on the project's own store, registry included: never the process-wide
    registry URI, which whatever ran before in this worker may have set."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def cli(root: Path, *args: str, capsys) -> tuple[int, str, str]:
    from tabreg import cli as entry

    with helpers.isolated_mlflow():
        code = entry.run(["--params", str(ROOT / "params.yaml"), "--root", str(root), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def trained(root: Path) -> None:
    """What `train` and `evaluate` leave for `register` (its run in the store is never read
    here: the store check comes first)."""
    (root / "models").mkdir()
    (root / "models/train.json").write_text(json.dumps({"run_id": "0" * 32}))
    (root / "reports/metrics.json").write_text(json.dumps({"rmse": 1.0}))


def damage(db: Path, how: str) -> None:
    if how == "deleted":
        db.unlink()
    elif how == "emptied":
        db.write_bytes(b"")
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    else:  # garbage
        db.write_bytes(bytes(range(256)) * 64)


@pytest.mark.parametrize("how", ["deleted", "emptied", "truncated", "garbage"])
@pytest.mark.parametrize("command", ["status", "promote", "register"])
def test_a_lost_or_damaged_store_is_named_not_recreated(project, capsys, how, command):
    if command == "register":
        trained(project)
    db = project / "mlflow.db"
    damage(db, how)
    left = db.read_bytes() if db.exists() else None

    code, _, err = cli(project, command, capsys=capsys)

    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 6, err
    assert "make restore" in err
    if how in ("deleted", "emptied"):
        assert "has lost what the ledger" in err and "champion: version 1" in err
        assert f"is {'missing' if how == 'deleted' else 'empty'}" in err
    else:
        assert "is damaged" in err
        assert ("truncated" if how == "truncated" else "not a SQLite database") in err
    # Nothing re-created, migrated or written.
    assert (db.read_bytes() if db.exists() else None) == left


def test_a_fresh_store_beside_the_ledger_is_named(project, capsys):
    """MLflow (or anything else) created a new, empty store: the ledger's champion is gone."""

    (project / "mlflow.db").unlink()
    shutil.rmtree(project / "mlartifacts")
    store_client(project).search_experiments()

    code, _, err = cli(project, "status", capsys=capsys)

    assert code != 0 and "Traceback" not in err
    assert f"registered model {NAME!r} is missing" in err and "make restore" in err


def test_a_lost_champion_version_is_named(project, capsys):

    client = store_client(project)
    client.delete_model_version(NAME, "1")
    code, _, err = cli(project, "status", capsys=capsys)
    assert code != 0 and "Traceback" not in err
    assert f"version 1 of {NAME!r}, the champion, is missing" in err
    assert "the alias 'champion'" in err


def test_register_and_the_flows_stop_before_any_work(project, capsys):
    from tabreg.orchestration.preflight import preflight

    trained(project)
    (project / "mlflow.db").unlink()

    code, _, err = cli(project, "register", capsys=capsys)
    assert code != 0 and "has lost what the ledger" in err and "Traceback" not in err
    with pytest.raises(StoreError, match="has lost what the ledger"):
        preflight(CONFIG, project)  # what the training and retrain flows run first
    assert not (project / "mlflow.db").exists()


def test_register_names_a_training_run_the_store_no_longer_has(project, capsys):
    """No ledger to compare with (a fresh clone, say), and a store replaced after `train`:
    register says which run is missing instead of MLflow's 'Run ... not found' traceback."""
    trained(project)
    (project / CONFIG.registry.ledger).unlink()
    (project / "mlflow.db").unlink()

    code, _, err = cli(project, "register", capsys=capsys)

    assert code != 0 and "Traceback" not in err
    assert f"the training run {'0' * 32} (models/train.json) is not in the MLflow store" in err


def test_decisions_name_their_store_and_other_stores_are_not_judged(project, capsys):
    """A decision taken in another store (a tracking server, say) is not expected here."""
    ledger = project / CONFIG.registry.ledger
    entry = registry.read_ledger(ledger)[-1]
    assert entry["store"] == "sqlite:///mlflow.db"
    entry.update(store="http://tracking.example:5000", challenger="7")
    registry.record(ledger, entry)
    code, _, err = cli(project, "status", capsys=capsys)
    assert code == 0, err

    entry.update(store="sqlite:///mlflow.db", challenger="7", action="promote")
    registry.record(ledger, entry)
    code, _, err = cli(project, "status", capsys=capsys)
    assert code != 0 and "version 7 of 'housing', the champion, is missing" in err


# --- backup and restore ---------------------------------------------------------------------

def serve(root: Path, log: Path):
    """``python -m tabreg serve`` on the project, checking the store every 0.5 s."""
    import os

    from tests.scoring_helpers import start_server

    env = {k: v for k, v in os.environ.items() if k not in PER_MACHINE}
    return start_server(["--params", str(ROOT / "params.yaml"), "--root", str(root)],
                        ["--refresh", "0.5"], cwd=root, env=env, log=log)


def wait_for(check, seconds: float = 60.0):
    import time

    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.25)
    return found


def test_backup_wipe_restore_serves_the_same_champion(project, capsys, caplog, tmp_path):
    import logging

    import httpx

    from tabreg.data import synthetic

    code, out, err = cli(project, "backup", capsys=capsys)
    assert code == 0, err
    made = json.loads(out)
    assert made["aliases"][f"{NAME}@champion"] == "1" and made["artifact_files"] > 0
    assert (Path(made["backup"]) / "manifest.json").is_file()

    (project / "mlflow.db").unlink()  # the whole store: database and artifacts
    shutil.rmtree(project / "mlartifacts")
    assert cli(project, "status", capsys=capsys)[0] != 0

    with caplog.at_level(logging.INFO, logger="tabreg.store.backup"):
        code, out, err = cli(project, "restore", capsys=capsys)
    assert code == 0, err
    restored = json.loads(out)
    assert restored["restored_from"] == made["backup"] and restored["replaced"] == []
    assert restored["aliases"][f"{NAME}@champion"] == "1"
    assert f"champion {NAME} version 1" in caplog.text  # what it restored, for people
    code, out, _ = cli(project, "status", capsys=capsys)
    assert code == 0 and "champion   version 1" in out

    rows = synthetic.generate(20, seed=3)[list(CONFIG.schema.features)]
    payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    expected = helpers.fit_small(CONFIG, rows=600)[0].predict(rows)  # registered as version 1
    process, url = serve(project, tmp_path / "server.log")
    try:
        health = httpx.get(f"{url}/health").json()
        assert health["status"] == "ok" and health["model"]["version"] == "1"
        answer = httpx.post(f"{url}/invocations", json=payload, timeout=30).json()
        assert answer["model"]["version"] == "1"
        assert answer["predictions"] == pytest.approx(list(expected), rel=1e-9)

        # Lost while serving: the server goes on answering, and /health says why it is degraded.
        (project / "mlflow.db").unlink()
        degraded = wait_for(lambda: (r := httpx.get(f"{url}/health")).status_code == 503 and r)
        assert degraded.json()["status"] == "degraded"
        assert "has lost what the ledger" in degraded.json()["registry_error"]
        assert httpx.get(f"{url}/ping").status_code == 200
        assert httpx.post(f"{url}/invocations", json=payload, timeout=30).status_code == 200
        assert not (project / "mlflow.db").exists()  # the server did not re-create it

        assert cli(project, "restore", capsys=capsys)[0] == 0
        wait_for(lambda: httpx.get(f"{url}/health").status_code == 200)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_restore_refuses_newer_data_unless_forced(project, capsys):

    assert cli(project, "backup", capsys=capsys)[0] == 0
    with helpers.isolated_mlflow():
        registry.client(CONFIG, project)  # MLflow's fluent API on this project's store
        helpers.register_by_hand(project, CONFIG, helpers.fit_small(CONFIG, rows=600, seed=4)[0])
        steps.gate(CONFIG, project, trigger="test")

    code, _, err = cli(project, "restore", capsys=capsys)
    assert code != 0 and "Traceback" not in err
    assert "not restored" in err and f"model versions {NAME}/2" in err and "FORCE=1" in err
    assert "1 ledger entry" in err
    client = store_client(project)
    assert registry.get_version(client, NAME, "2") is not None  # untouched

    code, out, err = cli(project, "restore", "--force", capsys=capsys)
    assert code == 0, err
    kept = Path(json.loads(out)["kept_aside"])
    assert (kept / "mlflow.db").is_file() and (kept / "ledger.jsonl").is_file()
    client = store_client(project)
    assert registry.get_version(client, NAME, "2") is None
    assert str(registry.alias_version(client, NAME, registry.CHAMPION).version) == "1"
    assert cli(project, "status", capsys=capsys)[0] == 0


def test_a_damaged_store_is_set_aside_by_restore_and_never_backed_up(project, capsys):
    assert cli(project, "backup", capsys=capsys)[0] == 0
    damage(project / "mlflow.db", "garbage")
    code, _, err = cli(project, "backup", capsys=capsys)
    assert code != 0 and "is damaged" in err
    assert len([p for p in (project / "backups").iterdir()]) == 1  # no second, broken backup

    code, out, err = cli(project, "restore", capsys=capsys)  # no FORCE: nothing readable to lose
    assert code == 0, err
    result = json.loads(out)
    assert "not a SQLite database" in result["damaged_store"]
    assert (Path(result["kept_aside"]) / "mlflow.db").read_bytes() == bytes(range(256)) * 64
    assert cli(project, "status", capsys=capsys)[0] == 0


def test_the_ledger_folds_into_the_champion_of_its_own_model_and_store():
    from tabreg.store.health import ledger_view

    here, there = "sqlite:///mlflow.db", "http://tracking.example:5000"
    entries = [
        {"action": "promote", "model": NAME, "store": here, "challenger": "1", "at": "t1"},
        {"action": "keep champion", "model": NAME, "store": here, "challenger": "2",
         "champion": "1"},
        {"action": "promote", "model": NAME, "store": here, "challenger": "3", "champion": "1"},
        {"action": "promote", "model": NAME, "store": there, "challenger": "9"},  # elsewhere
        {"action": "promote", "model": "other", "store": here, "challenger": "8"},
        {"action": "retrain", "model": NAME, "challenger": "7", "champion": "6"},  # a summary
        {"action": "rollback", "model": NAME, "store": here, "champion": "3", "to": "1",
         "at": "t5"},
    ]
    view = ledger_view(entries, NAME, here)
    assert (view.champion, view.since, view.versions) == ("1", "rollback at t5", {1, 2, 3})
    assert ledger_view(entries, NAME, there).champion == "9"
    legacy = [{k: v for k, v in e.items() if k != "store"} for e in entries[:3]]
    assert ledger_view(legacy, NAME, here).champion == "3"  # before entries named their store
    assert ledger_view([], NAME, here).champion is None


def test_the_training_flow_stops_at_its_start_naming_the_lost_store(project, tmp_path):
    """``make run`` as a user runs it (its own process, a temporary Prefect server)."""
    import os
    import subprocess
    import sys

    (project / "mlflow.db").unlink()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in PER_MACHINE}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED=
               "false", PREFECT_LOGGING_EXTRA_LOGGERS="tabreg")
    done = subprocess.run([sys.executable, "flows/training.py", "--root", str(project),
                           "--params", str(ROOT / "params.yaml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "has lost what the ledger" in done.stderr and "make restore" in done.stderr
    assert not (project / "mlflow.db").exists() and not (project / "data/raw").exists()
