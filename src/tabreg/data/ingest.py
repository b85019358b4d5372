"""Ingest: from a verified source file and landing batches to one raw table.

The raw table is a pure function of the source archive and the batch files: the base file's rows
in file order, then each landing batch (in file-name order) with the rows already present
dropped. Every row carries a stable identity (``row_id``) and the name of the file it came from
(``batch``), which later steps use to de-duplicate, split and trace lineage. Structural problems
(empty file, wrong delimiter, wrong columns, ragged rows, unterminated quotes, text in numbers,
numbers a float32 feature cannot hold, repeated rows unless ``data.duplicates`` allows them) are
reported here, with file, column and line, before anything is written; content rules are the
validation step's job.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tabreg.config import BATCH, ROW_ID, Duplicates, SchemaConfig
from tabreg.data.identity import occurrence_ids, row_ids
from tabreg.errors import SchemaError

_SAMPLE = 5


@dataclass(frozen=True)
class BatchInfo:
    """What one file contributed to the raw table."""

    name: str
    rows_read: int
    rows_added: int
    rows_already_present: int
    #: Rows repeating an earlier row of the same file (dropped or kept by data.duplicates).
    repeated_rows: int = 0


def _info(frame: pd.DataFrame, added: int) -> BatchInfo:
    dropped = int(frame.attrs.get("dropped_rows", 0))
    return BatchInfo(str(frame[BATCH].iloc[0]), len(frame) + dropped, added,
                     len(frame) - added, int(frame.attrs.get("repeated_rows", 0)))


def csv_header(path: Path, name: str) -> list[str]:
    """The column names of a CSV file; ``name`` is how errors refer to it."""
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise SchemaError(f"{name}: file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{name}: not a readable CSV file ({exc})") from None


def _check_header(header: Sequence[str], schema: SchemaConfig, name: str) -> None:
    expected = list(schema.columns)
    if len(header) == 1 and len(expected) > 1:
        for delimiter in (";", "\t", "|"):
            if delimiter in header[0]:
                raise SchemaError(
                    f"{name}: the header is one field {header[0][:60]!r}...: the file looks "
                    f"delimited by {delimiter!r}; expected a comma-separated file"
                )
    repeated = sorted({c for c in header if header.count(c) > 1})
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    problems = []
    if repeated:
        problems.append(f"repeated columns {repeated}")
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if missing and extra:
        problems.append("(renamed columns?)")
    if problems:
        raise SchemaError(
            f"{name}: wrong columns: " + ", ".join(problems)
            + f"; expected exactly {expected} (schema in params.yaml)"
        )


#: The largest magnitude the model's float32 features hold; a larger number (or an infinity)
#: would reach the model as ``inf`` and break it, so it is a type error, like text.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def record_lines(path: Path, n_fields: int, name: str) -> np.ndarray:
    """The line on which each data record of a CSV file starts (blank lines skipped, as
    pandas does); a record with another number of fields than the header (a ragged row) or a
    quoted field that never closes is a :class:`SchemaError` naming the file and the line.

    pandas alone reports neither well: a short row is silently padded with missing values, a
    long one or an open quote raises a ``ParserError`` without the file's name.
    """
    lines: list[int] = []
    start, header_seen = 1, False
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle, strict=True)
            try:
                for record in reader:
                    if record and not header_seen:
                        header_seen = True
                    elif record:
                        if len(record) != n_fields:
                            raise SchemaError(
                                f"{name}, line {start}: a ragged row: {len(record)} fields "
                                f"where the header has {n_fields}")
                        lines.append(start)
                    start = reader.line_num + 1
            except csv.Error as exc:
                if "end of data" in str(exc):
                    raise SchemaError(f"{name}, line {start}: a quoted field opened on this "
                                      "line is never closed (unterminated quote)") from None
                raise SchemaError(f"{name}, line {start}: malformed CSV ({exc})") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{name}: not a readable CSV file ({exc})") from None
    return np.asarray(lines, dtype=np.int64)


def _bad_numbers(text: pd.DataFrame, columns: Iterable[str], lines: np.ndarray) -> list[str]:
    """Each numeric column's cells that are not a number a float32 feature can hold: text
    (``n/a``: only an empty cell is missing), infinities, and magnitudes above float32's."""
    out = []
    if len(lines) != len(text):  # pragma: no cover - the two readers disagree: count rows
        lines = np.arange(2, len(text) + 2)
    for column in columns:
        raw = text[column]
        values = pd.to_numeric(raw.mask(raw == ""), errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan)
        present = (raw != "").to_numpy()
        for problem, bad in (
                ("non-numeric values", present & np.isnan(values)),
                (f"infinite or too large values (float32 holds |x| <= {FLOAT32_MAX:.4g})",
                 present & ~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX))):
            if bad.any():
                where = np.flatnonzero(bad)
                shown = ", ".join(f"line {lines[i]}: {raw.iloc[i][:40]!r}"
                                  for i in where[:_SAMPLE])
                out.append(f"column {column!r}: {len(where)} {problem} ({shown})")
    return out


