"""After the study: a weighted average of the best trials, when it helps.

Greedy ensemble selection with replacement (Caruana et al., 2004) on the trials' out-of-fold
predictions, which cost nothing extra: different families err differently, and the blend wins
when it beats the best single trial on the same cross-validation rows.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tabreg.config import Config
from tabreg.evaluation.metrics import rmse
from tabreg.models.candidates import Blend, Candidate
from tabreg.tuning.study import ATTR_OOF, decode_oof

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
    """The blend chosen among the best ``tune.blend_top`` complete trials of each family, and
    whether it beats the best trial; empty when blending is off or fewer than two families
    completed. With N > 1, several trials of a family are candidates (two good forests with
    other features or leaf sizes also err differently): on two real-data studies three per
    family cut the test RMSE by 0.6% and 1.3%, but the model grew from about 250 MB to
    560-770 MB and each member costs its own feature computation when serving, so the default
    stays at one."""
    if not config.tune.blend:
        return {}
    scored = [t for t in trials  # running, pruned or failed trials have no value
              if t.state.name == "COMPLETE" and ATTR_OOF in t.user_attrs]
    by_family: dict[str, list[Any]] = {}
    for t in sorted(scored, key=lambda t: (t.value, t.number)):
        by_family.setdefault(t.params.get("family"), []).append(t)
    if len(by_family) < 2:
        return {}
    ranked = sorted((t for family in by_family.values() for t in family[:config.tune.blend_top]),
                    key=lambda t: (t.value, t.number))
    members = [(Candidate.from_flat(t.params), decode_oof(t.user_attrs[ATTR_OOF]))
               for t in ranked]
    if any(len(p) != len(y) for _, p in members):
        return {}
    single = rmse(y, members[0][1])
    weights, value = select_blend(members, y)
    kept = [(t, m, w) for t, (m, _), w in zip(ranked, members, weights, strict=True) if w > 0]
    oof = sum(w * p for (_, p), w in zip(members, weights, strict=True))
    chosen = len(kept) > 1 and value < single
    log.info("tune: blend of %s: OOF RMSE %.0f vs best trial %.0f (%s)",
             [f"{t.number}:{t.params['family']}:{w:.2f}" for t, _, w in kept], value, single,
             "chosen" if chosen else "not chosen")
    return {"trials": [t.number for t, _, _ in kept], "weights": [w for _, _, w in kept],
            "cv_rmse": value, "best_trial_oof_rmse": single, "chosen": chosen,
            "candidate": Blend(tuple(m for _, m, _ in kept), tuple(w for _, _, w in kept)),
            "oof": oof}
