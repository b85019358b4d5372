"""Scoring new rows with a registered model: input checks, predictions with per-row flags, and
chunked batch scoring of CSV or Parquet files.

The HTTP server (:mod:`tabreg.serving.server`) and ``python -m tabreg predict`` both go
through here, so they accept and refuse exactly the same inputs. What a model takes is read
from the model itself: the input schema of its MLflow signature (column names and types) and
the categories its one-hot encoders were fitted on. A champion trained under another
``params.yaml`` is therefore checked against what it really needs; the configured schema is
only the fallback for a model logged without a signature.

The checks, each naming the field (and, for values, the rows) at fault:

* every input column is present, none is repeated, and no column is unknown (``row_id``,
  ``batch`` and the target are accepted and not used);
* numeric columns hold numbers: text, booleans, lists, infinities and magnitudes beyond
  float32's range (``1e300``, a 400-digit integer: the model's float32 features would hold
  them as infinity) are refused; a number written as text (``"3.5"``, as CSV cells are) is
  accepted; a missing value is accepted (in CSV only an empty cell: ``n/a`` is text);
* categorical columns hold text or nothing.

What is accepted but worth knowing is flagged per row rather than refused: a category the model
never saw in training (``unknown_category:ocean_proximity``: the one-hot encoder ignores it, so
the row is scored as if the category were absent) and a missing value that the model imputes
(``missing:total_bedrooms``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import BATCH, FLAGS, LOWER, PREDICTION, ROW_ID, UPPER, Config, SchemaConfig
from tabreg.data.ingest import FLOAT32_MAX
from tabreg.errors import ConfigError, SchemaError, TabregError
from tabreg.serving import inference_log

log = logging.getLogger(__name__)

UNKNOWN_CATEGORY = "unknown_category"
MISSING = "missing"
#: Offending values shown per problem.
SAMPLE = 5
_FLOAT_TYPES = ("double", "float")
_INT_TYPES = ("long", "integer")
_CSV = (".csv", ".csv.gz")
_PARQUET = (".parquet", ".pq")


# --- what the model takes -------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    """The columns a model takes and the categories it knows.

    ``categories`` holds, per categorical column, the values seen in training (a column absent
    from it is not checked for unknown values); ``ignored`` are columns accepted and dropped.
    """

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    integer: frozenset[str] = frozenset()
    categories: Mapping[str, frozenset[str]] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset({ROW_ID, BATCH})

    @property
    def columns(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


def _signature_inputs(model: Any) -> list[tuple[str, str]] | None:
    """(name, type) of each input column in the model's MLflow signature, if it has one."""
    metadata = getattr(model, "metadata", None)
    schema = metadata.get_input_schema() if metadata is not None else None
    if schema is None or not schema.has_input_names():
        return None
    return [(c.name, getattr(c.type, "name", str(c.type))) for c in schema.inputs]


def raw_model(model: Any) -> Any:
    """The fitted estimator inside an MLflow pyfunc model (the model itself otherwise)."""
    if not hasattr(model, "unwrap_python_model"):  # not a loaded MLflow model
        return model
    from tabreg.models.pyfunc import fitted

    return fitted(model)


