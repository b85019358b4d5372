"""The champion/challenger gate: should the challenger replace the champion?

A pure decision on predictions both models made for the same rows (the current test split),
so that the same evidence always gives the same answer and the rules can be tested on arrays.
The registry code (``tabreg.promotion.registry``) loads the models, calls :func:`decide` and
records the decision; nothing here touches MLflow.

Rules (``promotion:`` in ``params.yaml``):

- no champion yet: promote when the challenger's RMSE is at most ``max_rmse``;
- the comparison is unfair (the champion may have trained on the current test rows): refuse;
- the champion's RMSE on the current test split lies outside the bootstrap interval recorded
  when it was promoted by more than ``max_champion_drift`` (relative): the test data changed
  under it (a shuffled target, a bad batch), so a same-data comparison would reward whichever
  model suffers less from the damage: refuse, with "the evaluation data changed under the
  champion";
- otherwise promote only when all hold: the RMSE is at most ``max_rmse`` (every champion
  meets the bar, not only the first); it falls by at least ``min_improvement``
  (relative; a tie never promotes); the paired bootstrap interval of
  RMSE(challenger) − RMSE(champion), resampling the same rows for both, lies below zero
  (unless ``require_interval`` is off); and no slice with at least ``min_slice_rows`` rows
  gets worse by more than ``max_slice_regression`` (relative).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from tabreg.config import PromotionConfig
from tabreg.evaluation.card import number
from tabreg.evaluation.metrics import bootstrap_rmse, paired_bootstrap_diff, rmse

Outcome = Literal["promote", "keep", "refuse"]




@dataclass(frozen=True)
class Decision:
    """What the gate decided and the evidence it decided on (all plain JSON-able values)."""

    outcome: Outcome
    reasons: list[str]
    challenger_rmse: float
    champion_rmse: float | None = None
    #: RMSE(challenger) − RMSE(champion) and its paired bootstrap interval.
    difference: dict[str, float] = field(default_factory=dict)
    slices: list[dict] = field(default_factory=list)
    n_rows: int = 0
    #: The challenger's bootstrap interval of RMSE on these rows: recorded on promotion, so
    #: the next gate can tell whether the test data moved under it.
    challenger_interval: list[float] = field(default_factory=list)

    @property
    def promote(self) -> bool:
        return self.outcome == "promote"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recorded:
    """The champion's test RMSE and its bootstrap interval as recorded when it was promoted,
    and where (data version, rows), for the message."""

    rmse: float
    low: float
    high: float
    where: str = ""


def evaluation_changed(now: float, recorded: Recorded | None,
                       rules: PromotionConfig) -> str | None:
    """Why the champion's RMSE on the current test split ``now`` cannot be explained by
    sampling, or None. The bootstrap interval says how far another sample of rows would
    move it; beyond that (plus ``max_champion_drift``) the rows themselves changed."""
    margin = rules.max_champion_drift
    if recorded is None or margin is None:
        return None
    floor, ceiling = recorded.low * (1 - margin), recorded.high * (1 + margin)
    if floor <= now <= ceiling:
        return None
    where = f" ({recorded.where})" if recorded.where else ""
    return (f"the evaluation data changed under the champion: it scores RMSE {number(now)} on "
            f"the current test split, but scored {number(recorded.rmse)} (bootstrap interval "
            f"[{number(recorded.low)}, {number(recorded.high)}]) when it was promoted{where}; "
            f"promotion.max_champion_drift = {100 * margin:g}% allows [{number(floor)}, "
            f"{number(ceiling)}]. Sampling does not explain that: check the test split and the "
            "data it came from (`python -m tabreg validate`, the latest batch) before judging; "
            "if the change is genuine, run `make promote` once with "
            "promotion.max_champion_drift: null")


def slice_comparison(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray,
                     labels: Mapping[str, np.ndarray], rules: PromotionConfig) -> list[dict]:
    """Per slice value: both RMSEs, the relative change, whether it counts and regressed."""
    rows = []
    for name, values in labels.items():
        values = np.asarray(values, dtype=object)
        for value in sorted(set(values), key=str):
            mask = values == value
            old, new = rmse(y[mask], champion[mask]), rmse(y[mask], challenger[mask])
            change = (new - old) / old if old > 0 else (0.0 if new == 0 else float("inf"))
            gated = int(mask.sum()) >= rules.min_slice_rows
            rows.append({"slice": name, "value": str(value), "n": int(mask.sum()),
                         "champion_rmse": old, "challenger_rmse": new, "change": change,
                         "gated": gated,
                         "regressed": gated and change > rules.max_slice_regression})
    return rows


def decide(y_true: object, challenger: object, champion: object | None, *,
           rules: PromotionConfig, slices: Mapping[str, np.ndarray] | None = None,
           unfair: str | None = None, recorded: Recorded | None = None) -> Decision:
    """Decide on predictions of the challenger and the champion (None: there is none yet)
    for the same rows ``y_true``. ``slices`` maps a slice name to each row's value;
    ``unfair`` is why the two cannot be compared on these rows, if they cannot; ``recorded``
    is the champion's score at its promotion (None: not recorded, not checked)."""
    y = np.asarray(y_true, dtype=float)
    new = np.asarray(challenger, dtype=float)
    if new.shape != y.shape or not y.size:
        raise ValueError(f"predictions of shape {new.shape} for {y.shape} targets")
    new_rmse = rmse(y, new)
    interval = bootstrap_rmse(y, new, n_resamples=rules.bootstrap, confidence=rules.confidence,
                              seed=rules.seed)
    base: dict[str, Any] = {"challenger_rmse": new_rmse, "n_rows": int(y.size),
                            "challenger_interval": [float(v) for v in interval]}
    if champion is None:
        ok = new_rmse <= rules.max_rmse
        verb = "meets" if ok else "misses"
        return Decision("promote" if ok else "keep",
                        [f"no champion yet; challenger RMSE {number(new_rmse)} {verb} the bar "
                         f"promotion.max_rmse = {number(rules.max_rmse)}"], **base)
    old = np.asarray(champion, dtype=float)
    if old.shape != y.shape:
        raise ValueError(f"champion predictions of shape {old.shape} for {y.shape} targets")
    old_rmse = rmse(y, old)
    refusal = (f"not comparable: {unfair}" if unfair
               else evaluation_changed(old_rmse, recorded, rules))
    if refusal:
        return Decision("refuse", [refusal], champion_rmse=old_rmse, **base)
    diff = paired_bootstrap_diff(y, new, old, n_resamples=rules.bootstrap,
                                 confidence=rules.confidence, seed=rules.seed)
    table = slice_comparison(y, new, old, slices or {}, rules)
    blocked, reasons = _judge(new_rmse, old_rmse, diff, table, rules)
    return Decision("keep" if blocked else "promote", reasons, champion_rmse=old_rmse,
                    difference={k: float(diff[k]) for k in ("diff", "low", "high")},
                    slices=table, **base)


