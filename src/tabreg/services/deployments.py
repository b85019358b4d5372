"""The work pool and the deployments the stack registers on its Prefect server.

``tune-worker`` is the flow (``flows/tune_worker.py:tune_worker``) whose runs pull trials from
the shared Optuna study; deployed on the process pool, every worker of that pool (on this host
or another) can run it, so adding a worker adds tuning throughput with no code change.
The deployment's source is this project folder (workers on other hosts then need the clone at
the same path) or ``services.deploy_source``, a git URL each worker clones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TUNE_WORKER_ENTRYPOINT = "flows/tune_worker.py:tune_worker"
TUNE_WORKER_DEPLOYMENT = "tune-worker"


def _settings(prefect_api_url: str):
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    return temporary_settings(updates={PREFECT_API_URL: prefect_api_url})


def ensure_pool(prefect_api_url: str, pool: str) -> bool:
    """Create the process work pool with the process worker's default job template unless it
    exists; return whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with _settings(prefect_api_url), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            return False
    return True


def deploy(prefect_api_url: str, source: str, entrypoint: str, name: str, pool: str,
           **kwargs) -> str:
    """Deploy the flow at ``entrypoint`` (``path.py:function``, relative to ``source``) on
    ``pool``; return the deployment's full name (``flow/deployment``)."""
    import contextlib
    import io

    from prefect import flow

    # deploy() prints a table and advice meant for an interactive session: the stack says
    # what it deployed itself.
    with _settings(prefect_api_url), contextlib.redirect_stdout(io.StringIO()):
        loaded: Any = flow.from_source(source=source, entrypoint=entrypoint)  # sync here
        loaded.deploy(name=name, work_pool_name=pool, print_next_steps=False, build=False,
                      push=False, ignore_warnings=True, **kwargs)
    return f"{loaded.name}/{name}"


def deploy_tune_worker(prefect_api_url: str, root: Path, pool: str,
                       source: str | None = None) -> str | None:
    """Deploy ``tune-worker`` when the project has its flow; None (and nothing deployed)
    when ``flows/tune_worker.py`` does not exist in ``root``."""
    if not (root / TUNE_WORKER_ENTRYPOINT.split(":")[0]).exists():
        return None
    return deploy(prefect_api_url, source or str(root.resolve()), TUNE_WORKER_ENTRYPOINT,
                  TUNE_WORKER_DEPLOYMENT, pool,
                  description="runs trials of a shared Optuna study until its budget is spent")
