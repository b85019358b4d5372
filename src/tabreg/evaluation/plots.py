"""Evaluation and tuning figures, written as PNG files.

Each function builds a :class:`matplotlib.figure.Figure` directly instead of going through
``pyplot``: no global figure registry, no interactive backend, nothing to close, so it is
safe in worker processes and tests. Scatter plots draw a seeded sample of at most
:data:`MAX_POINTS` rows: beyond that, points only overlap, and the file and time grow.
Nothing here knows the problem: the target's unit and what a row is come from the caller
(``problem:`` in ``params.yaml``). A plot a run cannot draw is still written, saying why
(:func:`not_drawn`), so its absence never looks like a fault.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from tabreg.evaluation.card import capped_at, number

MAX_POINTS = 20_000
DPI = 100


def _figure(width: float = 7.0, height: float = 5.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def figure_text(fig: Any) -> str:
    """Every piece of text the figure shows (titles, labels, ticks, legends, notes), one per
    line: written into the PNG's ``Description`` so that what a plot says can be searched and
    checked (the tests read it back) without reading pixels."""
    from matplotlib.axis import Axis
    from matplotlib.text import Text

    def shown(artist: Any) -> Any:
        if not artist.get_visible() or (isinstance(artist, Axis) and not artist.axes.axison):
            return
        if isinstance(artist, Text) and artist.get_text().strip():
            yield artist.get_text().strip()
        for child in artist.get_children():
            yield from shown(child)

    fig.draw_without_rendering()  # tick labels exist only once the figure is laid out
    return "\n".join(dict.fromkeys(shown(fig)))


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI, metadata={"Description": figure_text(fig)})
    return path


def _labelled(text: str, unit: str) -> str:
    return f"{text} ({unit})" if unit else text


def _formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: number(x))


def _value_axis(axis: Any) -> None:
    axis.set_major_formatter(_formatter())


def _sample(n: int, seed: int = 0) -> np.ndarray:
    if n <= MAX_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_POINTS, replace=False))


def _sample_note(n: int) -> str:
    return f" (sample of {MAX_POINTS:,} of {n:,})" if n > MAX_POINTS else f" ({n:,} rows)"


def not_drawn(path: str | Path, title: str, reason: str) -> Path:
    """A placeholder where a plot would be, saying why this run did not draw it (too few
    trials, no MLP trained...): a missing file would look like a fault."""
    fig = _figure(6, 2.5)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, reason, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()
    return _save(fig, path)


def predicted_vs_actual(y_true: Any, y_pred: Any, path: str | Path, *, unit: str = "",
                        rows: str = "rows") -> Path:
    """Scatter of predicted against actual value with the y = x line; a note marks a capped
    target, whose top rows are under-valued by the data itself, not by the model. ``unit`` is
    the target's, ``rows`` what a row is (``problem:``)."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    keep = _sample(y.size)
    fig = _figure(6.5, 6)
    ax = fig.add_subplot()
    ax.scatter(y[keep], p[keep], s=6, alpha=0.25, linewidths=0, label=f"test {rows}")
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, label="perfect (y = x)")
    cap = capped_at(y)
    if cap is not None:
        ax.axvline(cap, color="tab:red", linestyle=":", linewidth=1)
        ax.text(0.02, 0.98, f"target capped at {number(cap)}:\nerrors there are understated",
                transform=ax.transAxes, va="top", fontsize=9, color="tab:red")
    ax.set_title("Predicted vs actual" + _sample_note(y.size))
    ax.set_xlabel(_labelled("Actual value", unit))
    ax.set_ylabel(_labelled("Predicted value", unit))
    _value_axis(ax.xaxis)
    _value_axis(ax.yaxis)
    ax.legend(loc="lower right")
    return _save(fig, path)