def known_categories(estimator: Any) -> dict[str, frozenset[str]]:
    """The categories each one-hot encoder inside ``estimator`` was fitted on, by input column.

    Walks pipelines, column transformers and ensembles (a blend's members); when several
    encoders read the same column, a value is known only if every one of them knows it.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    found: dict[str, frozenset[str]] = {}

    def add(column: str, values: Sequence[Any]) -> None:
        known = frozenset(str(v) for v in values if not pd.isna(v))
        found[column] = found[column] & known if column in found else known

    def walk(est: Any, columns: list[str] | None) -> None:
        if isinstance(est, Pipeline):
            for _, step in est.steps:
                walk(step, columns)
        elif isinstance(est, ColumnTransformer):
            for _, transformer, cols in getattr(est, "transformers_", []):
                named = list(cols) if all(isinstance(c, str) for c in np.atleast_1d(cols)) else None
                if not isinstance(transformer, str):
                    walk(transformer, named)
        elif isinstance(est, OneHotEncoder) and hasattr(est, "categories_"):
            names = getattr(est, "feature_names_in_", None)
            names = list(names) if names is not None else columns
            if names is not None and len(names) == len(est.categories_):
                for column, values in zip(names, est.categories_, strict=True):
                    add(str(column), values)
        else:
            for member in getattr(est, "estimators_", None) or []:
                walk(member, columns)

    walk(estimator, None)
    return found


def spec_for(model: Any, schema: SchemaConfig, id_column: str | None = None) -> InputSpec:
    """What ``model`` takes: its signature's columns (the configured schema without one) and
    the categories of its encoders."""
    inputs = _signature_inputs(model)
    if inputs is None:
        numeric, categorical = schema.numeric, schema.categorical
        integer: tuple[str, ...] = ()
    else:
        numeric_l, categorical_l, integer_l = [], [], []
        for name, kind in inputs:
            if kind in _FLOAT_TYPES or kind in _INT_TYPES:
                numeric_l.append(name)
                if kind in _INT_TYPES:
                    integer_l.append(name)
            elif kind == "string":
                categorical_l.append(name)
            else:
                raise TabregError(f"model input {name!r} has type {kind!r}; tabreg scores "
                                  "numeric and text columns only")
        numeric, categorical, integer = tuple(numeric_l), tuple(categorical_l), tuple(integer_l)
    columns = set(numeric) | set(categorical)
    ignored = {ROW_ID, BATCH, schema.target} | ({id_column} if id_column else set())
    return InputSpec(numeric=tuple(numeric), categorical=tuple(categorical),
                     integer=frozenset(integer), categories=known_categories(raw_model(model)),
                     ignored=frozenset(ignored - columns))


# --- checking input -------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: a field, what is wrong, and where (0-based rows)."""

    field: str
    problem: str
    rows: tuple[int, ...] = ()
    values: tuple[str, ...] = ()
    count: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "problem": self.problem}
        if self.count:
            out.update(count=self.count, rows=list(self.rows), values=list(self.values))
        return out

    def text(self, label: Callable[[int], str]) -> str:
        where = ", ".join(f"{label(r)}: {v}" for r, v in zip(self.rows, self.values, strict=True))
        more = "" if self.count <= len(self.rows) else ", ..."
        if not self.count:
            return f"{self.field!r}: {self.problem}"
        rows = "row" if self.count == 1 else "rows"
        return f"{self.field!r}: {self.problem} in {self.count} {rows} ({where}{more})"


def row_label(row: int) -> str:
    """How messages name a row of a request (0-based, as the request lists them)."""
    return f"row {row}"


def csv_line(row: int) -> str:
    """A data row's line in a CSV file with a one-line header (lines counted from 1)."""
    return f"line {row + 2}"


class InputError(SchemaError):
    """Input that the model cannot take; ``problems`` lists each field (and rows) at fault."""

    def __init__(self, problems: Sequence[Problem], where: str = "input",
                 label: Callable[[int], str] = row_label) -> None:
        self.problems = list(problems)
        super().__init__(f"{where}: " + "; ".join(p.text(label) for p in self.problems))


def check_columns(columns: Sequence[Any], spec: InputSpec, where: str = "input") -> None:
    """Refuse missing, repeated and unknown columns (before any value is looked at)."""
    names = [str(c) for c in columns]
    counts = Counter(names)
    present = set(counts)
    repeated = sorted(c for c, n in counts.items() if n > 1)
    problems = [Problem(c, "repeated column") for c in repeated]
    missing = [c for c in spec.columns if c not in present]
    problems += [Problem(c, "missing column") for c in missing]
    allowed = set(spec.columns) | spec.ignored
    unexpected = [c for c in counts if c not in allowed]
    hint = " (a renamed column?)" if missing else ""
    problems += [Problem(c[:100], f"unexpected column{hint}") for c in unexpected[:SAMPLE]]
    if unexpected:
        problems.append(Problem("(input)", f"{len(unexpected)} unexpected column(s) in all; "
                                f"the model takes {list(spec.columns)}"))
    if problems:
        raise InputError(problems, where)


