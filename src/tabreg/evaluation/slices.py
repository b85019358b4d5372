"""Metrics per slice of the test set (the slices ``evaluate.slices`` declares).

An overall RMSE can look fine while one kind of row is served badly; the per-slice
table makes that visible in the model card. Every row of the test set falls in exactly one
value of each slice (missing values get their own), so each slice's errors recombine to the
overall RMSE: ``sum(n * rmse**2) / N == rmse_total**2``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tabreg.evaluation.metrics import _check, coverage, regression_metrics

if TYPE_CHECKING:
    from tabreg.config import Slice

MISSING = "missing"
#: A number outside every bin: not missing data, so it gets a label of its own.
OUT_OF_RANGE = "out of range"


def _interval_label(low: float, high: float) -> str:
    return f"({low:g}, {high:g}]"


def _value_order(spec: Slice) -> list[str]:
    """Binned slices keep the bins' order (not alphabetical: "10" would sort before "2")."""
    if spec.bins is None:
        return []
    if spec.labels is not None:
        return list(spec.labels)
    return [_interval_label(a, b) for a, b in zip(spec.bins, spec.bins[1:], strict=False)]


def slice_labels(frame: pd.DataFrame, spec: Slice) -> pd.Series:
    """The slice value of each row, as strings, aligned with ``frame``'s index.

    With bins: the interval (``pandas.cut``, right-closed) named by ``spec.labels`` or as
    ``"(a, b]"``; without: the column's own values. NaN becomes ``"missing"``, and a number
    outside every bin ``"out of range"``.
    """
    if spec.column not in frame.columns:
        raise ValueError(f"slice {spec.name!r}: column {spec.column!r} is not in the frame")
    column = frame[spec.column]
    missing = column.isna().to_numpy()
    if spec.bins is None:
        labels = np.where(missing, MISSING, column.astype(object).astype(str).to_numpy())
    else:
        values = pd.to_numeric(column, errors="raise")
        codes = pd.cut(values, bins=list(spec.bins), right=True, labels=False).to_numpy()
        names = np.array(_value_order(spec) + [OUT_OF_RANGE], dtype=object)
        unplaced = np.isnan(codes)
        codes = np.where(unplaced, len(names) - 1, np.nan_to_num(codes)).astype(int)
        labels = np.where(missing, MISSING, names[codes])
    return pd.Series(labels, index=frame.index, name=spec.name, dtype=object)


def _sort_key(spec: Slice, value: str) -> tuple[int, int, str]:
    order = _value_order(spec)
    rank = {OUT_OF_RANGE: 1, MISSING: 2}.get(value, 0)
    position = order.index(value) if value in order else 0
    return rank, position, value


def _row(name: str, value: str, y: np.ndarray, pred: np.ndarray, total: int) -> dict:
    metrics = regression_metrics(y, pred)
    return {"slice": name, "value": value, "n": int(y.size), "share": y.size / total,
            "rmse": metrics["rmse"], "mae": metrics["mae"], "bias": float(np.mean(pred - y))}


def slice_table(frame: pd.DataFrame, y_true: object, y_pred: object,
                slices: Iterable[Slice],
                bounds: tuple[np.ndarray, np.ndarray] | None = None) -> list[dict]:
    """One row per (slice, value) present in the data: slice, value, n, share, rmse, mae,
    bias (mean of predicted − actual; positive means over-prediction), and for a labelled bin
    its ``range`` in words (``1.5 < median_income ≤ 3`` beside the label ``2``). With the
    prediction intervals' ``bounds`` (lower, upper), also their ``coverage`` and mean
    ``width`` in the slice.

    ``y_true`` and ``y_pred`` are matched to ``frame`` by position. Rows come in the order of
    ``slices``, then bin order (or alphabetical for categories), "missing" last; values with
    no rows are left out. Plain Python numbers, so the table can be written as JSON.
    """
    y, p = _check(y_true=y_true, y_pred=y_pred)
    if len(frame) != y.size:
        raise ValueError(f"frame has {len(frame)} rows but y_true has {y.size}")
    table: list[dict] = []
    for spec in slices:
        labels = slice_labels(frame, spec).to_numpy()
        ranges = spec.ranges
        for value in sorted(set(labels), key=functools.partial(_sort_key, spec)):
            rows = labels == value
            row = _row(spec.name, value, y[rows], p[rows], y.size)
            if bounds is not None:
                row.update(coverage(y[rows], bounds[0][rows], bounds[1][rows]))
            table.append({**row, "range": ranges[value]} if value in ranges else row)
    return table
