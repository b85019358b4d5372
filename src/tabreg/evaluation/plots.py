"""Evaluation and tuning figures, written as PNG files.

Each function builds a :class:`matplotlib.figure.Figure` directly instead of going through
``pyplot``: no global figure registry, no interactive backend, nothing to close, so it is
safe in worker processes and tests. Scatter plots draw a seeded sample of at most
:data:`MAX_POINTS` rows: beyond that, points only overlap, and the file and time grow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

MAX_POINTS = 20_000
DPI = 100
MONEY = "$"


def _figure(width: float = 7.0, height: float = 5.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _money_axis(axis: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))


def _sample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _sample_note(n: int) -> str:
    return f" (sample of {MAX_POINTS:,} of {n:,})" if n > MAX_POINTS else f" ({n:,} rows)"


def _detect_cap(y: np.ndarray) -> float | None:
    """The top value if many rows pile up on it, as on a censored target (500,001)."""
    top = float(np.max(y))
    count = int(np.sum(y == top))
    return top if count >= max(2, 0.001 * y.size) else None


def _empty(path: str | Path, title: str, message: str) -> Path:
    fig = _figure(6, 2.5)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(fig, path)


def predicted_vs_actual(y_true: Any, y_pred: Any, path: str | Path) -> Path:
    """Scatter of predicted against actual value with the y = x line; a note marks a capped
    target, whose top districts are under-valued by the data itself, not by the model."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    keep = _sample(y.size)
    fig = _figure(6.5, 6)
    ax = fig.add_subplot()
    ax.scatter(y[keep], p[keep], s=6, alpha=0.25, linewidths=0, label="district")
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="perfect (y = x)")
    cap = _detect_cap(y)
    if cap is not None:
        ax.axvline(cap, color="tab:red", linestyle=":", linewidth=1)
        ax.text(0.02, 0.98, f"target capped at {cap:,.0f}:\nerrors there are understated",
                transform=ax.transAxes, va="top", fontsize=9, color="tab:red")
    ax.set_title("Predicted vs actual" + _sample_note(y.size))
    ax.set_xlabel(f"Actual value ({MONEY})")
    ax.set_ylabel(f"Predicted value ({MONEY})")
    _money_axis(ax.xaxis)
    _money_axis(ax.yaxis)
    ax.legend(loc="lower right")
    return _save(fig, path)


def residuals(y_true: Any, y_pred: Any, path: str | Path) -> Path:
    """Histogram of residuals (predicted − actual): skew or an off-centre peak means bias."""
    err = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(err, bins=min(60, max(5, int(np.sqrt(err.size)))), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", linewidth=1, label="0")
    ax.axvline(float(err.mean()), color="tab:red", linestyle="--", linewidth=1,
               label=f"mean {err.mean():,.0f}")
    ax.set_title(f"Residuals ({err.size:,} rows)")
    ax.set_xlabel(f"Predicted − actual ({MONEY})")
    ax.set_ylabel("Districts")
    _money_axis(ax.xaxis)
    ax.legend()
    return _save(fig, path)


def rmse_by_slice(table: list[dict], path: str | Path) -> Path:
    """Horizontal RMSE bars, one colour per slice, ``n`` in each label (a bar from a handful
    of rows is noise) and the overall RMSE as a reference line."""
    if not table:
        return _empty(path, "RMSE by slice", "no slices configured")
    names = list(dict.fromkeys(row["slice"] for row in table))
    fig = _figure(8, 1.2 + 0.32 * (len(table) + len(names)))
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(names))]
    pos, ticks, labels = 0.0, [], []
    for i, name in enumerate(names):
        rows = [r for r in table if r["slice"] == name]
        ys = [pos + k for k in range(len(rows))]
        ax.barh(ys, [r["rmse"] for r in rows], color=colours[i], label=name)
        ticks += ys
        labels += [f"{r['value']} (n={r['n']:,})" for r in rows]
        pos += len(rows) + 1
    first = [r for r in table if r["slice"] == names[0]]
    total = math.sqrt(sum(r["n"] * r["rmse"] ** 2 for r in first) / sum(r["n"] for r in first))
    ax.axvline(total, color="black", linestyle="--", linewidth=1, label=f"overall {total:,.0f}")
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_title("RMSE by slice")
    ax.set_xlabel(f"RMSE ({MONEY})")
    _money_axis(ax.xaxis)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def error_map(longitude: Any, latitude: Any, error: Any, path: str | Path) -> Path:
    """Districts on the map coloured by signed error (diverging: red over-, blue
    under-predicted), clipped at the 98th percentile so a few outliers do not wash it out."""
    from matplotlib.colors import TwoSlopeNorm

    lon, lat = np.asarray(longitude, dtype=float), np.asarray(latitude, dtype=float)
    err = np.asarray(error, dtype=float)
    ok = np.isfinite(lon) & np.isfinite(lat) & np.isfinite(err)
    lon, lat, err = lon[ok], lat[ok], err[ok]
    keep = _sample(err.size)
    limit = float(np.quantile(np.abs(err), 0.98)) if err.size else 1.0
    limit = limit if limit > 0 else 1.0
    fig = _figure(7, 6.5)
    ax = fig.add_subplot()
    points = ax.scatter(lon[keep], lat[keep], c=err[keep], s=5, cmap="RdBu_r",
                        norm=TwoSlopeNorm(0.0, -limit, limit), linewidths=0)
    fig.colorbar(points, ax=ax, label=f"Predicted − actual ({MONEY})", shrink=0.8,
                 extend="both", format="{x:,.0f}")
    if lat.size:
        ax.set_aspect(1 / math.cos(math.radians(float(np.mean(lat)))))
    ax.set_title("Error by location" + _sample_note(err.size))
    ax.set_xlabel("Longitude (°)")
    ax.set_ylabel("Latitude (°)")
    return _save(fig, path)


