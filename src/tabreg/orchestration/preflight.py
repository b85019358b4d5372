"""Checks made before any work starts, so that a run fails in seconds with one message, not
after an hour of tuning. Both flows call :func:`preflight` before ingest, and the tune step
calls it too (``dvc repro`` has no flow around it).
"""

from __future__ import annotations

from pathlib import Path

from tabreg.config import Config


def preflight(config: Config, root: Path) -> None:
    """Everything that can fail before work starts: the keys ``dvc.yaml`` reads from
    ``params.yaml``, the tracking store, the search space and the training device. Called by
    the flows before ingest and by the tune step."""
    import os

    from tabreg import tuning
    from tabreg.orchestration.dvc_stages import check_interpolation
    from tabreg.services.reachability import check_reachable
    from tabreg.store import health, tracking
    from tabreg.tuning.launch import worker_count

    check_interpolation(root)
    # Every shared service named by configuration answers, or one error names each that
    # does not: in seconds, before an hour of tuning.
    check_reachable(tracking.tracking_uri(config, root), tuning.storage_url(config, root),
                    os.environ.get("PREFECT_API_URL"))
    tracking.check_reachable(tracking.tracking_uri(config, root))
    health.check(config, root)  # a lost or damaged store stops the run here, named
    tuning.check_space(config)
    if config.tune.launcher in ("auto", "local"):  # auto: as local, until Prefect is asked
        worker_count(config.tune.workers, "local", oversubscribe=config.tune.oversubscribe)
    if "mlp" in config.tune.families:
        from tabreg.models.mlp import resolve_device

        resolve_device(config.train.device)
