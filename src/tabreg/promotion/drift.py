"""Drift of new data against the training reference, feature by feature.

Before retraining on a new batch, the retrain flow asks how different it is from the rows the
current model learned from. Per feature: the population stability index (PSI) over the
reference's quantile bins (or its categories), the two-sample Kolmogorov-Smirnov statistic for
numbers, the change in missing rate, and categories the reference never had. PSI is the usual
operational yardstick (below 0.1 stable, 0.1-0.25 moderate, above 0.25 major: the thresholds
are ``retrain.drift`` in ``params.yaml``); KS says the same in a scale-free way. Hand-written
(a few lines of numpy and scipy) rather than a drift library: the checks are few and exactly
specified, and the retrain flow should not pull a dashboard framework in for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import DriftConfig

LEVELS = ("none", "moderate", "major")
#: Floor for bin shares, so that an empty bin gives a large but finite PSI.
_EPS = 1e-4


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(expected, _EPS, None)
    a = np.clip(actual, _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def _shares(codes: np.ndarray, n_bins: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n_bins).astype(float)
    return counts / max(counts.sum(), 1.0)


def numeric_drift(reference: pd.Series, current: pd.Series, bins: int) -> dict:
    """PSI over the reference's quantile bins, the KS statistic and the missing rates
    of one numeric feature."""
    ref = pd.to_numeric(reference, errors="coerce").to_numpy(dtype=float)
    cur = pd.to_numeric(current, errors="coerce").to_numpy(dtype=float)
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    missing_reference, missing_current = float(np.isnan(ref).mean()), float(np.isnan(cur).mean())
    out: dict[str, Any] = {"kind": "numeric", "missing_reference": missing_reference,
                           "missing_current": missing_current,
                           "missing_change": missing_current - missing_reference}
    if not len(ref_ok) or not len(cur_ok):
        return {**out, "psi": 0.0, "ks": 0.0, "mean_reference": None, "mean_current": None}
    edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, bins + 1))[1:-1])
    n = len(edges) + 1
    psi = _psi(_shares(np.searchsorted(edges, ref_ok, side="right"), n),
               _shares(np.searchsorted(edges, cur_ok, side="right"), n))
    from scipy.stats import ks_2samp

    ks = float(ks_2samp(ref_ok, cur_ok).statistic)
    return {**out, "psi": psi, "ks": ks, "mean_reference": float(ref_ok.mean()),
            "mean_current": float(cur_ok.mean())}


def categorical_drift(reference: pd.Series, current: pd.Series) -> dict:
    """PSI over the categories, the missing rates and the categories the reference
    never had, for one categorical feature."""
    ref = reference.astype(object).where(reference.notna(), None)
    cur = current.astype(object).where(current.notna(), None)
    known = sorted({v for v in ref if v is not None}, key=str)
    seen = sorted({v for v in cur if v is not None}, key=str)
    levels = known + [v for v in seen if v not in known]
    ref_share = np.array([(ref == v).mean() for v in levels])
    cur_share = np.array([(cur == v).mean() for v in levels])
    missing_ref, missing_cur = float(ref.isna().mean()), float(cur.isna().mean())
    return {"kind": "categorical", "psi": _psi(ref_share, cur_share),
            "missing_reference": missing_ref, "missing_current": missing_cur,
            "missing_change": missing_cur - missing_ref,
            "new_categories": [str(v) for v in seen if v not in known]}


def level(psi: float, config: DriftConfig) -> str:
    """``none``, ``moderate`` or ``major`` for a PSI, by the configured thresholds."""
    if psi >= config.psi_major:
        return "major"
    return "moderate" if psi >= config.psi_moderate else "none"


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, numeric: Sequence[str],
                 categorical: Sequence[str], config: DriftConfig) -> dict:
    """Per-feature drift of ``current`` against ``reference`` and the overall level: the
    worst feature's, raised to at least "moderate" by any new category."""
    features: dict[str, dict] = {}
    for name in numeric:
        features[name] = numeric_drift(reference[name], current[name], config.bins)
    for name in categorical:
        features[name] = categorical_drift(reference[name], current[name])
    for stats in features.values():
        stats["level"] = level(stats["psi"], config)
        if stats.get("new_categories") and stats["level"] == "none":
            stats["level"] = "moderate"
    worst = max(features, key=lambda k: (LEVELS.index(features[k]["level"]),
                                         features[k]["psi"]), default=None)
    overall = features[worst]["level"] if worst else "none"
    return {"level": overall, "worst_feature": worst,
            "max_psi": max((f["psi"] for f in features.values()), default=0.0),
            "rows_reference": len(reference), "rows_current": len(current),
            "features": features}