def _shown(value: Any) -> str:
    """A value as a user wrote it (numpy scalars as plain numbers), cut to 60 characters."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(name: str, problem: str, mask: np.ndarray, series: pd.Series, first_row: int
         ) -> Problem:
    where = np.flatnonzero(mask)
    shown = where[:SAMPLE]
    return Problem(name, problem, tuple(int(i) + first_row for i in shown),
                   tuple(_shown(series.iloc[i]) for i in shown), len(where))


def _as_float(value: Any) -> Any:
    """A Python integer too large for a float (JSON allows 400 digits) as a signed infinity,
    so that it is refused as out of range instead of raising ``OverflowError``."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def _numeric(name: str, series: pd.Series, integer: bool, first_row: int
             ) -> tuple[np.ndarray, list[Problem]]:
    present = series.notna().to_numpy()
    if pd.api.types.is_bool_dtype(series):
        return np.full(len(series), np.nan), [
            _bad(name, "a boolean where a number is expected", present, series, first_row)]
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        problems = []
    else:  # text or mixed objects: numbers written as text pass, anything else is refused
        is_bool = series.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        plain = series.where(~is_bool, None).map(_as_float)
        values = pd.to_numeric(plain, errors="coerce").to_numpy(
            dtype="float64", na_value=np.nan, copy=True)
        wrong = present & (np.isnan(values) | is_bool)
        values[wrong] = np.nan
        problems = [_bad(name, "not a number", wrong, series, first_row)
                    ] if wrong.any() else []
    # The model's float32 features would hold 1e300 (or a 400-digit integer) as infinity.
    infinite = ~np.isnan(values) & ~(np.abs(values) <= FLOAT32_MAX)
    if infinite.any():
        problems.append(_bad(name, "not a finite number within float32's range (|x| <= "
                             f"{FLOAT32_MAX:.4g})", infinite, series, first_row))
    if integer:
        fractional = np.isfinite(values) & (values != np.round(values))
        unset = ~np.isfinite(values) & ~infinite
        for mask, what in ((fractional, "not a whole number"),
                           (unset, "missing (the model needs a whole number)")):
            if mask.any():
                problems.append(_bad(name, what, mask, series, first_row))
    return values, problems


def _text(name: str, series: pd.Series, first_row: int) -> tuple[pd.Series, list[Problem]]:
    if pd.api.types.is_string_dtype(series) and series.dtype != object:
        return series.astype("str").reset_index(drop=True), []
    is_text = series.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    wrong = series.notna().to_numpy() & ~is_text
    if wrong.any():
        return series, [_bad(name, "not text", wrong, series, first_row)]
    return series.astype("str").reset_index(drop=True), []


@dataclass(frozen=True)
class Checked:
    """Input that passed the checks: the model's columns with clean types, and the flags."""

    flags: np.ndarray  # one string per row: tokens joined by ";" ("" when none)
    counts: dict[str, int]  # rows carrying each flag
    #: The same columns as the serving fast path reads them (numbers as float64, text as
    #: objects, NaN where missing), when the check built them anyway (a small request).
    arrays: dict[str, np.ndarray] | None = None
    frame: pd.DataFrame | None = field(default=None, repr=False)
    spec: InputSpec | None = field(default=None, repr=False)

    @cached_property
    def features(self) -> pd.DataFrame:
        """The checked columns as a frame. A small request's is built from ``arrays`` when
        first asked for, which the fast path never does: pandas' frame of one row cost a
        one-row answer a tenth of its time; the inference log builds it in its own thread."""
        if self.frame is not None:
            return self.frame
        if self.arrays is None or self.spec is None:
            raise TabregError("a checked input holds neither its frame nor its columns")
        return _frame_of(self.arrays, self.spec)

    def stacked(self, more: Sequence[Checked]) -> pd.DataFrame:
        """The frame of these rows followed by those of ``more``, built once from their
        arrays when all have them for one model (the inference log's batch of one-row
        requests: a frame each cost 0.5 ms, one for the batch 0.02 ms a request)."""
        items = [self, *more]
        arrays = [c.arrays for c in items if c.frame is None and c.spec is self.spec]
        if self.spec is None or len(arrays) < len(items) or None in arrays:
            return pd.concat([c.features for c in items], ignore_index=True)
        return _frame_of({name: np.concatenate([a[name] for a in arrays if a is not None])
                          for name in self.spec.columns}, self.spec)

    def __len__(self) -> int:
        return len(self.flags)


def _frame_of(arrays: Mapping[str, np.ndarray], spec: InputSpec) -> pd.DataFrame:
    """The checked columns (as :func:`_plain` leaves them) as the frame the full check
    gives: whole numbers as int64, text as pandas' strings."""
    columns: dict[str, Any] = {
        name: arrays[name].astype("int64") if name in spec.integer else arrays[name]
        for name in spec.numeric}
    columns.update({name: pd.array(arrays[name], dtype="str") for name in spec.categorical})
    return pd.DataFrame(columns, columns=list(spec.columns))


