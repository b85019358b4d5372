"""The Prefect server (API, UI and its services) on PostgreSQL, and Prefect workers.

The server keeps flow runs, deployments and work pools in PostgreSQL (through asyncpg), so it
serves several hosts; a process worker polls one work pool and runs each flow run as a
subprocess of its own Python environment. A worker on another host needs only the same
``PREFECT_API_URL`` (and the tracking and storage URLs its flow runs use), which is why the
workers started here get exactly the environment the user is told to export.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

STARTUP_TIMEOUT = 180.0  # seconds; the first start runs the database migrations


def server_env(base: Mapping[str, str], home: Path, database_url: str) -> dict[str, str]:
    """``base`` with this server's home and database (an asyncpg URL)."""
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home.resolve()),
               PREFECT_API_DATABASE_CONNECTION_URL=database_url,
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def server_command(host: str, port: int) -> list[str]:
    """The ``prefect server start`` command line, analytics off."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host,
            "--port", str(port), "--analytics-off"]


def api_url(host: str, port: int) -> str:
    """The API URL clients use (a wildcard bind address is reached on 127.0.0.1)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{port}/api"


def health_url(prefect_api_url: str) -> str:
    """The Prefect API's health endpoint."""
    return prefect_api_url.rstrip("/") + "/health"


def worker_env(base: Mapping[str, str], home: Path, exports: Mapping[str, str]) -> dict[str, str]:
    """A worker's environment: the exported URLs (its flow runs inherit them)."""
    env = {k: v for k, v in base.items()
           if not k.startswith("PREFECT_") or k == "PREFECT_LOGGING_EXTRA_LOGGERS"}
    env.update(PREFECT_HOME=str(home.resolve()), **exports)
    return env


def worker_command(pool: str, name: str) -> list[str]:
    """A process worker on ``pool``; it never installs packages (the venv has them)."""
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
            "--type", "process", "--name", name, "--install-policy", "never"]


def online_workers(prefect_api_url: str, pool: str) -> set[str]:
    """Names of the pool's workers that the server sees online (from their heartbeats)."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{prefect_api_url.rstrip('/')}/work_pools/{pool}/workers/filter",
        data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            workers = json.load(response)
    except OSError:
        return set()
    return {w["name"] for w in workers if w.get("status") == "ONLINE"}
