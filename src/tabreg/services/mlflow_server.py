"""The MLflow tracking server: runs and registry in PostgreSQL, artifacts proxied.

With ``--artifacts-destination`` the server stores artifacts itself and clients upload and
download them through its HTTP API (``mlflow-artifacts:/`` locations), so a client on another
host needs only the server's URL, no shared folder and no cloud credentials.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

STARTUP_TIMEOUT = 180.0  # seconds; migrations on a fresh database take a while on 2 cores


def command(backend_uri: str, artifacts: Path, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow server`` command line: a database backend, proxied artifacts."""
    return [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_uri,
            "--artifacts-destination", str(artifacts.resolve()),
            "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", str(workers)]


def server_env(base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: ``base`` without MLflow's job execution.

    Why: by default ``mlflow server`` also starts a Huey job runner, seven consumer processes
    for MLflow's GenAI jobs (prompt optimisation, trace rollups), which the pipeline never
    submits. Measured idle on 2 cores, they used 21 CPU-seconds a minute, a third of a core,
    around the clock, beside the user's own work."""
    return {**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def health_url(tracking_uri: str) -> str:
    """The tracking server's health endpoint."""
    return tracking_uri.rstrip("/") + "/health"