def _join_flags(masks: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    flags = np.full(n, "", dtype=object)
    for token, mask in masks:
        if mask.any():
            current = flags[mask]
            flags[mask] = np.where(current == "", token, current + ";" + token)
    return flags


#: Up to this many rows, input of the usual types is checked column by column in numpy
#: (:func:`_check_plain`) rather than through pandas' per-column machinery, which costs more
#: than the model itself on a one-row request.
PLAIN_ROWS = 64


def _check_plain(frame: pd.DataFrame, spec: InputSpec) -> Checked | None:
    """The same result as :func:`check_frame` for a small frame of the types a JSON request
    gives (numbers as numbers, text as strings), every value acceptable; None for anything
    else, which :func:`check_frame` then checks and names in full."""
    numeric: dict[str, np.ndarray] = {}
    text: dict[str, np.ndarray] = {}
    for name in spec.numeric:
        series = frame[name]
        if series.dtype.kind not in "iuf":
            return None
        numeric[name] = series.to_numpy(dtype="float64", na_value=np.nan)
    for name in spec.categorical:
        series = frame[name]
        if not isinstance(series.dtype, pd.StringDtype):
            return None
        text[name] = series.to_numpy(dtype=object)
    return _plain(numeric, text, spec)


def check_values(values: Mapping[str, Sequence[Any]], spec: InputSpec) -> Checked | None:
    """The same result as :func:`check_frame` for a small request given as JSON values by
    column (numbers, strings, null), with the model's columns (and perhaps some it ignores)
    and every value acceptable; None for anything else, which the server then reads into a
    frame for :func:`check_frame` to check and name in full. Without pandas: its frame of
    one row and its per-column checks were a third of a one-row answer's time."""
    if not set(spec.columns) <= set(values) <= set(spec.columns) | spec.ignored:
        return None
    rows = len(values[spec.columns[0]])
    if not 0 < rows <= PLAIN_ROWS:
        return None
    numeric: dict[str, np.ndarray] = {}
    for name in spec.numeric:
        column = values[name]
        if len(column) != rows or not all(
                v is None or type(v) is float or type(v) is int for v in column):
            return None
        try:
            numeric[name] = np.array([np.nan if v is None else v for v in column],
                                     dtype=np.float64)
        except OverflowError:  # an integer of 400 digits: the full check names it
            return None
    text: dict[str, np.ndarray] = {}
    for name in spec.categorical:
        column = values[name]
        if len(column) != rows or not all(v is None or type(v) is str for v in column):
            return None
        text[name] = np.array(column, dtype=object)
    return _plain(numeric, text, spec)


def _plain(numeric: dict[str, np.ndarray], text: dict[str, np.ndarray], spec: InputSpec
           ) -> Checked | None:
    """The checks of :func:`check_frame` on columns of the usual types: numbers as float64
    (NaN where missing), text as objects (None or NaN where missing)."""
    arrays: dict[str, np.ndarray] = {}
    unknown: list[tuple[str, np.ndarray]] = []  # check_frame's order: unknown, then missing
    missing: list[tuple[str, np.ndarray]] = []
    for name in spec.numeric:
        values = numeric[name]
        absent = np.isnan(values)
        if not (np.abs(values[~absent]) <= FLOAT32_MAX).all():
            return None
        if name in spec.integer and (absent.any() or (values != np.round(values)).any()):
            return None
        arrays[name] = values
        missing.append((f"{MISSING}:{name}", absent))
    for name in spec.categorical:
        raw = text[name]
        absent = pd.isna(raw)
        arrays[name] = np.where(absent, np.nan, raw).astype(object)
        if name in spec.categories:
            known = spec.categories[name]
            unknown.append((f"{UNKNOWN_CATEGORY}:{name}", np.fromiter(
                (not a and v not in known for v, a in zip(raw, absent, strict=True)),
                dtype=bool, count=len(raw))))
        missing.append((f"{MISSING}:{name}", absent))
    masks = unknown + missing
    counts = {token: int(mask.sum()) for token, mask in masks if mask.any()}
    rows = len(next(iter(arrays.values())))
    return Checked(_join_flags(masks, rows), counts, arrays=arrays, spec=spec)


def check_frame(frame: pd.DataFrame, spec: InputSpec, *, first_row: int = 0,
                where: str = "input", label: Callable[[int], str] = row_label) -> Checked:
    """Check ``frame`` against ``spec`` (see the module's docstring); raise :class:`InputError`
    naming every field and the first rows at fault, or return the clean input and its flags.
    ``first_row`` numbers the rows of a chunk as in the whole file."""
    check_columns(frame.columns, spec, where)
    if frame.empty:
        raise InputError([Problem("(input)", "no rows to score")], where, label)
    if len(frame) <= PLAIN_ROWS and (plain := _check_plain(frame, spec)) is not None:
        return plain
    frame = frame.reset_index(drop=True)
    for name in spec.columns:  # pandas categoricals (from Parquet dictionaries): plain values
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object)
    columns: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in spec.numeric:
        columns[name], found = _numeric(name, frame[name], name in spec.integer, first_row)
        problems += found
    for name in spec.categorical:
        columns[name], found = _text(name, frame[name], first_row)
        problems += found
    if problems:
        raise InputError(problems, where, label)
    for name in spec.integer:
        columns[name] = columns[name].astype("int64")
    features = pd.DataFrame(columns, columns=list(spec.columns))
    masks = []
    for name in spec.categorical:
        if name in spec.categories:
            series = features[name]
            unknown = (series.notna() & ~series.isin(spec.categories[name])).to_numpy()
            masks.append((f"{UNKNOWN_CATEGORY}:{name}", unknown))
    for name in spec.columns:
        masks.append((f"{MISSING}:{name}", features[name].isna().to_numpy()))
    counts = {token: int(mask.sum()) for token, mask in masks if mask.any()}
    return Checked(_join_flags(masks, len(features)), counts, frame=features)


