"""The inference log: every row the server or ``make predict`` scored, kept for monitoring.

Each row is stored with the request it came in (its id and row number), the time, the model
name and version, the model's input columns as they were scored, the prediction, its interval
and its flags: what ``make monitor`` compares with the training data, and what labels that
arrive later are joined to. Nothing else: no headers, no client addresses.

Writing never holds up an answer. :meth:`InferenceLog.append` only puts the rows in memory;
a background thread writes them in batches (``monitor.log_batch_rows`` rows, or whatever came
within ``monitor.log_flush_seconds``). Memory is bounded: beyond ``monitor.log_max_rows``
rows waiting, new rows are dropped and counted rather than slowing the server or growing
without limit. :meth:`InferenceLog.close` (the server's shutdown, on SIGTERM) writes what is
left, so a row that was answered is never lost on a clean stop. A write that fails (a full or
read-only disk, a database that went away) is retried with the next batch; the rows of a
batch that still fails are counted as lost, and :meth:`InferenceLog.status` says so, for
``/health``.

Where rows go (``monitor.log``): a folder gets Parquet files partitioned by day
(``<folder>/date=YYYY-MM-DD/part-<time>-<pid>-<n>.parquet``, each written whole under a
temporary name, so a reader never sees half a file, and named by process so that several
server workers never collide); a database URL (``postgresql://...``) gets a table,
``inference_log``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import pandas as pd

from tabreg.config import FLAGS, LOWER, PREDICTION, ROW_ID, UPPER

log = logging.getLogger(__name__)

#: The log's own columns; the model's input columns come between ROW and PREDICTION.
REQUEST_ID, ROW, TIME, SOURCE = "request_id", "row", "time", "source"
MODEL, VERSION = "model", "model_version"
TABLE = "inference_log"
#: A batch that failed is kept for this many more attempts before its rows count as lost.
RETRIES = 2


def new_request_id() -> str:
    """A request id: random, so that ids from several workers or hosts never collide."""
    return uuid.uuid4().hex


class Deferred(Protocol):
    """Rows whose frame is built when first asked for (:class:`tabreg.serving.scoring.Checked`
    for a small request): the log builds it in its writer thread, off the request path, one
    frame for a run of such requests (``stacked``)."""

    def __len__(self) -> int: ...

    @property
    def features(self) -> pd.DataFrame: ...

    def stacked(self, more: Sequence[Any]) -> pd.DataFrame:
        """The frame of these rows followed by those of ``more`` (of the same kind)."""
        ...


#: A request's checked input rows: a frame, or rows whose frame is built on demand.
Inputs: TypeAlias = pd.DataFrame | Deferred
#: Scored requests as the log takes them: (input rows, outputs, who and when).
Requests: TypeAlias = list[tuple[Inputs, dict[str, Any], dict[str, Any]]]


def rows_for_log(features: Inputs, scored: dict[str, Any], *, request_id: str,
                 source: str, model: str, version: str, when: datetime | None = None,
                 first_row: int = 0) -> pd.DataFrame:
    """The log's rows for one scored request or chunk (whose first row is row ``first_row``
    of its request): ``scored`` holds ``row_id`` (optional), ``prediction``, ``lower``,
    ``upper`` (None without intervals) and ``flags`` per row."""
    return rows_for_requests([(features, scored, {
        "request_id": request_id, "source": source, "model": model, "version": version,
        "when": when or datetime.now(UTC), "first_row": first_row})])


def rows_for_requests(requests: Requests) -> pd.DataFrame:
    """The log's rows for many requests at once, each ``(features, scored, meta)`` as
    :func:`rows_for_log` takes them. Built column by column over the whole batch: a server
    answering hundreds of one-row requests a second would otherwise spend milliseconds of
    Python per request building a frame each, in a thread that competes with the answers."""
    blocks = _blocks(requests)
    sizes = np.array([len(features) for features, _, _ in requests], dtype=np.intp)
    n = int(sizes.sum())

    def each(key: str) -> np.ndarray:
        return np.repeat(np.array([meta[key] for _, _, meta in requests], dtype=object), sizes)

    # A row's number in its request; a chunk of a larger one (make predict) says where it
    # starts, so that (request id, row) names one row of the whole file.
    starts = np.repeat(np.cumsum(sizes) - sizes
                       - np.array([meta.get("first_row", 0) for _, _, meta in requests],
                                  dtype=np.intp), sizes)
    frame = pd.DataFrame({REQUEST_ID: each("request_id"), ROW: np.arange(n) - starts,
                          TIME: pd.Series(pd.DatetimeIndex(
                              [meta["when"] for _, _, meta in requests]).tz_convert(UTC)
                              .repeat(sizes), dtype="datetime64[us, UTC]"),
                          SOURCE: each("source"), MODEL: each("model"),
                          VERSION: each("version").astype(str)})
    inputs = pd.concat([block for block, _ in blocks], ignore_index=True)
    frame[ROW_ID] = pd.Series(_row_ids(requests, blocks), dtype="string").to_numpy()
    frame = pd.concat([frame, inputs], axis=1)
    for name in (PREDICTION, LOWER, UPPER):
        frame[name] = np.concatenate([
            np.full(size, np.nan) if scored.get(name) is None
            else np.asarray(scored[name], dtype=np.float64)
            for size, (_, scored, _) in zip(sizes, requests, strict=True)]) if n else []
    flags = [flag for _, scored, _ in requests for flag in scored[FLAGS]]
    frame[FLAGS] = pd.Series(flags, dtype="string").to_numpy()
    return frame


def _blocks(requests: Requests) -> list[tuple[pd.DataFrame, list[int]]]:
    """The requests' input rows as few frames, each with the requests it holds, in order: a
    request's own frame, or one frame for a run of requests whose frames were deferred. A
    frame per one-row request took the writer 0.5 ms each, holding the interpreter's lock."""
    blocks: list[tuple[pd.DataFrame, list[int]]] = []
    run: list[int] = []

    def close() -> None:
        if run:
            first: Deferred = requests[run[0]][0]
            blocks.append((first.stacked([requests[i][0] for i in run[1:]]), list(run)))
            run.clear()

    for i, (features, _, _) in enumerate(requests):
        if isinstance(features, pd.DataFrame):
            close()
            blocks.append((features, [i]))
        else:
            run.append(i)
    close()
    return blocks


