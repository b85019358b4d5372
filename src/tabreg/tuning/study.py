"""The shared study: the only thing tuning workers have in common.

Workers on one machine or on many coordinate through the Optuna storage alone (a journal file
locally, PostgreSQL across hosts). The study carries everything a worker needs and checks:

* the resolved configuration, so every worker scores the same space the same way;
* the data version (md5 of the training split) and the code version (a hash of this package),
  so a worker with other data or other code is refused instead of mixing trials;
* the budget, as trials created up front in the WAITING state, with their family fixed by
  ``tune.family_weights`` (without weights, only the first trial of each family): a worker
  claims one atomically, so the budget is exact however many workers run, and no trial
  number runs twice;
* the time guard, as a deadline after which workers claim nothing more.

A worker that dies leaves its trial RUNNING; :func:`fail_dead_trials` marks it failed, by
Optuna's heartbeat on a database, and by the process table for workers on this host.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import time
import urllib.parse
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tabreg.config import Config
from tabreg.errors import ConfigError, TabregError
from tabreg.store import owner

FINISHED = ("COMPLETE", "PRUNED", "FAIL")
ATTR_CONFIG = "tabreg.config"
ATTR_DATA = "tabreg.data_version"
ATTR_CODE = "tabreg.code_version"
ATTR_BUDGET = "tabreg.budget"
ATTR_DEADLINE = "tabreg.deadline"
ATTR_WORKER = "tabreg.worker"  # a trial's system attribute: who runs it
ATTR_OOF = "oof"  # a trial's user attribute: its out-of-fold predictions, for the blend
#: Heartbeat of database storages: a trial whose worker has been silent for GRACE seconds is
#: failed by the next worker that looks.
HEARTBEAT_INTERVAL, GRACE = 20, 120


class VersionMismatch(TabregError):
    """A worker's data or code differs from the study's."""


def storage_url(config: Config, root: Path) -> str:
    """``tune.storage`` (or ``OPTUNA_STORAGE``); by default a journal file in the project,
    which several worker processes on this machine share safely (SQLite does not)."""
    return config.tune.storage or f"journal:{(root / 'optuna.journal').resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password:
        netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
        return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))
    return url


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``: ``journal:<path>``, ``sqlite:///<path>`` or a database
    URL such as ``postgresql://user:pw@host/db``; an unreachable database fails here, named."""
    import optuna

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"Optuna storage {url}: folder {path.parent} does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    engine: dict[str, Any] = {"pool_pre_ping": True}  # servers drop idle connections
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_INTERVAL,
                                              grace_period=GRACE, engine_kwargs=engine)
    except Exception as exc:  # sqlalchemy's errors: bad URL, unreachable server, no driver
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Optuna storage {redact(url)} cannot be reached ({reason}); start "
                          "it (make services) or set tune.storage / OPTUNA_STORAGE") from None


