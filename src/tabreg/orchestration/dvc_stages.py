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


#: How DVC's status words read in a sentence about a dependency or an output.
_WORDS = {"modified": "changed", "deleted": "is missing", "new": "is new",
          "not in cache": "is not in the cache"}


def _listed(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def describe_changes(stage: str, changes: dict, *, ran_before: bool = True,
                     names: dict[str, str] | None = None) -> str:
    """Why DVC wants ``stage`` to run, as a sentence ("tune: training data changed, running")
    rather than DVC's status dictionary. ``names`` gives readable names to paths
    (``{"data/split/train.parquet": "training data"}``); ``ran_before`` False: the stage has
    no entry in ``dvc.lock`` yet, which is the whole reason."""
    if not changes:
        return f"{stage}: up to date, skipped"
    if not ran_before:
        return f"{stage}: not run before, running"
    names = names or {}
    params, code, inputs, outputs, other = [], [], [], [], []
    for item in changes.get(stage, []):
        if isinstance(item, str):  # "always changed", "changed checksum"
            other.append("its definition in dvc.yaml changed" if "checksum" in item else item)
            continue
        for path, status in item.get("changed deps", {}).items():
            if isinstance(status, dict):  # a params file: {key: status}
                params.extend(sorted(status))
            elif path.endswith((".yaml", ".yml")) and status == "new":
                params.append(path)
            elif path.startswith("src/") or path.endswith(".py"):
                code.append(path)
            else:
                inputs.append(f"{names.get(path, path)} {_WORDS.get(status, status)}")
        for path, status in item.get("changed outs", {}).items():
            outputs.append(f"output {names.get(path, path)} {_WORDS.get(status, status)}")
    reasons = inputs + outputs + other
    if params:
        reasons.append(f"parameters changed ({_listed(params)})")
    if code:
        reasons.append(f"code changed ({_listed(code)})")
    return f"{stage}: {_listed(reasons, 4) or 'out of date'}, running"


def ran_before(root: Path, stage: str) -> bool:
    """Whether ``dvc.lock`` records ``stage`` (it has run here at least once)."""
    import yaml

    lock = root / "dvc.lock"
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    return stage in stages


def record_stage(root: Path, stage: str) -> None:
    """Record the stage's current deps, params and outs in ``dvc.lock`` and cache its outs."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        repo.commit(stage, force=True)


def recorded_md5(root: Path, path: str) -> str | None:
    """DVC's hash of an output as recorded in ``dvc.lock`` (None before its stage ran)."""
    lock = root / "dvc.lock"
    return md5_in_lock(lock.read_text(), path) if lock.exists() else None


def md5_in_lock(text: str, path: str) -> str | None:
    """DVC's hash of output ``path`` in the text of a ``dvc.lock`` (this one, or one read
    from a commit)."""
    import yaml

    stages = (yaml.safe_load(text) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def data_version(root: Path, raw_path: str) -> str | None:
    """The data version: DVC's hash of the raw table."""
    return recorded_md5(root, raw_path)


def check_interpolation(root: Path, params: str = "params.yaml") -> None:
    """Fail, naming each, when ``dvc.yaml`` uses a ``${key}`` that ``params.yaml`` lacks.

    The configuration gives every key a default, so a run through ``python -m tabreg`` would
    work without it; but DVC reads ``params.yaml`` itself, and a missing key fails deep inside
    DVC with a message about templating. Checked before any work, with where to fix it.
    """
    import re

    import yaml

    from tabreg.errors import ConfigError

    pipeline, values = root / "dvc.yaml", root / params
    if not pipeline.is_file() or not values.is_file():
        return
    tree = yaml.safe_load(values.read_text()) or {}
    missing: dict[str, int] = {}
    for number, line in enumerate(pipeline.read_text().splitlines(), start=1):
        for key in re.findall(r"\$\{\s*([\w.]+)\s*\}", line):
            node: object = tree
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                missing.setdefault(key, number)
    if missing:
        listed = "; ".join(f"{key} (dvc.yaml line {line})" for key, line in missing.items())
        raise ConfigError(f"{params} lacks keys that dvc.yaml uses: {listed}. DVC reads them "
                          f"from {params} itself; add them (the project's own {params} has "
                          "every one, with its default value)")