def _row_ids(taken: Requests, blocks: list[tuple[pd.DataFrame, list[int]]]) -> np.ndarray:
    """Each row's id: the one its request sent, else (as scoring names a row without an id)
    the hash of its inputs, computed once for all such rows of the batch with the same
    columns (one served version's)."""
    from tabreg.data.identity import row_ids

    parts: list[Any] = [None] * len(taken)
    unnamed: dict[tuple[str, ...], list[tuple[pd.DataFrame, list[int]]]] = {}
    for block, members in blocks:
        sizes = [len(taken[i][0]) for i in members]
        given = [taken[i][1].get(ROW_ID) for i in members]
        for i, ids in zip(members, given, strict=True):
            if ids is not None:
                parts[i] = np.asarray(ids, dtype=object)
        nameless = np.repeat([ids is None for ids in given], sizes)
        if nameless.any():
            rows = block if nameless.all() else block[nameless]
            unnamed.setdefault(tuple(map(str, block.columns)), []).append(
                (rows, [i for i, ids in zip(members, given, strict=True) if ids is None]))
    for columns, groups in unnamed.items():
        inputs = pd.concat([rows for rows, _ in groups], ignore_index=True)
        hashed = row_ids(inputs, list(columns)).to_numpy(dtype=object)
        members = [i for _, group in groups for i in group]
        for i, chunk in zip(members, np.split(hashed, np.cumsum(
                [len(taken[i][0]) for i in members])[:-1]), strict=True):
            parts[i] = chunk
    return np.concatenate(parts) if parts else np.array([], dtype=object)


class Writer(Protocol):
    def write(self, frame: pd.DataFrame) -> None: ...


class ParquetDays:
    """Parquet files, one folder per UTC day (``date=YYYY-MM-DD``, a Hive partition that
    pandas, DuckDB and Spark read as a column)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._count = 0

    def write(self, frame: pd.DataFrame) -> None:
        days = frame[TIME].dt.strftime("%Y-%m-%d")
        for day, part in frame.groupby(days, sort=True):
            self._count += 1
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            dest = self.folder / f"date={day}" / f"part-{stamp}-{os.getpid()}-{self._count}.parquet"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp")
            try:
                part.to_parquet(tmp, index=False)
                tmp.rename(dest)
            finally:
                tmp.unlink(missing_ok=True)


def compact_days(folder: Path, before: str) -> dict[str, int]:
    """Merge each day folder older than ``before`` (``YYYY-MM-DD``) that holds several part
    files into one, so that a month of a busy server (a file per flush and process: up to
    8,640 a day each) reads as a month of files, not hundreds of thousands. Written whole
    under a temporary name first, then the parts it holds are removed: a reader sees every row
    once before and after (and, in the instant between, at worst twice, never not at all),
    and parts that arrive meanwhile (a late flush) stay for the next compaction. Returns the
    number of parts merged per day."""
    merged: dict[str, int] = {}
    for day in sorted(p for p in folder.glob("date=*") if p.is_dir()):
        if day.name.removeprefix("date=") >= before:
            continue
        parts = sorted(day.glob("part-*.parquet"))
        if len(parts) < 2:
            continue
        frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        dest = day / f"part-{stamp}-{os.getpid()}-compacted.parquet"
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            frame.sort_values(TIME, kind="stable").to_parquet(tmp, index=False)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)
        for part in parts:
            part.unlink(missing_ok=True)  # another compaction at the same time took it
        merged[day.name] = len(parts)
    return merged


class SqlTable:
    """A table in a database (``inference_log``), created by the first write; the model's
    input columns become columns of their own, so SQL can filter and aggregate them."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.url = url
        self.engine = create_engine(url, pool_pre_ping=True)

    def write(self, frame: pd.DataFrame) -> None:
        frame.to_sql(TABLE, self.engine, if_exists="append", index=False, method="multi",
                     chunksize=1000)