def _series(history: list[dict], key: str) -> list[float]:
    return [math.nan if h.get(key) is None else float(h[key]) for h in history]


def learning_curves(history: list[dict], path: str | Path) -> Path:
    """Training loss and validation RMSE per epoch, in two panels (their units differ), with
    the best validation epoch marked: the one early stopping kept."""
    if not history:
        return _empty(path, "Learning curves", "no epochs recorded")
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    loss, val = _series(history, "train_loss"), _series(history, "val_rmse")
    fig = _figure(7, 6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(epochs, loss, "o-", markersize=3, color="tab:blue")
    top.set_ylabel("Training loss")
    top.set_title("Learning curves")
    bottom.plot(epochs, val, "o-", markersize=3, color="tab:orange", label="validation RMSE")
    if not all(math.isnan(v) for v in val):
        best = int(np.nanargmin(val))
        bottom.axvline(epochs[best], color="grey", linestyle=":",
                       label=f"best: epoch {epochs[best]} ({val[best]:,.0f})")
    bottom.set_xlabel("Epoch")
    bottom.set_ylabel(f"Validation RMSE ({MONEY})")
    _money_axis(bottom.yaxis)
    bottom.legend()
    return _save(fig, path)


def tuning_history(trials: list[dict], path: str | Path) -> Path:
    """Objective per trial, coloured by model family, with the running best of completed
    trials; pruned trials are grey crosses, failed ones red ticks along the bottom."""
    if not trials:
        return _empty(path, "Tuning history", "no trials")
    fig = _figure(8, 5)
    ax = fig.add_subplot()
    state = [str(t.get("state", "")).upper() for t in trials]
    done = [t for t, s in zip(trials, state, strict=True) if s == "COMPLETE"
            and t.get("value") is not None]
    for i, family in enumerate(sorted({str(t.get("family")) for t in done})):
        mine = [t for t in done if str(t.get("family")) == family]
        ax.scatter([t["number"] for t in mine], [t["value"] for t in mine], s=25,
                   color=f"C{i % 10}", label=family, zorder=3)
    pruned = [t for t, s in zip(trials, state, strict=True) if s == "PRUNED"
              and t.get("value") is not None]
    if pruned:
        ax.scatter([t["number"] for t in pruned], [t["value"] for t in pruned], marker="x",
                   color="grey", label="pruned", zorder=2)
    failed = [t["number"] for t, s in zip(trials, state, strict=True) if s == "FAIL"]
    if failed:
        ax.scatter(failed, [0.02] * len(failed), marker="|", s=120, color="tab:red",
                   transform=ax.get_xaxis_transform(), label="failed", zorder=2)
    if done:
        order = sorted(done, key=lambda t: t["number"])
        best = np.minimum.accumulate([float(t["value"]) for t in order])
        ax.step([t["number"] for t in order], best, where="post", color="black",
                label="best so far")
        values = [float(t["value"]) for t in done + pruned]
        if min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")
    ax.set_title(f"Tuning history ({len(done)} complete of {len(trials)} trials)")
    ax.set_xlabel("Trial number")
    ax.set_ylabel(f"Objective: CV RMSE ({MONEY})")
    if ax.get_yscale() == "linear":
        _money_axis(ax.yaxis)
    ax.legend(fontsize=8)
    return _save(fig, path)


def param_importances(importances: dict[str, float], path: str | Path) -> Path:
    """Hyperparameter importances (fANOVA share of objective variance), largest on top."""
    if not importances:
        return _empty(path, "Hyperparameter importance", "no importances available")
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(7, 1.2 + 0.35 * len(items))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [float(v) for _, v in items], color="tab:green")
    ax.set_title("Hyperparameter importance")
    ax.set_xlabel("Share of objective variance explained")
    return _save(fig, path)
