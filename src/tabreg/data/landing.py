"""The landing record: one account of every batch file dropped in the landing folder, kept by
whichever entry point meets it first.

A batch can be met by the ingest step (``python -m tabreg ingest``, ``dvc repro``, the training
flow), by the validate step or by the retrain flow. Each of them reads and writes the same
record (``data.landing_record``, a JSON file), so a bad batch is quarantined the same way
whoever sees it first, and none of them judges what is new from its own report alone.

Each file has one entry, keyed by name: ``status`` is ``seen`` (met, not yet judged),
``accepted`` (passed the batch contract; ``rows`` in the file), ``ingested`` (in the raw
table; ``new_rows`` it added) or ``quarantined`` (``reason``, and where it went), with the
file's md5 (a file rewritten under the same name is judged again), when and by whom.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from tabreg.config import Config
from tabreg.errors import SchemaError, TabregError, ValidationFailed
from tabreg.io import file_md5, write_json


class BatchRejected(TabregError):
    """A new batch broke the batch contract; it was quarantined and nothing was retrained."""


def record_path(config: Config, root: Path) -> Path:
    """Where the landing record is kept (``data.landing_record``)."""
    return root / config.data.landing_record


def read_record(config: Config, root: Path) -> dict[str, dict]:
    """File name -> its entry (empty before any batch was met)."""
    import json

    path = record_path(config, root)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SchemaError(f"the landing record {path} is not readable ({exc}); it is rebuilt "
                          "from the landing folder if you delete it") from None


@contextmanager
def _locked(config: Config, root: Path) -> Iterator[dict[str, dict]]:
    """The record for a read-modify-write, under an OS lock so that two entry points running
    at once (an ingest beside a retrain) do not lose each other's entries."""
    path = record_path(config, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        files = read_record(config, root)
        yield files
        write_json({"files": files}, path)
    finally:
        os.close(fd)


def note(config: Config, root: Path, entries: dict[str, dict], by: str) -> None:
    """Merge ``entries`` (file name -> fields) into the record, stamped with when and who."""
    if not entries:
        return
    at = datetime.now(UTC).isoformat(timespec="seconds")
    with _locked(config, root) as files:
        for name, fields in entries.items():
            files[name] = {**files.get(name, {}), **fields, "at": at, "by": by}


def unjudged(config: Config, root: Path, files: list[Path]) -> list[Path]:
    """The files the record has not accepted (or ingested) in their current content."""
    record = read_record(config, root)
    return [p for p in files
            if record.get(p.name, {}).get("status") not in ("accepted", "ingested")
            or record[p.name].get("md5") != file_md5(p)]


@dataclass(frozen=True)
class BatchCheck:
    accepted: dict[str, pd.DataFrame]
    rejected: dict[str, str]  # file name -> why
    where: Path | None = None  # where the rejected files went (relative to the project)

    def refuse(self) -> None:
        """Raise :class:`BatchRejected` naming the rejected files, if there are any."""
        if self.rejected:
            details = "\n\n".join(f"{name}:\n{why}" for name, why in self.rejected.items())
            raise BatchRejected(
                f"{len(self.rejected)} new batch(es) rejected by the batch contract and moved "
                f"to {self.where}/ (each with its reason); nothing was ingested or retrained "
                "and the champion is untouched. Run again to go on with the other batches."
                f"\n{details}")


def read_batch(config: Config, path: Path) -> pd.DataFrame:
    """A batch file as ingest reads it: parsed against the schema, each row given its
    identity (the one reading every entry point shares: ingest, the retrain flow, check)."""
    from tabreg.data import ingest

    data = config.data
    return ingest.with_identity(ingest.read_csv(path, config.schema), config.schema, path.name,
                                data.id_column, data.duplicates)


def check_batch(config: Config, root: Path, path: Path, suite: str = "batch",
                shown: str | None = None) -> pd.DataFrame:
    """:func:`read_batch`, then the ``batch`` (or ``raw``) contract: raises with what failed,
    where (the file as ``shown``, by default its name), and sample values."""
    from tabreg.data import validate

    frame = read_batch(config, path)
    suites = {"raw": config.validation.raw_suite, "batch": config.validation.batch_suite}
    report = validate.validate_frame(frame, root / suites[suite],
                                     sample_size=config.validation.sample_size)
    validate.check(report, shown or path.name)
    return frame


def check_batches(config: Config, root: Path, files: list[Path]) -> BatchCheck:
    """Read each file as ingest would and validate it against the batch contract."""
    accepted: dict[str, pd.DataFrame] = {}
    rejected: dict[str, str] = {}
    for path in files:
        try:
            accepted[path.name] = check_batch(config, root, path)
        except (SchemaError, ValidationFailed) as exc:
            rejected[path.name] = str(exc)
    return BatchCheck(accepted, rejected)


def quarantine(config: Config, root: Path, files: list[Path], reasons: dict[str, str],
               by: str = "retrain") -> Path:
    """Move rejected files out of the landing folder, each with a note saying why, and
    record them as quarantined."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = root / config.retrain.quarantine_dir / stamp
    dest.mkdir(parents=True, exist_ok=True)
    moved = {}
    for path in files:
        if path.name in reasons:
            md5 = file_md5(path)
            shutil.move(str(path), dest / path.name)
            (dest / f"{path.name}.reason.txt").write_text(reasons[path.name] + "\n")
            moved[path.name] = {"status": "quarantined", "md5": md5,
                                "reason": reasons[path.name].splitlines()[0],
                                "where": str((dest / path.name).relative_to(root))}
    note(config, root, moved, by)
    return dest


def screen(config: Config, root: Path, files: list[Path], by: str) -> BatchCheck:
    """Judge ``files`` against the batch contract as ``by`` meets them: record each as seen,
    then accepted (with its rows) or quarantined (with its reason). The caller refuses to go
    on when any was rejected (:meth:`BatchCheck.refuse`)."""
    note(config, root, {p.name: {"status": "seen", "md5": file_md5(p)} for p in files}, by)
    checked = check_batches(config, root, files)
    note(config, root, {name: {"status": "accepted", "rows": len(frame)}
                        for name, frame in checked.accepted.items()}, by)
    if not checked.rejected:
        return checked
    where = quarantine(config, root, files, checked.rejected, by)
    return BatchCheck(checked.accepted, checked.rejected, where.relative_to(root))
