"""kill -9 mid-step: the MLflow run and the Optuna trial the killed process held stay RUNNING
and its temporary file stays in ``data/raw/``; the next start (``tabreg.store.recovery``, called by
both flows and the model steps) marks them FAILED and removes the file, saying so in one log
line, and leaves alone what a live process or another host holds."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tabreg.config import load_config
from tabreg.io import atomic_path
from tabreg.store import recovery, tracking
from tabreg.tuning import study as shared

#: Opens an MLflow run, claims an Optuna trial and starts writing the raw table, then waits
#: to be killed.
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import optuna
    from tabreg.store import tracking
    from tabreg.config import load_config
    from tabreg.io import atomic_path
    from tabreg.tuning import study as shared

    root = Path(sys.argv[1])
    config = load_config(root / "params.yaml", env={})
    tracking.start(config, root)
    storage = shared.open_storage(shared.storage_url(config, root))
    study = optuna.create_study(study_name="killed", storage=storage)
    study.enqueue_trial({})
    shared.claim(study, 1)
    with tracking.start_run(run_name="killed") as run, \\
            atomic_path(root / config.paths.raw) as tmp:
        tmp.write_bytes(b"half a table")
        print(run.info.run_id, flush=True)
        time.sleep(600)
""")


def _kill_a_holder(root: Path) -> str:
    """Start the holder, wait until it holds everything, kill -9 it; its run id."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        run_id = holder.stdout.readline().strip()
        assert run_id, holder.stderr.read()[-2000:]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    return run_id


def test_the_next_start_clears_what_a_killed_run_left(make_project, caplog):
    import mlflow
    import optuna

    root = make_project(rows=300)
    config = load_config(root / "params.yaml", env={})
    killed = _kill_a_holder(root)
    raw_dir = (root / config.paths.raw).parent
    (debris,) = raw_dir.glob(".*.tmp")
    client = mlflow.MlflowClient(tracking.tracking_uri(config, root))
    assert client.get_run(killed).info.status == "RUNNING"  # the fault: RUNNING for ever

    # What is alive, or not provably ours, stays: this process's run and temporary file, and
    # a run held on another host.
    tracking.start(config, root)
    with tracking.start_run(run_name="alive") as alive, \
            atomic_path(root / config.paths.raw) as ours:
        ours.write_bytes(b"being written")
        elsewhere = client.create_run(alive.info.experiment_id, run_name="elsewhere", tags={
            tracking.OWNER_TAG: json.dumps({"host": "other-host", "pid": 1, "since": 0})})
        with caplog.at_level(logging.WARNING, logger="tabreg.store.recovery"):
            done = recovery.clean_up(config, root)
        assert ours.exists() and client.get_run(alive.info.run_id).info.status == "RUNNING"

    assert client.get_run(killed).info.status == "FAILED"
    assert "died" in client.get_run(killed).data.tags["tabreg.fail_reason"]
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"
    assert not debris.exists()
    study = optuna.load_study(study_name="killed",
                              storage=shared.open_storage(shared.storage_url(config, root)))
    assert [t.state.name for t in study.trials] == ["FAIL"]
    assert done == {"temporary_files": [str(debris.relative_to(root))],
                    "mlflow_runs": [killed], "optuna_trials": {"killed": [0]}}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "1 MLflow run(s) left RUNNING marked FAILED" in line
    assert "1 Optuna trial(s) left RUNNING marked FAILED (study killed: trials [0])" in line
    assert f"1 temporary file(s) removed ({debris.relative_to(root)})" in line

    # Nothing left to do: nothing said.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tabreg.store.recovery"):
        assert not any(recovery.clean_up(config, root).values())
    assert not caplog.records


def test_a_step_run_from_the_command_line_removes_a_dead_writers_file(make_project, caplog):
    from tabreg import cli

    root = make_project(rows=300)
    config = load_config(root / "params.yaml", env={})
    raw = root / config.paths.raw
    raw.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    debris = raw.with_name(f".{raw.name}.0123456789ab.{dead}.tmp")
    debris.write_bytes(b"half")
    old = raw.with_name(f".{raw.name}.ba9876543210.tmp")  # from before writers named a pid
    old.write_bytes(b"half")
    os.utime(old, (0, 0))
    with caplog.at_level(logging.WARNING, logger="tabreg.store.recovery"):
        assert cli.run(["--root", str(root), "-q", "ingest"]) == 0
    assert not debris.exists() and not old.exists() and raw.exists()
    assert "2 temporary file(s) removed" in caplog.text
