"""Run the pipeline's stages in DVC's order and with DVC's memory, whoever drives them.

Each stage asks DVC whether it is up to date (deps, params and outs as in ``dvc.yaml``); if
so it does nothing, otherwise it runs the step in-process and records it in ``dvc.lock``. A
second run with nothing changed therefore recomputes nothing, and afterwards ``dvc status``
is clean. The Prefect flow wraps :func:`run_stage` in a task per stage; the command line
(``python -m tabreg pipeline``) calls :func:`run_pipeline`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tabreg import steps
from tabreg.config import Config
from tabreg.orchestration.dvc_stages import (
    describe_changes,
    ran_before,
    record_stage,
    stage_changes,
)
from tabreg.orchestration.summary import path_names

log = logging.getLogger(__name__)


def run_stage(config: Config, root: Path, name: str,
              logger: logging.Logger | logging.LoggerAdapter = log) -> dict:
    """Run one step unless DVC says its stage is up to date; record it afterwards. Returns
    ``{"stage", "ran", "seconds", "why"}`` and, when it ran, the step's ``result``; each
    decision is logged as a sentence."""
    changes = stage_changes(root, name)
    if not changes:
        logger.info("%s: up to date, skipped", name)
        return {"stage": name, "ran": False, "seconds": 0.0, "why": "up to date"}
    why = describe_changes(name, changes, ran_before=ran_before(root, name),
                           names=path_names(config))
    logger.info("%s", why)
    started = time.perf_counter()
    result = steps.get(name)(config, root)
    seconds = time.perf_counter() - started
    record_stage(root, name)
    logger.info("%s: done in %.2f s", name, seconds)
    return {"stage": name, "ran": True, "seconds": round(seconds, 3), "result": result,
            "why": why.removeprefix(f"{name}: ").removesuffix(", running")}


def prepare(config: Config, root: Path) -> None:
    """Before any stage: fail on a bad setup (configuration, unreachable stores, a missing
    GPU) before work starts, and clean up what a killed run left (runs, trials, temp files)."""
    from tabreg.orchestration.preflight import preflight
    from tabreg.store import recovery

    preflight(config, root)
    recovery.clean_up(config, root)


def run_stages(config: Config, root: Path) -> list[dict]:
    """Every stage, in order, without an orchestrator; a failing stage stops the run."""
    return [run_stage(config, root, name) for name in steps.STEP_NAMES]


def run_pipeline(config: Config, root: Path) -> list[dict]:
    """:func:`prepare`, then every stage."""
    prepare(config, root)
    return run_stages(config, root)
