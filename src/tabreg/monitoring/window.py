"""The rows of the inference log scored within a time window.

A window is half-open, ``since < time <= until``, so that consecutive windows (each report's
``until`` is the next one's ``since``) cover every logged row exactly once. From a Parquet log
only the day folders the window touches are opened (``date=YYYY-MM-DD``, by the rows' UTC
day); from a database log only the window's rows are selected.

A row reaches the log up to ``monitor.log_flush_seconds`` after it was scored, so a report
made while a server runs may miss the last seconds' rows; the log keeps them, and a window
given explicitly (``--since``) reads them again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tabreg.errors import TabregError
from tabreg.serving.inference_log import TABLE, TIME


def parse_time(text: str, name: str) -> datetime:
    """An ISO time (``2026-11-30``, ``2026-11-30T08:00``, with or without a zone: UTC when
    none), or a clear error naming the option."""
    try:
        when = pd.Timestamp(text)
    except ValueError:
        raise TabregError(f"{name}: {text!r} is not a time (use ISO 8601, e.g. "
                          "2026-11-30 or 2026-11-30T08:00Z)") from None
    if when is pd.NaT:
        raise TabregError(f"{name}: {text!r} is not a time")
    when = when.tz_localize(UTC) if when.tzinfo is None else when.tz_convert(UTC)
    return when.to_pydatetime()


def _days(folder: Path, since: datetime | None, until: datetime) -> list[Path]:
    """The day folders that may hold rows of the window."""
    first = since.strftime("%Y-%m-%d") if since else ""
    last = until.strftime("%Y-%m-%d")
    return sorted(p for p in folder.glob("date=*") if p.is_dir()
                  and first <= p.name.removeprefix("date=") <= last)


def _from_parquet(folder: Path) -> list[pd.DataFrame]:
    frames = []
    for path in sorted(folder.glob("part-*.parquet")):
        try:
            frames.append(pd.read_parquet(path))
        except (OSError, ValueError) as exc:
            raise TabregError(f"{path}: the inference log has a file that cannot be read "
                              f"({exc}); move it aside to monitor the rest") from None
    return frames


def _from_database(url: str, since: datetime | None, until: datetime) -> pd.DataFrame:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from tabreg.services.postgres import hide_password

    try:
        return _select(create_engine(url, pool_pre_ping=True), since, until)
    except SQLAlchemyError as exc:
        raise TabregError(f"cannot read the inference log at {hide_password(url)}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None


def _select(engine: Any, since: datetime | None, until: datetime) -> pd.DataFrame:
    from sqlalchemy import inspect, text

    try:
        if not inspect(engine).has_table(TABLE):
            return pd.DataFrame()
        where = f"{TIME} <= :until" + (f" AND {TIME} > :since" if since else "")
        query = text(f"SELECT * FROM {TABLE} WHERE {where} ORDER BY {TIME}")
        with engine.connect() as connection:
            frame = pd.read_sql(query, connection, params={"since": since, "until": until})
    finally:
        engine.dispose()
    if not frame.empty:
        frame[TIME] = pd.to_datetime(frame[TIME], utc=True)
    return frame


def read_window(target: str, root: Path, since: datetime | None, until: datetime
                ) -> pd.DataFrame:
    """The logged rows with ``since < time <= until`` (``since`` None: from the first row),
    oldest first; an empty frame when the log holds none (or does not exist yet)."""
    if "://" in target:
        frame = _from_database(target, since, until)
    else:
        folder = root / target
        frames = [f for day in _days(folder, since, until) for f in _from_parquet(day)]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frame.empty:
        return frame
    keep = frame[TIME] <= pd.Timestamp(until)
    if since is not None:
        keep &= frame[TIME] > pd.Timestamp(since)
    return frame[keep].sort_values(TIME, kind="stable").reset_index(drop=True)
