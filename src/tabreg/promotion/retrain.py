"""The pieces of the retrain-and-promote flow that are not the training pipeline itself.

What is new (batches in the landing folder that were never ingested, by the landing record
that every entry point keeps; a source whose checksum changed; or rows already ingested, by
``python -m tabreg ingest`` or ``dvc repro``, that no judged model was trained on), how many of
the new rows the raw table does not hold yet, whether each new batch
honours the batch contract (``tabreg.data.landing``: a rejected batch is moved to the
quarantine folder, with its report, so it is neither ingested nor retried), how far the new rows
drift from the training reference, whether that is reason enough to retrain, and a lock so that
two retrain runs never overlap; :func:`retrain` orders them around a training run.
``flows/retrain.py`` runs it with Prefect tasks and the training flow, ``python -m tabreg
retrain`` with the plain steps.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tabreg.config import Config
from tabreg.data.landing import (  # noqa: F401 - the flow's names for them
    BatchCheck,
    BatchRejected,
    check_batches,
    quarantine,
    read_record,
)
from tabreg.errors import TabregError
from tabreg.io import file_md5, write_json

LOCK_FILE = ".retrain.lock"
log = logging.getLogger(__name__)


class RetrainBusy(TabregError):
    """Another retrain run holds the lock."""

    exit_code = 3


@dataclass(frozen=True)
class NewData:
    batches: list[Path] = field(default_factory=list)
    source_changed: bool = False
    first_run: bool = False
    #: Why the raw table holds rows no judged model was trained on (see :func:`unmodelled`).
    unmodelled: str | None = None

    @property
    def found(self) -> bool:
        return (bool(self.batches) or self.source_changed or self.first_run
                or self.unmodelled is not None)

    def describe(self) -> str:
        parts = [f"{len(self.batches)} new batch file(s)"] if self.batches else []
        if self.source_changed:
            parts.append("a new source checksum")
        if self.first_run:
            parts.append("no data ingested yet")
        if self.unmodelled:
            parts.append(self.unmodelled)
        return ", ".join(parts) or "no new data"


def detect_new_data(config: Config, root: Path) -> NewData:
    """The landing files not yet ingested in their current content (by the landing record,
    which every entry point keeps), and whether the source checksum changed since the last
    ingest report."""
    from tabreg.data.ingest import landing_files

    report_path = root / config.paths.reports / "ingest.json"
    landing = landing_files(root / config.data.landing_dir)
    if not report_path.exists():
        return NewData(landing, first_run=True)
    report = json.loads(report_path.read_text())
    reported = {b["name"] for b in report.get("batches", [])}
    record = read_record(config, root)

    def ingested(path: Path) -> bool:
        entry = record.get(path.name)
        if entry is None:  # met before the record existed: the report is all there is
            return path.name in reported
        return entry.get("status") == "ingested" and entry.get("md5") == file_md5(path)

    return NewData([p for p in landing if not ingested(p)],
                   source_changed=report.get("sha256") != config.data.sha256,
                   unmodelled=unmodelled(config, root))


def unmodelled(config: Config, root: Path) -> str | None:
    """Why the raw table holds data that no model the gate judged was trained on, or None.

    The gate's last decision (``reports/promotion.json``) names the data version its
    challenger was trained on; a raw table with another hash was ingested since, by an entry
    point other than this flow (``python -m tabreg ingest``, ``dvc repro ingest``), whose
    batches are therefore no longer new in the landing record, but are new to every model.
    None too when that cannot be told (a decision from before data versions were recorded).
    """
    from tabreg.steps.register import read_decision

    raw = root / config.paths.raw
    if not raw.exists():
        return None
    decision = read_decision(config, root)
    if decision is None:
        return f"{config.paths.raw} was ingested but no model was judged on it yet"
    judged = decision.get("data_version")
    if not judged or judged == "unrecorded":
        return None
    current = file_md5(raw)
    if current == judged:
        return None
    return (f"{config.paths.raw} changed since the last judged model was trained (data version "
            f"{judged[:8]} -> {current[:8]}: rows ingested outside the retrain flow)")


def count_new_rows(config: Config, root: Path, frames: dict[str, pd.DataFrame]
                   ) -> tuple[int, int]:
    """(distinct rows of the accepted batches that the raw table does not hold yet, rows in
    the batches): a batch whose rows were all ingested before adds nothing to learn from."""
    from tabreg.config import ROW_ID

    total = sum(len(frame) for frame in frames.values())
    if not frames:
        return 0, 0
    ids = set(pd.concat([frame[ROW_ID] for frame in frames.values()], ignore_index=True))
    raw = root / config.paths.raw
    if raw.exists():
        ids -= set(pd.read_parquet(raw, columns=[ROW_ID])[ROW_ID])
    return len(ids), total


def drift(config: Config, root: Path, current: pd.DataFrame) -> dict | None:
    """Drift of ``current`` against the training split (None before any split exists)."""
    from tabreg.promotion.drift import drift_report

    train_path = root / config.paths.train
    if not train_path.exists() or current.empty:
        return None
    reference = pd.read_parquet(train_path, columns=list(config.schema.features))
    report = drift_report(reference, current, config.schema.numeric,
                          config.schema.categorical, config.retrain.drift)
    write_json(report, root / config.paths.reports / "drift.json")
    return report


def should_retrain(config: Config, new: NewData, new_rows: int, drift_level: str | None,
                   trigger: str, batch_rows: int | None = None) -> tuple[bool, str]:
    """Whether the new data justifies a retrain, and why (or why not). ``new_rows`` counts
    only rows the raw table does not hold yet (of ``batch_rows`` in the new batches)."""
    from tabreg.promotion.drift import LEVELS

    if new.first_run or new.source_changed or new.unmodelled:
        return True, new.describe()
    if new_rows == 0:  # nothing to learn from, whatever the drift of rows already seen
        held = f"all {batch_rows} rows" if batch_rows else "their rows"
        return False, (f"the new batch file(s) add no new rows: {held} are already in the "
                       f"raw table; nothing to retrain on")
    wanted = config.retrain.drift.retrain_level
    drifted = drift_level is not None and LEVELS.index(drift_level) >= LEVELS.index(wanted)
    if trigger == "monitor":  # the served traffic said act: any new rows are worth a model
        return True, f"monitoring said act, and {new_rows} new rows arrived"
    if trigger == "drift":
        if drifted:
            return True, f"drift is {drift_level} (retrain.drift.retrain_level: {wanted})"
        return False, f"drift is {drift_level or 'unknown'}, below {wanted}: left for the " \
                      "scheduled retrain"
    if new_rows >= config.retrain.min_new_rows:
        held = (f" ({batch_rows - new_rows} more already in the raw table)"
                if batch_rows and batch_rows > new_rows else "")
        return True, f"{new_rows} new rows{held}"
    if drifted:
        return True, f"only {new_rows} new rows, but drift is {drift_level}"
    return False, (f"{new_rows} new rows, fewer than retrain.min_new_rows = "
                   f"{config.retrain.min_new_rows}; they wait for more")


def _asked_by_monitor(config: Config, trigger: str) -> list[str]:
    """What a retrain that monitoring asked for needs when no data has come."""
    if trigger != "monitor":
        return []
    return [f"monitoring asked for a retrain, but a new model needs new labelled data: label "
            f"the rows in {config.paths.monitoring}/to_label.csv (or others like the window's) "
            f"and drop them, as a batch with the training columns, into "
            f"{config.data.landing_dir}/"]


def record(config: Config, root: Path, **entry: Any) -> dict:
    """One line of the decision ledger about this model name."""
    from tabreg.promotion import registry

    return registry.record(root / config.registry.ledger,
                           {"model": config.registry.model_name, **entry})


def screen_batches(config: Config, root: Path, new: NewData) -> BatchCheck:
    """Check each new batch against the batch contract; rejected ones are quarantined and
    recorded, and the run stops naming them (:class:`BatchRejected`)."""
    from tabreg.data import landing

    checked = landing.screen(config, root, new.batches, by="retrain")
    if checked.rejected:
        record(config, root, trigger="retrain", action="reject batch",
               files=sorted(checked.rejected), quarantine=str(checked.where),
               reasons=[f"{name}: {why.splitlines()[0]}"
                        for name, why in checked.rejected.items()])
    checked.refuse()
    return checked


def new_data_drift(config: Config, root: Path, new: NewData, checked: BatchCheck
                   ) -> dict | None:
    """Drift of the new rows (accepted batches, and a changed source) against the training
    split; None on the first run, or when only rows ingested before this run are new."""
    from tabreg.steps.ingest import read_source

    if new.first_run:
        return None
    frames = list(checked.accepted.values())
    if new.source_changed:
        frames.append(read_source(config, root))
    if not frames:
        return None
    return drift(config, root,
                 pd.concat(frames, ignore_index=True)[list(config.schema.features)])


def push_data(root: Path) -> str:
    """Push the DVC-tracked outputs (the new data version among them) to the remote."""
    import contextlib

    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        if not repo.config.get("core", {}).get("remote"):
            return "no DVC remote configured: data versioned in the local cache"
        pushed = repo.push()
    return f"pushed {pushed} file(s) to the DVC remote"


def after_training(config: Config, root: Path, ran: list[str], trigger: str,
                   reasons: list[str], **facts: Any) -> dict:
    """Record the outcome of a retrain with the gate's decision on the model this run
    trained: none when the run did not reach the gate (DVC found ``register`` up to date),
    never an earlier run's."""
    from tabreg.steps.register import read_decision, trained_run_id

    decision = (read_decision(config, root, run_id=trained_run_id(config, root))
                if "register" in ran else None)
    if decision is None:
        reasons.append("no gate decision: the training flow registered no new model (its "
                       "stages were up to date)")
    decision = decision or {}
    return record(config, root, trigger=trigger, action="retrain", reasons=reasons, ran=ran,
                  **facts, decision=decision.get("action"),
                  challenger=decision.get("challenger"), champion=decision.get("champion"))