def open_log(config: Any, root: Path) -> InferenceLog | None:
    """The inference log ``monitor.*`` configures (started by its user), or None when
    ``monitor.log`` is empty (logging off)."""
    from tabreg.services.postgres import hide_password

    monitor = config.monitor
    if not monitor.log:
        return None
    # Named without its password: the name is shown on /health and in the server's log.
    return InferenceLog(open_writer(monitor.log, root), target=hide_password(monitor.log),
                        batch_rows=monitor.log_batch_rows,
                        flush_seconds=monitor.log_flush_seconds, max_rows=monitor.log_max_rows)


def open_writer(target: str, root: Path) -> Writer:
    """The writer for ``monitor.log``: a database URL, else a folder under the project."""
    if "://" in target:
        return SqlTable(target)
    return ParquetDays(root / target)


@dataclass
class _Batch:
    frame: pd.DataFrame
    attempts: int = 0


@dataclass
class LogStatus:
    """What ``/health`` shows of the log."""

    target: str
    rows_logged: int = 0
    rows_waiting: int = 0
    rows_dropped: int = 0  # refused while memory was full
    rows_lost: int = 0  # whose writes failed every attempt
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "rows_logged": self.rows_logged,
                "rows_waiting": self.rows_waiting, "rows_dropped": self.rows_dropped,
                "rows_lost": self.rows_lost, "error": self.last_error,
                "status": "failing" if self.last_error else "ok"}


class InferenceLog:
    """Rows in memory, written in batches by a background thread (see the module docstring)."""

    def __init__(self, writer: Writer, *, target: str, batch_rows: int = 1000,
                 flush_seconds: float = 2.0, max_rows: int = 100_000) -> None:
        self.writer = writer
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._pending: deque[tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]] = deque()
        self._retry: deque[_Batch] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = LogStatus(target)

    # --- the request path: constant time, never blocks on I/O -------------------------------

    def append(self, features: Inputs, scored: dict[str, Any], **meta: Any) -> bool:
        """Queue one request's rows (the arguments of :func:`rows_for_log`, whose table is
        built later, in the writer thread); False, and the rows counted as dropped, when
        memory is full."""
        n = len(features)
        entry = (features, scored, {**meta, "when": meta.get("when") or datetime.now(UTC)})
        with self._lock:
            if self._status.rows_waiting + n > self.max_rows:
                self._status.rows_dropped += n
                return False
            self._pending.append(entry)
            self._status.rows_waiting += n
            if self._status.rows_waiting >= self.batch_rows:
                self._wake.set()
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status.to_dict()

    # --- the writer thread --------------------------------------------------------------------

    def start(self) -> InferenceLog:
        self._thread = threading.Thread(target=self._loop, name="inference-log", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write what is waiting (and retry what failed before), now, in this thread."""
        with self._lock:
            taken = list(self._pending)
            self._pending.clear()
        batches = list(self._retry)
        self._retry.clear()
        if taken:
            try:
                batches.append(_Batch(rows_for_requests(taken)))
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the writer thread
                self._lost(sum(len(features) for features, _, _ in taken), exc)
        for batch in batches:
            self._write(batch)

    def _lost(self, rows: int, exc: Exception) -> None:
        """Rows that could not even be made into a table: counted as lost, and said once in
        the log with the traceback; the writer thread goes on with the next rows."""
        log.exception("inference log: %d row(s) could not be prepared for %s", rows,
                      self._status.target)
        with self._lock:
            self._status.rows_waiting -= rows
            self._status.rows_lost += rows
            self._status.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"

    def _write(self, batch: _Batch) -> None:
        rows = len(batch.frame)
        try:
            self.writer.write(batch.frame)
        except Exception as exc:  # noqa: BLE001 - any failure to store is the same fault
            batch.attempts += 1
            message = f"{type(exc).__name__}: {str(exc)[:300]}"
            with self._lock:
                first = self._status.last_error is None
                self._status.last_error = message
                if batch.attempts > RETRIES:
                    self._status.rows_waiting -= rows
                    self._status.rows_lost += rows
            if first:
                log.error("inference log: cannot write to %s (%s); serving goes on, and the "
                          "rows are counted on /health", self._status.target, message)
            if batch.attempts <= RETRIES:
                self._retry.append(batch)
            return
        with self._lock:
            self._status.rows_waiting -= rows
            self._status.rows_logged += rows
            if self._status.last_error is not None:
                log.warning("inference log: writing to %s again", self._status.target)
            self._status.last_error = None

    def close(self, timeout: float = 30.0) -> None:
        """Stop the thread and write everything still in memory (the clean shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while (self._pending or self._retry) and time.monotonic() < deadline:
            self.flush()
            if self._retry:
                time.sleep(0.2)
