"""Ground truth that arrives after the prediction, joined to the inference log.

Labels are CSV files dropped into ``monitor.labels`` (``data/labels/``): one row per scored
row, with the target column (``median_house_value``) and the row's identity, either its
``row_id`` (the id a client sent, or the one ``make predict`` wrote beside the prediction) or
the ``request_id`` the server answered, with ``row`` (the row's number in the request; 0 when
absent, as for one-row requests). Files are read in the order they arrived (modification time,
then name), so when the same row is labelled twice the later label wins; the report says how
often. Labels for rows the log does not hold are counted and shown, not an error: they may
belong to a window not read, or to another deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.errors import SchemaError
from tabreg.serving.inference_log import REQUEST_ID, ROW, ROW_ID

#: Label rows for unknown ids shown in the report, at most.
SHOWN = 5


@dataclass
class LabelReport:
    """What reading and joining the labels found."""

    files: list[str] = field(default_factory=list)
    labels: int = 0  # label rows read, duplicates included
    duplicates: int = 0  # label rows replaced by a later label of the same row
    joined: int = 0  # log rows that got a label
    unknown: int = 0  # labels whose row the log does not hold
    unknown_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "labels": self.labels, "duplicates": self.duplicates,
                "joined": self.joined, "unknown": self.unknown,
                "unknown_ids": self.unknown_ids}


def _read_one(path: Path, target: str) -> pd.DataFrame:
    """One label file, checked: the target and an identity column, the target numeric."""
    try:
        frame = pd.read_csv(path, dtype={ROW_ID: "string", REQUEST_ID: "string"})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SchemaError(f"{path}: not a readable CSV file ({exc})") from None
    columns = [str(c) for c in frame.columns]
    if target not in columns or not {ROW_ID, REQUEST_ID} & set(columns):
        raise SchemaError(f"{path}: a label file needs the columns {target!r} and {ROW_ID!r} "
                          f"(or {REQUEST_ID!r}, with {ROW!r} for requests of several rows); "
                          f"it has {columns}")
    values = pd.to_numeric(frame[target], errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() | ~np.isfinite(values.fillna(0).to_numpy()))
    if bad.size:
        lines = ", ".join(str(i + 2) for i in bad[:SHOWN])  # line 1 is the header
        raise SchemaError(f"{path}: {target!r} is missing or not a number on {bad.size} "
                          f"line(s): {lines}")
    out = pd.DataFrame({target: values.astype("float64")})
    out[ROW_ID] = frame.get(ROW_ID, pd.NA)
    out[REQUEST_ID] = frame.get(REQUEST_ID, pd.NA)
    rows = pd.to_numeric(frame[ROW], errors="coerce") if ROW in frame else 0
    out[ROW] = pd.Series(rows, index=frame.index).fillna(0).astype("int64")
    missing = out[ROW_ID].isna() & out[REQUEST_ID].isna()
    if missing.any():
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(missing.to_numpy())[:SHOWN])
        raise SchemaError(f"{path}: no {ROW_ID} or {REQUEST_ID} on line(s) {lines}")
    return out


def read_labels(folder: Path, target: str) -> tuple[pd.DataFrame, LabelReport]:
    """Every label in ``folder`` (``*.csv``), the later of two labels of one row kept."""
    report = LabelReport()
    files = sorted(folder.glob("*.csv"), key=lambda p: (p.stat().st_mtime, p.name))
    frames = []
    for path in files:
        frames.append(_read_one(path, target))
        report.files.append(path.name)
    if not frames:
        return pd.DataFrame(columns=[target, ROW_ID, REQUEST_ID, ROW]), report
    labels = pd.concat(frames, ignore_index=True)
    report.labels = len(labels)
    # One row, one label: a request's row by (request id, row), another by its row id.
    key = labels[REQUEST_ID].fillna("").where(
        labels[REQUEST_ID].notna(), "id:" + labels[ROW_ID].fillna("")) + "/" + \
        labels[ROW].astype(str).where(labels[REQUEST_ID].notna(), "")
    kept = labels[~key.duplicated(keep="last")]
    report.duplicates = len(labels) - len(kept)
    return kept.reset_index(drop=True), report


def _attach(out: pd.DataFrame, target: str, labelled: pd.Index, values: np.ndarray,
            keys: pd.Index) -> np.ndarray:
    """Give the rows of ``out`` still without a label the value of the label whose key in
    ``labelled`` is theirs (``keys``, one per row); returns which labels found a row."""
    position = labelled.get_indexer(keys)
    hit = (position >= 0) & out[target].isna().to_numpy()
    if hit.any():
        out.loc[hit, target] = values[position[hit]]
    used = np.zeros(len(labelled), dtype=bool)
    used[position[position >= 0]] = True
    return used


def join(logged: pd.DataFrame, labels: pd.DataFrame, target: str,
         report: LabelReport) -> pd.DataFrame:
    """``logged`` with a ``target`` column: each row's label by (request id, row) or by row
    id, NaN where none came; ``report`` counts what joined and which labels matched nothing."""
    out = logged.copy()
    out[target] = np.nan
    by_request = labels[labels[REQUEST_ID].notna()]
    by_row_id = labels[labels[REQUEST_ID].isna()]
    requests = pd.MultiIndex.from_frame(by_request[[REQUEST_ID, ROW]])
    used_request = _attach(out, target, requests, by_request[target].to_numpy(),
                           pd.MultiIndex.from_frame(out[[REQUEST_ID, ROW]]
                                                    .astype({ROW: "int64"})))
    used_row_id = _attach(out, target, pd.Index(by_row_id[ROW_ID].astype(str)),
                          by_row_id[target].to_numpy(), pd.Index(out[ROW_ID].astype(str)))
    matched = pd.Series(False, index=labels.index)
    matched[by_request.index[used_request]] = True
    matched[by_row_id.index[used_row_id]] = True
    report.joined = int(out[target].notna().sum())
    unknown = labels[~matched.to_numpy()]
    report.unknown = len(unknown)
    report.unknown_ids = [str(r[ROW_ID]) if pd.notna(r[ROW_ID]) else f"{r[REQUEST_ID]}/{r[ROW]}"
                          for _, r in unknown.head(SHOWN).iterrows()]
    return out
