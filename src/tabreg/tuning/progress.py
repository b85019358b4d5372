"""What the user sees while tuning: one line per finished trial, and the study's account.

The lines go to the ``tabreg.tuning.progress`` logger, which the CLI keeps at INFO even when
quiet and Prefect forwards to the task's log (``PREFECT_LOGGING_EXTRA_LOGGERS=tabreg``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from tabreg.evaluation.card import number

log = logging.getLogger("tabreg.tuning.progress")


def duration(seconds: float) -> str:
    """Seconds as a person reads them: ``45s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def trial_line(trial: Any, finished: int, budget: int, best: float | None, elapsed: float,
               running: int) -> str:
    """``trial 7/30 hist_gradient_boosting: CV RMSE 48,123 (complete), best 45,010 · 2m13s
    elapsed, about 5m left``; the estimate is the elapsed time per finished trial."""
    family = trial.params.get("family", "?")
    state = trial.state.name.lower()
    if trial.state.name == "COMPLETE":
        outcome = f"CV RMSE {number(trial.value)}"
    elif trial.state.name == "PRUNED":
        last = trial.intermediate_values.get(max(trial.intermediate_values, default=-1))
        outcome = f"pruned at RMSE {number(last)}" if last is not None else "pruned"
    else:
        outcome = f"failed: {trial.system_attrs.get('fail_reason', 'unknown reason')}"[:160]
        state = "fail"
    left = budget - finished
    eta = (f", about {duration(elapsed / finished * left)} left" if finished and left > 0
           else "")
    best_text = (f"best {number(best)}" if best is not None and math.isfinite(best)
                 else "no best yet")
    busy = f", {running} running" if running else ""
    return (f"tune: trial {trial.number + 1}/{budget} {family}: {outcome} ({state}); "
            f"{best_text} · {duration(elapsed)} elapsed{eta}{busy}")


def per_family(trials: list[dict]) -> dict[str, dict[str, int]]:
    """Finished trials per family and state: {"mlp": {"COMPLETE": 3, "PRUNED": 1}, ...}."""
    out: dict[str, dict[str, int]] = {}
    for t in trials:
        if t["state"] in ("COMPLETE", "PRUNED", "FAIL"):
            family = out.setdefault(t["family"] or "unknown", {})
            family[t["state"]] = family.get(t["state"], 0) + 1
    return out


def families_text(counts: dict[str, dict[str, int]]) -> str:
    """``random_forest 9 (7 complete, 2 pruned), mlp 4 (4 complete)``."""
    parts = []
    for family, states in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        detail = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        parts.append(f"{family} {sum(states.values())} ({detail})")
    return ", ".join(parts) or "none"
