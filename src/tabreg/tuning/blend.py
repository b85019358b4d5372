"""After the study: a weighted average of the best trial of each family, when it helps.

Greedy ensemble selection with replacement (Caruana et al., 2004) on the trials' out-of-fold
predictions, which cost nothing extra: different families err differently, and the blend wins
when it beats the best single trial on the same cross-validation rows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tabreg.config import Config
from tabreg.models.candidates import Blend, Candidate
from tabreg.tuning.study import ATTR_OOF, decode_oof
from tabreg.tuning.worker import rmse

log = logging.getLogger(__name__)


def select_blend(members: list[tuple[Candidate, np.ndarray]], y: np.ndarray,
                 rounds: int = 20) -> tuple[list[float], float]:
    """Greedy ensemble selection with replacement: repeatedly add the member whose addition
    most lowers the RMSE of the average. Returns weights and the RMSE."""
    predictions = np.stack([p for _, p in members])
    counts = np.zeros(len(members))
    total = np.zeros_like(y, dtype=float)
    for step in range(1, rounds + 1):
        trial = [(rmse(y, (total + p) / step), i) for i, p in enumerate(predictions)]
        _, best = min(trial)
        counts[best] += 1
        total += predictions[best]
    weights = (counts / counts.sum()).tolist()
    return weights, rmse(y, (predictions * np.array(weights)[:, None]).sum(axis=0))


def blend_of_best(trials: list[Any], y: np.ndarray, config: Config) -> dict[str, Any]:
    """The blend of the best complete trial of each family, and whether it beats the best
    trial; empty when blending is off or fewer than two families completed."""
    if not config.tune.blend:
        return {}
    best_of: dict[str, Any] = {}
    for t in trials:
        if t.state.name != "COMPLETE" or ATTR_OOF not in t.user_attrs:
            continue  # running, pruned or failed trials have no value
        family = t.params.get("family")
        if family not in best_of or t.value < best_of[family].value:
            best_of[family] = t
    if len(best_of) < 2:
        return {}
    ranked = sorted(best_of.values(), key=lambda t: t.value)
    members = [(Candidate.from_flat(t.params), decode_oof(t.user_attrs[ATTR_OOF]))
               for t in ranked]
    if any(len(p) != len(y) for _, p in members):
        return {}
    single = rmse(y, members[0][1])
    weights, value = select_blend(members, y)
    kept = [(m, w) for (m, _), w in zip(members, weights, strict=True) if w > 0]
    chosen = len(kept) > 1 and value < single
    log.info("tune: blend of %s: OOF RMSE %.0f vs best trial %.0f (%s)",
             [f"{t.number}:{t.params['family']}" for t in ranked], value, single,
             "chosen" if chosen else "not chosen")
    return {"trials": [t.number for t, w in zip(ranked, weights, strict=True) if w > 0],
            "weights": [w for _, w in kept], "cv_rmse": value, "best_trial_oof_rmse": single,
            "chosen": chosen,
            "candidate": Blend(tuple(m for m, _ in kept), tuple(w for _, w in kept))}
