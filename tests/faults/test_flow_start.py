"""Two flows started together on a fresh Prefect home: each one's temporary server creates
the database at start, and two migrations at once killed one server with a wall of
"duplicate column" tracebacks (or left the database half made). The first start on a home is
serialised (``tabreg.orchestration.flowrun``); both flows run, and each ends with its own one
message."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_two_flows_start_together_on_a_fresh_prefect_home(tmp_path):
    home = tmp_path / "prefect-home"  # does not exist yet: the first start makes everything
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    # A real flow that starts, then fails on its first line (a missing params file): the
    # server start is what is under test, and the failure is one message.
    command = [sys.executable, "flows/training.py", "--root", str(tmp_path),
               "--params", "missing.yaml"]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=400)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert "Traceback" not in output and "Application startup failed" not in output, output
        assert "Beginning flow run" in output, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {tmp_path / 'missing.yaml'}: configuration file not found"]
        assert run.returncode == 2
    assert (home / "prefect.db").exists()