def residuals(y_true: Any, y_pred: Any, path: str | Path, *, unit: str = "",
              rows: str = "rows") -> Path:
    """Histogram of residuals (predicted − actual): skew or an off-centre peak means bias."""
    err = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(err, bins=min(60, max(5, int(np.sqrt(err.size)))), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", linewidth=1, label="0")
    ax.axvline(float(err.mean()), color="tab:red", linestyle="--", linewidth=1,
               label=f"mean {number(float(err.mean()))}")
    ax.set_title(f"Residuals ({err.size:,} rows)")
    ax.set_xlabel(_labelled("Predicted − actual", unit))
    ax.set_ylabel(f"Test {rows}")
    _value_axis(ax.xaxis)
    ax.legend()
    return _save(fig, path)


def _slice_label(row: dict) -> str:
    """``2: 1.5 < median_income ≤ 3 (n=1,234)``: a bin's label alone says nothing."""
    value = f"{row['value']}: {row['range']}" if row.get("range") else str(row["value"])
    return f"{value} (n={row['n']:,})"


def rmse_by_slice(table: list[dict], path: str | Path, *, unit: str = "") -> Path:
    """Horizontal RMSE bars, one colour per slice, ``n`` (and a bin's range) in each label (a
    bar from a handful of rows is noise) and the overall RMSE as a reference line. The legend
    sits below the axes, where it covers no bar."""
    if not table:
        return not_drawn(path, "RMSE by slice", "no slices configured (evaluate.slices)")
    return _save(slice_figure(table, unit), path)


def slice_figure(table: list[dict], unit: str = "") -> Any:
    """The figure of :func:`rmse_by_slice` (a non-empty table), unsaved."""
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
        labels += [_slice_label(r) for r in rows]
        pos += len(rows) + 1
    first = [r for r in table if r["slice"] == names[0]]
    total = math.sqrt(sum(r["n"] * r["rmse"] ** 2 for r in first) / sum(r["n"] for r in first))
    ax.axvline(total, color="black", linestyle="--", linewidth=1,
               label=f"overall {number(total)}")
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_title("RMSE by slice")
    ax.set_xlabel(_labelled("RMSE", unit))
    _value_axis(ax.xaxis)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8,
               ncols=min(4, len(names) + 1), frameon=False)
    return fig


def error_map(longitude: Any, latitude: Any, error: Any, path: str | Path, *,
              unit: str = "") -> Path:
    """Rows on the map coloured by signed error (diverging: red over-, blue under-predicted),
    clipped at the 98th percentile so a few outliers do not wash it out."""
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
    fig.colorbar(points, ax=ax, label=_labelled("Predicted − actual", unit), shrink=0.8,
                 extend="both", format=_formatter())
    if lat.size:
        ax.set_aspect(1 / math.cos(math.radians(float(np.mean(lat)))))
    ax.set_title("Error by location" + _sample_note(err.size))
    ax.set_xlabel("Longitude (°)")
    ax.set_ylabel("Latitude (°)")
    return _save(fig, path)


def _series(history: list[dict], key: str) -> list[float]:
    return [math.nan if h.get(key) is None else float(h[key]) for h in history]


def learning_curves(history: list[dict], path: str | Path, *, unit: str = "") -> Path:
    """Training loss and validation RMSE per epoch, in two panels (their units differ), with
    the best validation epoch marked: the one early stopping kept."""
    if not history:
        return not_drawn(path, "Learning curves", "no epochs recorded")
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
                       label=f"best: epoch {epochs[best]} ({number(val[best])})")
    bottom.set_xlabel("Epoch")
    bottom.set_ylabel(_labelled("Validation RMSE", unit))
    _value_axis(bottom.yaxis)
    bottom.legend()
    return _save(fig, path)


def tuning_history(trials: list[dict], path: str | Path, *, unit: str = "") -> Path:
    """Objective per trial, coloured by model family, with the running best of completed
    trials; pruned trials are grey crosses, failed ones red ticks along the bottom. Trial
    numbers are whole: the axis never ticks at 2.5."""
    from matplotlib.ticker import MaxNLocator

    if not trials:
        return not_drawn(path, "Tuning history", "no trials")
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_labelled("Objective: CV RMSE", unit))
    if ax.get_yscale() == "linear":
        _value_axis(ax.yaxis)
    ax.legend(fontsize=8)
    return _save(fig, path)


def param_importances(importances: dict[str, float], path: str | Path) -> Path:
    """Hyperparameter importances (fANOVA share of objective variance), largest on top."""
    if not importances:
        return not_drawn(path, "Hyperparameter importance", "no importances available")
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(7, 1.2 + 0.35 * len(items))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [float(v) for _, v in items], color="tab:green")
    ax.set_title("Hyperparameter importance")
    ax.set_xlabel("Share of objective variance explained")
    return _save(fig, path)