def log_outcome(config: Config, root: Path, outcome: dict, drift: dict | None) -> None:
    """The outcome (and the drift measured) as an MLflow run of kind ``retrain``."""
    import mlflow

    from tabreg.store import tracking

    tracking.start(config, root)
    with tracking.start_run(run_name=f"retrain-{outcome['action'].replace(' ', '-')}",
                            tags={"kind": "retrain", "outcome": outcome["action"],
                                  "trigger": outcome["trigger"]}):
        mlflow.log_dict(outcome, "retrain.json")
        if drift:
            mlflow.log_metrics({f"psi.{k}": v["psi"] for k, v in drift["features"].items()})
            mlflow.log_metric("drift_max_psi", drift["max_psi"])
            mlflow.set_tag("drift_level", drift["level"])
            mlflow.log_dict(drift, "drift.json")


@dataclass(frozen=True)
class Hooks:
    """How a driver runs the steps that it shows as its own units of work: the Prefect flow
    passes its tasks and its training flow, the command line passes the plain functions and
    the pipeline run in-process. ``train`` returns the names of the stages that ran."""

    train: Callable[[], list[str]]
    screen: Callable[[Config, Path, NewData], BatchCheck] = screen_batches
    measure: Callable[[Config, Path, NewData, BatchCheck], dict | None] = new_data_drift
    push: Callable[[Path], str] = push_data


