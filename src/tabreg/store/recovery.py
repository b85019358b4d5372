"""What a killed run leaves behind, cleared when the next one starts.

kill -9 (or a crash, or a power cut) stops a step where it stands: its MLflow runs stay
RUNNING, its claimed Optuna trials stay RUNNING, and the temporary file it was writing (every
output goes through a temporary file beside it, ``tabreg.io``) stays in ``data/raw/`` or
``reports/``. The flows and the model steps call :func:`clean_up` first. It ends only what a
process on this host provably left: a run or trial records its holder (host, pid, start time;
``tabreg.store.owner``) and a temporary file carries its writer's pid in its name. A holder on
another host, or one still alive, is left alone; so is anything that names no holder, except a
temporary file of the older, pid-less form that nobody has touched for an hour.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.store import owner

log = logging.getLogger(__name__)

#: ``.<name>.<12 hex>.<pid>.tmp`` (``tabreg.io.atomic_path``), and its older pid-less form.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}(?:\.(?P<pid>\d+))?\.tmp$")
#: A pid-less temporary file untouched this long is debris: a writer writes as it goes.
PIDLESS_AGE = 3600.0


def _folders(config: Config, root: Path) -> list[Path]:
    """Where the pipeline writes through temporary files (searched recursively)."""
    paths = config.paths
    found = {root / "data", root / "models", root / ".cache", root / paths.reports,
             (root / config.registry.ledger).parent,
             *((root / p).parent for p in (paths.raw, paths.train, paths.test))}
    # a folder inside another is searched with it
    return sorted(f for f in found if f.is_dir() and not any(o in f.parents for o in found))


def stale_temporary_files(config: Config, root: Path, now: float | None = None) -> list[Path]:
    """Temporary files whose writer died (its pid is gone) or, without a pid, that are older
    than :data:`PIDLESS_AGE`."""
    now = time.time() if now is None else now
    stale = []
    for folder in _folders(config, root):
        for path in folder.rglob(".*.tmp"):
            match = _TEMPORARY.match(path.name)
            if match is None or not path.is_file():
                continue
            pid = match["pid"]
            try:
                dead = (not owner.alive({"pid": int(pid)}) if pid
                        else now - path.stat().st_mtime > PIDLESS_AGE)
            except FileNotFoundError:  # its writer just renamed it into place
                continue
            if dead:
                stale.append(path)
    return stale


def fail_dead_trials(config: Config, root: Path) -> dict[str, list[int]]:
    """Fail the trials of every study in the tuning storage whose worker died on this host
    (``tabreg.tuning.study.fail_dead_trials``); study name -> trial numbers. A local storage
    that does not exist yet is not created."""
    import optuna

    from tabreg.tuning import study as shared

    url = shared.storage_url(config, root)
    local = url.removeprefix("journal:") if url.startswith("journal:") else (
        url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None)
    if local is not None and not Path(local).exists():
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = shared.open_storage(url)
    failed = {}
    for name in optuna.get_all_study_names(storage=storage):
        numbers = shared.fail_dead_trials(optuna.load_study(study_name=name, storage=storage))
        if numbers:
            failed[name] = numbers
    return failed


def clean_up(config: Config, root: Path, *, stores: bool = True, trials: bool = True) -> dict:
    """Remove the temporary files dead writers left and (``stores``) fail the MLflow runs and
    (``trials``) the Optuna trials that dead processes left RUNNING; says what it did in one
    log line.

    ``trials=False`` is for the steps after tuning, which read no study: opening the tuning
    storage (and importing Optuna) cost each of them about 1.3 s, and the next tuning sweeps
    whatever a killed study left.

    Best effort: a store it cannot reach or read is reported by the step that needs it.
    """
    from tabreg.store import tracking

    removed = []
    for path in stale_temporary_files(config, root):
        path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(root)))
    done: dict = {"temporary_files": removed, "mlflow_runs": [], "optuna_trials": {}}
    sweeps: list[tuple[str, str, Callable[[Config, Path], Any]]] = (
        [("mlflow_runs", "MLflow runs", tracking.fail_dead_runs)] if stores else [])
    if stores and trials:
        sweeps.append(("optuna_trials", "Optuna trials", fail_dead_trials))
    for key, what, sweep in sweeps:
        try:
            done[key] = sweep(config, root)
        except TabregError:  # unreachable: the step that needs the store says so
            continue
        except Exception as exc:  # noqa: BLE001 - cleaning up must not stop the run
            log.warning("recovery: could not look for %s left running: %s", what,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if removed or done["mlflow_runs"] or done["optuna_trials"]:
        log.warning("recovery: an earlier run was killed; cleaned up %s", _describe(done))
    return done


def _describe(done: dict) -> str:
    parts = []
    if runs := done["mlflow_runs"]:
        parts.append(f"{len(runs)} MLflow run(s) left RUNNING marked FAILED "
                     f"({', '.join(r[:8] for r in runs)})")
    if trials := done["optuna_trials"]:
        parts.append(f"{sum(map(len, trials.values()))} Optuna trial(s) left RUNNING marked "
                     "FAILED (" + "; ".join(f"study {s}: trials {n}"
                                              for s, n in trials.items()) + ")")
    if files := done["temporary_files"]:
        parts.append(f"{len(files)} temporary file(s) removed ({', '.join(files[:5])}"
                     + (", ..." if len(files) > 5 else "") + ")")
    return "; ".join(parts)