def code_version() -> str:
    """A hash of this package's sources: workers must run the code the study was made with."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def check_versions(study: Any, data_version: str) -> None:
    """Refuse to work on a study made from other data or other code (both versions named)."""
    attrs = study.user_attrs
    theirs, ours = attrs.get(ATTR_DATA), data_version
    if theirs != ours:
        raise VersionMismatch(
            f"study {study.study_name} was made from training data {theirs}, this worker has "
            f"{ours}: check out the same data version (dvc pull) before joining it")
    theirs, ours = attrs.get(ATTR_CODE), code_version()
    if theirs != ours:
        raise VersionMismatch(
            f"study {study.study_name} was made by code version {theirs}, this worker runs "
            f"{ours}: check out the same commit of the project before joining it")


def ensure_budget(study: Any, budget: int, schedule: list[str | None]) -> int:
    """Create WAITING trials up to ``budget`` trials in all, trial ``k`` with the family
    ``schedule[k]`` fixed (None: the sampler picks; see ``space.family_schedule``).
    Returns how many trials of the budget are still to run."""
    existing = len(study.get_trials(deepcopy=False))
    for number in range(existing, budget):
        family = schedule[number] if number < len(schedule) else None
        study.enqueue_trial({"family": family} if family is not None else {})
    return sum(1 for t in study.get_trials(deepcopy=False, states=_states("WAITING"))
               if t.number < budget)


def _states(*names: str) -> tuple[Any, ...]:
    from optuna.trial import TrialState

    return tuple(TrialState[name] for name in names)


def claim(study: Any, budget: int) -> Any | None:
    """Atomically take the lowest-numbered WAITING trial of the budget (None: none left).

    The storage's compare-and-set (WAITING to RUNNING) decides between workers that try the
    same trial at once, so each trial is run by exactly one worker.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    storage = study._storage  # the study's own (cached) storage, as Optuna's ask() uses it
    waiting = sorted(study.get_trials(deepcopy=False, states=_states("WAITING")),
                     key=lambda t: t.number)
    for trial in waiting:
        if trial.number >= budget:
            break
        try:
            if storage.set_trial_state_values(trial._trial_id, state=_states("RUNNING")[0]):
                storage.set_trial_system_attr(trial._trial_id, ATTR_WORKER, worker_identity())
                return trial
        except UpdateFinishedTrialError:
            continue
    return None


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: host, pid and the process's start time (a reused pid differs)."""
    return owner.identity()


def has_heartbeat(storage: Any) -> bool:
    """Whether the storage records trial heartbeats (database storages; not the journal)."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def fail_dead_trials(study: Any) -> list[int]:
    """Fail the RUNNING trials whose worker died, so they leave no hole; return their numbers.

    Database storages: Optuna's heartbeat (no beat for ``GRACE`` seconds). Every storage:
    trials claimed on this host by a process that no longer exists.
    """
    import optuna

    failed: list[int] = []
    running = {t.number for t in study.get_trials(deepcopy=False, states=_states("RUNNING"))}
    if has_heartbeat(study._storage):
        with warnings.catch_warnings():  # marked experimental since 2.9, and what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now_running = {t.number for t in
                       study.get_trials(deepcopy=False, states=_states("RUNNING"))}
        failed += sorted(running - now_running)
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=_states("RUNNING")):
        worker = trial.system_attrs.get(ATTR_WORKER)
        if not owner.dead_here(worker):
            continue
        storage = study._storage
        reason = f"its worker (pid {worker.get('pid')} on {host}) died"
        try:
            storage.set_trial_system_attr(trial._trial_id, "fail_reason", reason)
            if storage.set_trial_state_values(trial._trial_id, state=_states("FAIL")[0]):
                failed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return failed


def deadline_passed(study: Any, now: float | None = None) -> bool:
    """Whether the study's time guard (``tune.timeout``) has fired."""
    deadline = study.user_attrs.get(ATTR_DEADLINE)
    return deadline is not None and (time.time() if now is None else now) >= deadline


def encode_oof(values: np.ndarray) -> str:
    """Out-of-fold predictions as a compact string (float32, zlib, base64): they travel
    through the storage, so the blend can be built whichever host ran the trial."""
    raw = np.asarray(values, dtype="<f4").tobytes()
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def decode_oof(text: str) -> np.ndarray:
    """Inverse of :func:`encode_oof` (float64, for the blend's arithmetic)."""
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4").astype(float)


def trial_record(t: Any) -> dict:
    """A finished or running trial as written to ``reports/tuning/trials.json``."""
    return {"number": t.number, "state": t.state.name, "value": t.value,
            "family": t.params.get("family"), "params": t.params,
            "seconds": t.duration.total_seconds() if t.duration else None,
            "started": t.datetime_start.timestamp() if t.datetime_start else None,
            "ended": t.datetime_complete.timestamp() if t.datetime_complete else None,
            "worker": (t.system_attrs.get(ATTR_WORKER) or {}).get("host"),
            "fail_reason": t.system_attrs.get("fail_reason")}
