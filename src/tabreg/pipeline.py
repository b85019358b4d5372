"""The bridge between the Prefect flow and DVC.

The flow runs each step in-process (as a Prefect task) but lets DVC decide whether the step is
needed and records what it did, so that after a flow run ``dvc status`` is clean and
``dvc repro`` would do nothing, and after ``dvc repro`` the flow skips every step. The stage
definitions (deps, params, outs) live only in ``dvc.yaml``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


def stage_changes(root: Path, stage: str) -> dict:
    """What DVC finds changed for ``stage`` (empty when the stage is up to date)."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # DVC resolves some paths from the cwd
        return repo.status(targets=[stage])


def record_stage(root: Path, stage: str) -> None:
    """Record the stage's current deps, params and outs in ``dvc.lock`` and cache its outs."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        repo.commit(stage, force=True)


def recorded_md5(root: Path, path: str) -> str | None:
    """DVC's hash of an output as recorded in ``dvc.lock`` (None before its stage ran)."""
    import yaml

    lock = root / "dvc.lock"
    if not lock.exists():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def data_version(root: Path, raw_path: str) -> str | None:
    """The data version: DVC's hash of the raw table."""
    return recorded_md5(root, raw_path)
