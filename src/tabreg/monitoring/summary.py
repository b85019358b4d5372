"""What ``make monitor`` concludes from a window of served traffic: pure functions of the
window (the inference log's rows, with labels where they came), the champion's training rows
and its test figures.

* **Input drift**, per feature, with the retrain flow's own checks (PSI, KS, missing rate, new
  categories: :mod:`tabreg.promotion.drift`), so that "drift" means the same thing in both.
* **Prediction drift**: the window's predictions against the champion's predictions on its
  training rows, with the same PSI.
* **Flags**: the share of rows scored with a flag (a missing value, a category never seen).
* **Live quality**, where labels exist: RMSE with its bootstrap interval, MAE and the
  intervals' coverage, overall and per slice, beside the champion's test figures.
* **The verdict**: ``act`` on major drift, or when the live RMSE is above the upper end of the
  champion's test interval on enough labelled rows; ``warn`` on moderate drift, many flagged
  rows, intervals that cover clearly less than promised, or a live RMSE whose bootstrap
  interval lies above the test RMSE (so that chance alone, half the time above, does not
  warn); ``ok`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.evaluation import metrics
from tabreg.evaluation.slices import slice_table
from tabreg.promotion import drift

VERDICTS = ("ok", "warn", "act")


@dataclass(frozen=True)
class Champion:
    """The served model's figures on its own test split (its evaluation)."""

    version: str
    rmse: float
    rmse_low: float
    rmse_high: float
    level: float | None = None  # its intervals' level; None: registered without intervals


def flag_shares(flags: pd.Series) -> dict[str, Any]:
    """The share of rows with any flag, and per flag (``missing:total_bedrooms``, ...)."""
    tokens = flags.fillna("").astype(str)
    n = max(len(tokens), 1)
    counts: dict[str, int] = {}
    for row in tokens:
        for token in filter(None, row.split(";")):
            counts[token] = counts.get(token, 0) + 1
    return {"any": float((tokens != "").sum() / n),
            "by_flag": {k: v / n for k, v in sorted(counts.items())}}


def live_quality(window: pd.DataFrame, config: Config, champion: Champion) -> dict[str, Any]:
    """RMSE (with its bootstrap interval), MAE and coverage on the labelled rows, overall and
    per slice; empty when no row has a label."""
    target = config.schema.target
    labelled = window[window[target].notna()] if target in window else window.iloc[:0]
    if labelled.empty:
        return {"rows": 0}
    y = labelled[target].to_numpy(dtype=float)
    pred = labelled["prediction"].to_numpy(dtype=float)
    ev = config.evaluate
    low, high = metrics.bootstrap_rmse(y, pred, n_resamples=ev.bootstrap,
                                       confidence=ev.confidence, seed=ev.seed)
    scores = metrics.regression_metrics(y, pred)
    bounds = None
    if champion.level is not None and labelled["lower"].notna().all():
        bounds = (labelled["lower"].to_numpy(dtype=float),
                  labelled["upper"].to_numpy(dtype=float))
    out: dict[str, Any] = {"rows": len(labelled), "rmse": scores["rmse"], "mae": scores["mae"],
                           "rmse_low": low, "rmse_high": high}
    if bounds is not None:
        out.update({f"interval_{k}": v for k, v in metrics.coverage(y, *bounds).items()})
    present = [s for s in ev.slices if s.column in labelled]
    out["slices"] = slice_table(labelled, y, pred, present, bounds=bounds)
    return out


def verdict(drifted: dict[str, Any], flags: dict[str, Any], live: dict[str, Any],
            champion: Champion, config: Config) -> tuple[str, list[str]]:
    """``ok``, ``warn`` or ``act``, with the reasons (each a sentence)."""
    monitor, reasons = config.monitor, []
    act = warn = False
    if drifted["level"] == "major":
        act = True
        reasons.append(f"major input drift: {drifted['worst_feature']} (PSI "
                       f"{drifted['max_psi']:.2f})")
    elif drifted["level"] == "moderate":
        warn = True
        reasons.append(f"moderate input drift: {drifted['worst_feature']} (PSI "
                       f"{drifted['max_psi']:.2f})")
    if flags["any"] > monitor.flag_share_warn:
        warn = True
        reasons.append(f"{flags['any']:.1%} of the rows were scored with a flag (more than "
                       f"{monitor.flag_share_warn:.0%})")
    if live.get("rows", 0) >= monitor.min_labels:
        if live["rmse"] > champion.rmse_high:
            act = True
            reasons.append(f"live RMSE {live['rmse']:,.0f} on {live['rows']:,} labelled rows "
                           f"is above the champion's test interval (up to "
                           f"{champion.rmse_high:,.0f})")
        elif live["rmse_low"] > champion.rmse:  # clearly worse, not a draw of chance
            warn = True
            reasons.append(f"live RMSE {live['rmse']:,.0f} (at least {live['rmse_low']:,.0f}) "
                           f"is above the champion's test RMSE {champion.rmse:,.0f}, within "
                           "its interval")
        coverage = live.get("interval_coverage")
        if coverage is not None and champion.level is not None and \
                coverage < champion.level - monitor.coverage_gap:
            warn = True
            reasons.append(f"the {champion.level:.0%} intervals held the truth for "
                           f"{coverage:.1%} of the labelled rows")
    elif live.get("rows", 0):
        reasons.append(f"only {live['rows']:,} labelled rows: live quality is shown, not "
                       f"judged (monitor.min_labels = {monitor.min_labels})")
    return ("act" if act else "warn" if warn else "ok"), reasons


def summarize(window: pd.DataFrame, reference: pd.DataFrame, reference_predictions: np.ndarray,
              champion: Champion, config: Config) -> dict[str, Any]:
    """The whole summary of one window (see the module docstring); a window without rows
    says so and is ``ok``."""
    if window.empty:
        return {"rows": 0, "verdict": "ok", "reasons": ["nothing to monitor: the window has "
                                                        "no scored rows"]}
    schema, settings = config.schema, config.retrain.drift
    drifted = drift.drift_report(reference, window, schema.numeric, schema.categorical,
                                 settings)
    predicted = drift.numeric_drift(pd.Series(reference_predictions), window["prediction"],
                                    settings.bins)
    predicted["level"] = drift.level(predicted["psi"], settings)
    flags = flag_shares(window["flags"])
    live = live_quality(window, config, champion)
    decided, reasons = verdict(drifted, flags, live, champion, config)
    return {"rows": len(window), "requests": int(window["request_id"].nunique()),
            "from": str(window["time"].min()), "to": str(window["time"].max()),
            "versions": sorted(map(str, window["model_version"].unique())),
            "input_drift": drifted, "prediction_drift": predicted, "flags": flags,
            "live": live, "champion": champion.__dict__, "verdict": decided,
            "reasons": reasons}


def to_label(window: pd.DataFrame, target: str, rows: int) -> pd.DataFrame:
    """The window's unlabelled rows the model was least sure of (widest intervals first), for
    people to label: the book's advice for finding where a live model goes wrong."""
    pending = window[window[target].isna()] if target in window else window
    if "lower" not in pending or pending["lower"].isna().all():
        return pending.head(0)
    width = pending["upper"] - pending["lower"]
    return pending.assign(interval_width=width).nlargest(rows, "interval_width")