def predict_interval(model: Any, features: pd.DataFrame
                     ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The model's predictions, one float per row, and their intervals' bounds (None for a
    version registered before intervals)."""
    from tabreg.models.intervals import split_output

    pred, lower, upper = split_output(model.predict(features))
    if pred.shape[0] != len(features):
        raise TabregError(f"the model returned {pred.shape[0]} predictions for "
                          f"{len(features)} rows")
    return pred, lower, upper


def predict(model: Any, features: pd.DataFrame) -> np.ndarray:
    """The model's predictions as one float per row."""
    return predict_interval(model, features)[0]


def row_identity(frame: pd.DataFrame, features: pd.DataFrame, schema: SchemaConfig,
                 id_column: str | None = None, where: str = "input",
                 label: Callable[[int], str] = row_label, first_row: int = 0) -> pd.Series:
    """Each row's identity: its ``row_id`` column when it has one, else the hash of
    ``data.id_column`` (as ingest computes it), else the hash of its feature values."""
    from tabreg.data.identity import row_ids

    frame = frame.reset_index(drop=True)
    if ROW_ID in frame.columns:
        ids = frame[ROW_ID]
        if ids.isna().any():
            raise InputError([_bad(ROW_ID, "missing row id", ids.isna().to_numpy(), ids,
                                   first_row)], where, label)
        return ids.astype("str")
    if id_column and id_column in features.columns:
        return row_ids(features, [id_column])
    if id_column and id_column in frame.columns:
        return row_ids(frame, [id_column])
    keys = [c for c in schema.features if c in features.columns]
    if len(keys) != len(features.columns):
        keys = list(features.columns)
    return row_ids(features, keys)


def score_frame(model: Any, frame: pd.DataFrame, spec: InputSpec, schema: SchemaConfig, *,
                id_column: str | None = None, first_row: int = 0, where: str = "input",
                label: Callable[[int], str] = row_label,
                on_scored: Callable[[pd.DataFrame, dict[str, Any]], None] | None = None
                ) -> tuple[pd.DataFrame, dict[str, int]]:
    """Check and score one frame: ``row_id``, ``prediction`` (with ``lower`` and ``upper``
    when the model has intervals) and ``flags`` per row, and the number of rows carrying each
    flag. ``on_scored(features, columns)`` receives the checked input and those columns (for
    the inference log)."""
    checked = check_frame(frame, spec, first_row=first_row, where=where, label=label)
    ids = row_identity(frame, checked.features, schema, id_column, where, label, first_row)
    pred, lower, upper = predict_interval(model, checked.features)
    columns = {ROW_ID: ids.to_numpy(dtype=object), PREDICTION: pred}
    if lower is not None and upper is not None:
        columns.update({LOWER: lower, UPPER: upper})
    columns[FLAGS] = checked.flags
    if on_scored is not None:
        on_scored(checked.features, columns)
    return pd.DataFrame(columns), checked.counts


# --- files ----------------------------------------------------------------------------------

def table_kind(path: Path) -> str:
    """``csv`` or ``parquet`` from the file name; anything else is refused, naming both."""
    name = path.name.lower()
    if name.endswith(_CSV):
        return "csv"
    if name.endswith(_PARQUET):
        return "parquet"
    raise TabregError(f"{path}: unknown file type; use .csv (or .csv.gz) or .parquet")


def read_header(path: Path) -> list[str]:
    """The column names of a CSV or Parquet file, without reading its rows."""
    from tabreg.data.ingest import csv_header

    if table_kind(path) == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from None
    return csv_header(path, str(path))


def count_rows(path: Path) -> int | None:
    """The number of data rows, cheaply (None when that would mean decompressing)."""
    if table_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.name.lower().endswith(".gz"):
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def iter_chunks(path: Path, chunk_rows: int, text_columns: Sequence[str] = ()
                ) -> Iterator[pd.DataFrame]:
    """The file's rows, ``chunk_rows`` at a time; ``text_columns`` (all in the file's header)
    are read as text."""
    if table_kind(path) == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    dtypes = dict.fromkeys(text_columns, "str")
    try:  # only an empty cell is missing: "n/a" in a numeric column is text, and refused
        with pd.read_csv(path, chunksize=chunk_rows, dtype=dtypes, keep_default_na=False,
                         na_values=[""]) as reader:
            yield from reader
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: not a readable CSV file ({exc})") from None


@contextmanager
def _writer(kind: str, path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(ROW_ID, pa.string()), (PREDICTION, pa.float64()),
                            (FLAGS, pa.string())])
        with pq.ParquetWriter(path, schema) as writer:
            yield lambda frame: writer.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
        return
    first = [True]

    def write(frame: pd.DataFrame) -> None:
        frame.to_csv(path, mode="w" if first[0] else "a", header=first[0], index=False)
        first[0] = False

    yield write
    if first[0]:  # nothing written: still leave a valid (empty) file
        pd.DataFrame(columns=[ROW_ID, PREDICTION, FLAGS]).to_csv(path, index=False)


