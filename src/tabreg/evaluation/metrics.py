"""Regression metrics and bootstrap intervals of RMSE.

A single test-set RMSE hides how much it would move on another sample of rows, so the
pipeline reports a percentile bootstrap interval next to it, and compares a challenger with
the champion on the *same* resampled rows (a paired bootstrap): the two models' errors are
strongly correlated, and pairing removes that shared noise from their difference.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

#: Elements (resamples x rows) drawn per chunk: about 12 bytes each (int32 index + float64
#: gathered error), so a chunk stays near 100 MB whatever the size of the test set.
_CHUNK_ELEMENTS = 1 << 23


def _as_1d(name: str, values: object) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or inf)")
    return array


def _check(**arrays: object) -> list[np.ndarray]:
    """Convert to float vectors and fail early, with names, on what would give silent garbage."""
    out = [_as_1d(name, values) for name, values in arrays.items()]
    lengths = {name: len(a) for name, a in zip(arrays, out, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")
    return out


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def rmse(y_true: object, y_pred: object) -> float:
    """The project's one RMSE (tuning, the blend, the gate, slices, evaluation)."""
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(*_check(y_true=y_true, y_pred=y_pred)))


def regression_metrics(y_true: object, y_pred: object) -> dict[str, float]:
    """RMSE, MAE, R² (scikit-learn's: finite on a constant target), MAPE (percent) and the
    row count. MAPE is hand-written because scikit-learn's divides by a floor of machine
    epsilon where the true value is 0, which explodes; here those rows are skipped (it is
    undefined there; NaN if all are)."""
    from sklearn.metrics import mean_absolute_error, r2_score

    y, p = _check(y_true=y_true, y_pred=y_pred)
    nonzero = y != 0
    mape = (float(np.mean(np.abs(p[nonzero] - y[nonzero]) / np.abs(y[nonzero]))) * 100
            if nonzero.any() else float("nan"))
    return {"rmse": rmse(y, p), "mae": float(mean_absolute_error(y, p)),
            "r2": float(r2_score(y, p)) if y.size > 1 else float("nan"),  # undefined on 1 row
            "mape": mape, "n": int(y.size)}


def _resampled_indices(n_rows: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each bootstrap resample, a chunk of resamples at a time.

    The chunk size depends only on ``n_rows``, so the same seed always gives the same
    resamples; int32 indices halve the memory where the row count allows.
    """
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n_rows < np.iinfo(np.int32).max else np.int64
    per_chunk = max(1, _CHUNK_ELEMENTS // n_rows)
    for start in range(0, n_resamples, per_chunk):
        size = min(per_chunk, n_resamples - start)
        yield rng.integers(0, n_rows, size=(size, n_rows), dtype=dtype)


def _resampled_rmse(squared: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.sqrt(squared[idx].mean(axis=1))


def _percentiles(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_rmse(y_true: object, y_pred: object, *, n_resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 42) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the RMSE, rows resampled with
    replacement; seeded, so a rerun of the pipeline reports the same interval."""
    y, p = _check(y_true=y_true, y_pred=y_pred)
    _check_bootstrap(n_resamples, confidence)
    squared = (p - y) ** 2
    stats = np.concatenate([_resampled_rmse(squared, idx)
                            for idx in _resampled_indices(y.size, int(n_resamples), seed)])
    return _percentiles(stats, confidence)


def paired_bootstrap_diff(y_true: object, pred_a: object, pred_b: object, *,
                          n_resamples: int = 1000, confidence: float = 0.95,
                          seed: int = 42) -> dict:
    """RMSE(a) − RMSE(b), with a percentile interval from resamples shared by both models.

    A positive interval (``low > 0``) means B is better than A beyond resampling noise.
    Returns ``{"diff", "low", "high", "n_resamples"}``; ``diff`` is the full-sample value.
    """
    y, a, b = _check(y_true=y_true, pred_a=pred_a, pred_b=pred_b)
    _check_bootstrap(n_resamples, confidence)
    sq_a, sq_b = (a - y) ** 2, (b - y) ** 2
    chunks = [_resampled_rmse(sq_a, idx) - _resampled_rmse(sq_b, idx)
              for idx in _resampled_indices(y.size, int(n_resamples), seed)]
    low, high = _percentiles(np.concatenate(chunks), confidence)
    diff = float(np.sqrt(sq_a.mean()) - np.sqrt(sq_b.mean()))
    return {"diff": diff, "low": low, "high": high, "n_resamples": int(n_resamples)}


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> dict[str, float]:
    """The share of rows whose interval holds the truth, and the intervals' mean width."""
    y = np.asarray(y, dtype=float)
    inside = (lower <= y) & (y <= upper)
    return {"coverage": float(inside.mean()) if y.size else float("nan"),
            "width": float(np.mean(upper - lower)) if y.size else float("nan")}