def read_csv(path: Path, schema: SchemaConfig, name: str | None = None) -> pd.DataFrame:
    """Read one CSV file into the schema's columns and types, or say precisely what is wrong:
    ragged rows and open quotes (file and line), text or non-finite numbers in numeric columns
    (file, column, line and value). Only an empty cell is a missing value."""
    name = name or path.name
    header = csv_header(path, name)
    _check_header(header, schema, name)
    lines = record_lines(path, len(header), name)
    numeric = (*schema.numeric, schema.target)
    dtypes = dict.fromkeys(numeric, "float64") | dict.fromkeys(schema.categorical, "str")
    empty_only = dict.fromkeys(header, [""])
    try:
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=empty_only)
    except (ValueError, pd.errors.ParserError):  # text in a numeric column
        frame = None
    if frame is None or not np.all(np.abs(frame[list(numeric)].to_numpy()) <= FLOAT32_MAX,
                                   where=frame[list(numeric)].notna().to_numpy()):
        text = pd.read_csv(path, dtype="str", keep_default_na=False)
        problems = _bad_numbers(text, numeric, lines)
        if problems:
            raise SchemaError(f"{name}: wrong values in numeric columns: "
                              + "; ".join(problems))
        if frame is None:  # pragma: no cover - pandas refused what to_numeric accepts
            raise SchemaError(f"{name}: numeric columns could not be read as numbers")
    if frame.empty:
        raise SchemaError(f"{name}: the file has a header but no rows")
    return frame[list(schema.columns)].reset_index(drop=True)


def _repeats_error(ids: pd.Series, repeated: np.ndarray, batch: str,
                   id_column: str | None) -> SchemaError:
    first_line = {rid: i + 2 for i, rid in reversed(list(enumerate(ids)))}
    where = np.flatnonzero(repeated)
    shown = ", ".join(f"line {i + 2} repeats line {first_line[ids.iloc[i]]}"
                      for i in where[:_SAMPLE])
    what = f"the same {id_column!r}" if id_column else "identical values"
    return SchemaError(
        f"{batch}: {len(where)} duplicated rows with {what} ({shown}); data.duplicates is "
        "'reject'. If the repeats are real rows, set data.duplicates in params.yaml to 'keep' "
        "(each repeat its own identity, by its occurrence) or 'drop' (only the first kept)")


def with_identity(frame: pd.DataFrame, schema: SchemaConfig, batch: str,
                  id_column: str | None = None,
                  duplicates: Duplicates = "reject") -> pd.DataFrame:
    """Prefix the identity and lineage columns. A row that repeats an earlier row of the same
    file (or its ``id_column``) is refused, dropped, or kept with an identity numbered by its
    occurrence, as ``duplicates`` (``data.duplicates``) says; how many there were is in
    ``attrs["repeated_rows"]`` for the ingest report."""
    keys = [id_column] if id_column else list(schema.columns)
    ids = row_ids(frame, keys)
    repeated = ids.duplicated(keep="first").to_numpy()
    if repeated.any():
        if duplicates == "reject":
            raise _repeats_error(ids, repeated, batch, id_column)
        if duplicates == "drop":
            frame, ids = frame[~repeated], ids[~repeated]
        else:
            ids = occurrence_ids(ids)
    out = frame.copy()
    out.insert(0, BATCH, pd.Series(batch, index=frame.index, dtype="str"))
    out.insert(0, ROW_ID, ids)
    out = out.reset_index(drop=True)
    out.attrs["repeated_rows"] = int(repeated.sum())
    out.attrs["dropped_rows"] = int(repeated.sum()) if duplicates == "drop" else 0
    return out


def append_batches(base: pd.DataFrame, batches: Iterable[pd.DataFrame]
                   ) -> tuple[pd.DataFrame, list[BatchInfo]]:
    """Append identified batches to the base table, dropping rows it already holds."""
    parts = [base]
    seen = set(base[ROW_ID])
    infos = [_info(base, len(base))]
    for batch in batches:
        new = ~batch[ROW_ID].isin(seen).to_numpy()
        parts.append(batch[new])
        seen.update(batch[ROW_ID][new])
        infos.append(_info(batch, int(new.sum())))
    table = pd.concat(parts, ignore_index=True) if len(parts) > 1 else base.reset_index(drop=True)
    return table, infos


def landing_files(landing_dir: Path) -> list[Path]:
    """The batch files waiting in the landing folder, in name order (name them by date)."""
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.iterdir()
                  if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz")))


def summary(infos: Sequence[BatchInfo], table: pd.DataFrame) -> dict:
    """The ingest report's body: the table's row count and what each batch added."""
    return {"rows": len(table), "batches": [asdict(i) for i in infos]}