def _check_paths(source: Path, dest: Path) -> tuple[str, str]:
    """The kinds of ``source`` and ``dest`` (from their names); ``source`` must exist and
    ``dest`` must not be a folder."""
    if dest.is_dir():
        raise TabregError(f"{dest}: is a folder; name the output file, e.g. "
                          f"{dest / 'predictions.csv'}")
    kinds = table_kind(source), table_kind(dest)
    if not source.is_file():
        raise SchemaError(f"{source}: file not found")
    return kinds


def prepare_output(dest: Path) -> Path | None:
    """Make sure ``dest`` (not a folder: :func:`_check_paths`) can be written: its folder is
    writable, created when missing (returned, so the caller can say so; None if it existed)."""
    folder = dest.parent
    created = None
    if not folder.is_dir():
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise TabregError(f"{dest}: cannot create the output folder {folder} "
                              f"({exc.strerror or exc})") from None
        created = folder
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TabregError(f"{dest}: the output folder {folder} is not writable")
    return created


def score_file(model: Any, spec: InputSpec, source: Path, dest: Path, *, schema: SchemaConfig,
               id_column: str | None = None, chunk_rows: int = 100_000,
               progress: bool = False,
               on_scored: Callable[[pd.DataFrame, dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
    """Score ``source`` (CSV or Parquet) into ``dest`` (CSV or Parquet, by extension) in
    chunks of ``chunk_rows``, so memory stays bounded whatever the file's size (each chunk
    handed to ``on_scored``, as :func:`score_frame` does).

    ``dest`` gets ``row_id``, ``prediction`` and ``flags`` per input row, in input order, and
    appears only once complete (an error leaves a previous ``dest`` untouched). Input errors
    name the field and the rows (CSV: the line in the file); an output that cannot be written
    (a folder, a read-only place) is a :class:`TabregError` naming it.
    """
    source, dest = Path(source), Path(dest)
    kind, out_kind = _check_paths(source, dest)
    if dest.exists() and dest.resolve() == source.resolve():
        raise TabregError(f"{dest}: the output would overwrite the input")
    prepare_output(dest)
    where, label = str(source), (csv_line if kind == "csv" else row_label)
    header = read_header(source)
    check_columns(header, spec, where)
    try:
        return _score_into(model, spec, source, dest, out_kind, schema=schema,
                           id_column=id_column, chunk_rows=chunk_rows, progress=progress,
                           where=where, label=label, header=header, on_scored=on_scored)
    except OSError as exc:  # the output cannot be written (an input fault raises SchemaError)
        if exc.filename is None or Path(exc.filename).parent != dest.parent:
            raise
        raise TabregError(f"{dest}: cannot write the output ({exc.strerror or exc})") from None


def _score_into(model: Any, spec: InputSpec, source: Path, dest: Path, out_kind: str, *,
                schema: SchemaConfig, id_column: str | None, chunk_rows: int, progress: bool,
                where: str, label: Callable[[int], str], header: list[str],
                on_scored: Callable[[pd.DataFrame, dict[str, Any]], None] | None = None
                ) -> dict[str, Any]:
    from tqdm import tqdm

    from tabreg.io import atomic_path

    text = [c for c in (*spec.categorical, ROW_ID) if c in header]
    started, rows = time.perf_counter(), 0
    counts: dict[str, int] = {}
    flagged = 0
    with atomic_path(dest) as tmp, _writer(out_kind, tmp) as write, tqdm(
            total=count_rows(source) if progress else None, unit=" rows", unit_scale=True,
            desc=source.name, file=sys.stderr, disable=None if progress else True) as bar:
        for chunk in iter_chunks(source, chunk_rows, text):
            if chunk.empty:
                continue
            out, found = score_frame(model, chunk, spec, schema, id_column=id_column,
                                     first_row=rows, where=where, label=label,
                                     on_scored=on_scored)
            write(out)
            rows += len(out)
            flagged += int((out[FLAGS] != "").sum())
            for token, n in found.items():
                counts[token] = counts.get(token, 0) + n
            bar.update(len(out))
        if rows == 0:
            raise InputError([Problem("(input)", "no rows to score")], where)
    seconds = time.perf_counter() - started
    return {"input": str(source), "output": str(dest), "rows": rows,
            "rows_flagged": flagged, "flags": counts, "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds) if seconds > 0 else None}


def predict_file(config: Config, root: Path, source: Path, dest: Path, *,
                 version: str | None = None, chunk_rows: int | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """``python -m tabreg predict``: score a file with the champion (or ``version``)."""
    from tabreg.promotion import registry
    from tabreg.promotion.registry import CHAMPION

    source, dest = Path(source), Path(dest)
    _check_paths(source, dest)  # before anything slow
    created = prepare_output(dest)
    if created is not None:
        log.warning("predict: created the output folder %s", created)
    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    name = config.registry.model_name
    mlflow_client = registry.open_store(config, root)
    found = registry.find_version(mlflow_client, name, version)
    model, ref = registry.load_registered(name, found, CHAMPION if version is None else None)
    spec = spec_for(model, config.schema, config.data.id_column)
    inference, run_id = inference_log.open_log(config, root), inference_log.new_request_id()
    done = [0]  # rows of the file logged so far: the next chunk's first row number

    def keep(features: pd.DataFrame, scored: dict[str, Any]) -> None:
        """Each chunk into the inference log, written before the next (memory stays one
        chunk); a log that cannot be written is reported, never a reason to fail."""
        if inference is not None:
            inference.append(features, scored, request_id=run_id, source="predict",
                             model=name, version=ref.version, first_row=done[0])
            inference.flush()
        done[0] += len(features)

    try:
        result = score_file(model, spec, source, dest, schema=config.schema,
                            id_column=config.data.id_column,
                            chunk_rows=chunk_rows or config.serve.chunk_rows, progress=progress,
                            on_scored=keep)
    finally:
        if inference is not None:
            inference.close(timeout=5)
    logged = inference.status() if inference is not None else {"status": "off"}
    if logged["status"] == "failing":
        log.warning("predict: the inference log %s lost %d rows (%s)", logged["target"],
                    logged["rows_lost"] + logged["rows_waiting"], logged["error"])
    log.info("predict: %d rows scored by %s version %s -> %s", result["rows"], name,
             ref.version, dest)
    return {"model": ref.to_dict(), **result, "request_id": run_id, "inference_log": logged,
            **({"created_folder": str(created)} if created is not None else {})}