def retrain(config: Config, root: Path, trigger: str, hooks: Hooks,
            logger: logging.Logger | logging.LoggerAdapter | None = None
            ) -> tuple[dict, dict | None]:
    """One retrain run: look for new data, screen it, measure its drift, decide, train and
    let the gate judge; every outcome (skip, retrain, fail) is recorded in the ledger and
    in MLflow. Returns the ledger entry and the drift measured (None when not measured).

    ``trigger="drift"`` retrains only when the new rows drift enough. A rejected batch raises
    :class:`BatchRejected` after it is quarantined and recorded; a failed training is
    recorded as ``fail`` before its error goes on. Two runs never overlap (the project lock).
    """
    from tabreg.orchestration.stage_run import prepare

    logger = logger or log
    with exclusive(root, config.retrain.lock_timeout):
        prepare(config, root)
        new = detect_new_data(config, root)
        if not new.found:
            outcome = record(config, root, trigger=trigger, action="skip",
                             reasons=["no new data", *_asked_by_monitor(config, trigger)])
            log_outcome(config, root, outcome, None)
            logger.info("retrain: skipped, no new data")
            return outcome, None
        logger.info("retrain: %s", new.describe())
        checked = hooks.screen(config, root, new)
        measured = hooks.measure(config, root, new, checked)
        rows, batch_rows = count_new_rows(config, root, checked.accepted)
        level = measured["level"] if measured else None
        go, why = should_retrain(config, new, rows, level, trigger, batch_rows)
        drift_note = (f"drift {measured['level']} (max PSI {measured['max_psi']:.3f} on "
                      f"{measured['worst_feature']})" if measured else "no drift reference")
        facts = {"new_rows": rows, "batch_rows": batch_rows}
        if not go:
            outcome = record(config, root, trigger=trigger, action="skip",
                             reasons=[why, drift_note], **facts)
            logger.info("retrain: skipped: %s", why)
        else:
            outcome = _train_and_gate(config, root, trigger, [why, drift_note], hooks, facts)
            logger.info("retrain: %s; gate: %s", why, outcome["decision"] or "did not judge")
        log_outcome(config, root, outcome, measured)
        return outcome, measured


def _train_and_gate(config: Config, root: Path, trigger: str, reasons: list[str],
                    hooks: Hooks, facts: dict[str, Any]) -> dict:
    try:
        ran = hooks.train()
    except Exception as exc:
        record(config, root, trigger=trigger, action="fail", **facts, reasons=[
            *reasons, f"the training flow failed: {(str(exc) or type(exc).__name__)[:300]}"])
        raise
    reasons.append(hooks.push(root))
    return after_training(config, root, ran, trigger, reasons, **facts)


@contextmanager
def exclusive(root: Path, timeout: float) -> Iterator[None]:
    """Hold the project's retrain lock; wait up to ``timeout`` seconds, then fail clearly.

    Hand-written rather than ``filelock``: the holder (pid and start time) is written into
    the locked file, so a second run's message says who holds the lock and since when.

    An OS lock (flock) on a file in the project: released by the kernel if the holder dies,
    so a crashed run never blocks the next one. It serialises runs on one host; across hosts,
    the deployment's concurrency limit does the same.
    """
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                    raise RetrainBusy(
                        f"another retrain run is in progress ({holder or 'holder unknown'}; "
                        f"lock {path}); waited {timeout:g} s (retrain.lock_timeout). "
                        "Try again when it ends") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
