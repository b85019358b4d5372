"""No traceback reaches a user for a fault of input or environment: through ``python -m
tabreg``, ``make run`` (``flows/training.py``) and ``make retrain`` (``flows/retrain.py``)
each ends with one ``error:`` message and a non-zero exit; ``-v`` adds the traceback. The
flows' failures are still recorded in Prefect, only not dumped on the console; Great
Expectations' import chatter does not precede a validation error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tabreg import cli
from tabreg.data import batches, synthetic
from tests.conftest import ROOT


def _one_error(err: str) -> str:
    """The one message: an ``error:`` line first among the lines that say something."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return err[err.index("error:"):]


def _bad_batch(root: Path) -> Path:
    path = root / "data/landing/2026-11-01.csv"
    synthetic.write_csv(batches.make_batch(300, seed=21, corrupt="out-of-range"), path)
    return path


@pytest.mark.parametrize("fault", ["missing source", "bad params key", "unreachable tracking",
                                   "unwritable output"])
def test_the_command_line_says_one_thing(fault, make_project, monkeypatch, capsys):
    root = make_project(rows=300)
    args, expected, code = ["ingest"], "", 1
    if fault == "missing source":
        monkeypatch.setenv("DATA_SOURCE", str(root / "nowhere.tgz"))
        expected = f"error: data source {root / 'nowhere.tgz'} not found"
    elif fault == "bad params key":
        tree = yaml.safe_load((root / "params.yaml").read_text())
        tree["split"]["test_sise"] = 0.3
        (root / "params.yaml").write_text(yaml.safe_dump(tree))
        expected, code = "split.test_sise: unknown key", 2
    elif fault == "unreachable tracking":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
        args, code = ["status"], 2
        expected = "error: MLflow tracking server http://127.0.0.1:9 cannot be reached"
    else:  # the environment, not our input: an OSError is one line too
        (root / "a-file").write_text("")
        args = ["generate", "--rows", "10", "--out", str(root / "a-file/out.csv")]
        expected = f"error: File exists: {root / 'a-file'}"
    assert cli.run(["--root", str(root), "-q", *args]) == code
    assert expected in _one_error(capsys.readouterr().err)


def test_verbose_adds_the_traceback(make_project, monkeypatch, capsys):
    root = make_project(rows=300)
    monkeypatch.setenv("DATA_SOURCE", str(root / "nowhere.tgz"))
    assert cli.run(["--root", str(root), "-q", "-v", "ingest"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "SourceError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: data source")


def test_a_validation_error_comes_without_library_chatter(make_project):
    """In a fresh process, as a user meets it: Great Expectations logged some 230 lines
    ("Skipping registering function ...") as it was imported, before the message."""
    root = make_project(rows=300)
    bad = _bad_batch(root)
    done = subprocess.run([sys.executable, "-m", "tabreg", "--root", str(root), "check-file",
                           str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {bad}: suite batch: 1 of "), done.stderr[:2000]
    assert "latitude" in done.stderr and len(done.stderr.splitlines()) < 5, done.stderr


def test_the_flows_say_one_thing(make_project, tmp_path):
    """``make run`` with a missing source and ``make retrain`` with a bad batch, as a user
    runs them (processes of their own, started together on one Prefect home)."""
    first = make_project(rows=300, git=True)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    bad = _bad_batch(second)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOGGING_EXTRA_LOGGERS="tabreg",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    runs = [subprocess.Popen([sys.executable, f"flows/{flow}.py", "--root", str(root)],
                             cwd=ROOT, env={**env, **extra}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for flow, root, extra in (
                ("training", first, {"DATA_SOURCE": str(first / "nowhere.tgz")}),
                ("retrain", second, {}))]
    (out, err), (out2, err2) = (run.communicate(timeout=400) for run in runs)
    assert [run.returncode for run in runs] == [1, 1]

    assert "Beginning flow run" in err  # the flow ran, and failed in its first stage
    assert _one_error(err).startswith(f"error: data source {first / 'nowhere.tgz'} not found")
    message = _one_error(err2)
    assert message.startswith("error: 1 new batch(es) rejected by the batch contract")
    assert bad.name in message and "latitude" in message
    assert "Finished in state Failed" not in out + err + out2 + err2


def test_prefect_still_records_the_failure(make_project, monkeypatch, prefect_api):
    """The console shows one message; the flow run itself is Failed, with the error."""
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.training import main as training

    root = make_project(rows=300, git=True)
    monkeypatch.setenv("DATA_SOURCE", str(root / "nowhere.tgz"))
    assert training(["--root", str(root)]) == 1

    async def last_run():
        async with get_client() as client:
            (run,) = await client.read_flow_runs(limit=1, sort="START_TIME_DESC")
            return run

    run = asyncio.run(last_run())
    assert run.state.is_failed() and "nowhere.tgz" in run.state.message


def test_a_params_file_without_a_key_dvc_reads_is_named_before_any_work(make_project):
    """The configuration has a default for every path, but DVC reads ``params.yaml`` itself:
    a user's file without ``paths.model`` would fail deep inside DVC's templating."""
    root = make_project(rows=300)
    tree = yaml.safe_load((root / "params.yaml").read_text())
    del tree["paths"]["model"]
    (root / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "tabreg", "--root", str(root), "pipeline"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 2  # a configuration error
    message = _one_error(done.stderr)
    line = next(n for n, text in enumerate((root / "dvc.yaml").read_text().splitlines(), 1)
                if "${paths.model}" in text)
    assert f"params.yaml lacks keys that dvc.yaml uses: paths.model (dvc.yaml line {line})" \
        in message, message
    assert not (root / "data/raw").exists()  # nothing ran