def _judge(new_rmse: float, old_rmse: float, diff: dict, table: list[dict],
           rules: PromotionConfig) -> tuple[bool, list[str]]:
    """The comparison's rules: (blocked?, the reasons, one per rule, passed or not)."""
    gain = (old_rmse - new_rmse) / old_rmse if old_rmse > 0 else 0.0
    reasons, blocked = [], False
    if new_rmse > rules.max_rmse:
        blocked = True
        reasons.append(f"challenger RMSE {number(new_rmse)} misses the bar promotion.max_rmse = "
                       f"{number(rules.max_rmse)} (every champion must meet it)")
    if new_rmse < old_rmse and gain >= rules.min_improvement:
        reasons.append(f"RMSE {number(old_rmse)} -> {number(new_rmse)} ({100 * gain:.2f}% better; "
                       f"at least {100 * rules.min_improvement:g}% needed)")
    else:
        blocked = True
        how = "a tie" if new_rmse == old_rmse else f"{100 * gain:+.2f}%"
        reasons.append(f"RMSE {number(old_rmse)} -> {number(new_rmse)} ({how}); promotion needs at "
                       f"least {100 * rules.min_improvement:g}% lower")
    pct = f"{100 * rules.confidence:g}%"
    interval = f"[{number(diff['low'])}, {number(diff['high'])}]"
    if diff["high"] < 0:
        reasons.append(f"paired bootstrap {pct} interval of the RMSE difference {interval} "
                       "lies below zero")
    elif rules.require_interval:
        blocked = True
        reasons.append(f"paired bootstrap {pct} interval of the RMSE difference {interval} "
                       "does not lie below zero: the gain may be noise")
    else:
        reasons.append(f"paired bootstrap {pct} interval {interval} includes zero "
                       "(ignored: promotion.require_interval is off)")
    regressed = [r for r in table if r["regressed"]]
    for r in regressed:
        blocked = True
        reasons.append(f"slice {r['slice']}={r['value']} ({r['n']} rows) worsens by "
                       f"{100 * r['change']:.1f}% (RMSE {number(r['champion_rmse'])} -> "
                       f"{number(r['challenger_rmse'])}; at most "
                       f"{100 * rules.max_slice_regression:g}% allowed)")
    if table and not regressed:
        reasons.append(f"no slice of {rules.min_slice_rows}+ rows worsens by more than "
                       f"{100 * rules.max_slice_regression:g}%")
    return blocked, reasons
