"""A Markdown model card: what the model is, how good it is, and where not to trust it.

Written next to the metrics for every evaluated model, so anyone picking up a model file
finds its data version, commit, test metrics with their uncertainty, the slices where it is
worst, and the known flaws of the data, without digging through the tracker. Every sentence
about the problem (what the target is, its unit, intended and out-of-scope uses, known
limitations) comes from ``problem:`` in ``params.yaml``; limitations the data itself shows (a
capped target, a slice too small to measure) are found in the data and stated only when they
hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tabreg.config import ProblemConfig

#: Slices with fewer rows than this are shown but never named the worst: their RMSE is noise.
MIN_ROWS_FOR_WORST = 30
#: A top value held by at least this share of rows (and 5 rows) is a cap, not a coincidence.
CAP_SHARE = 0.005


def number(value: float, signed: bool = False) -> str:
    """An amount in the target's unit, for people: whole units with thousands separated from
    1,000 on (``41,448``), four significant digits below (``0.8123``), so a target in litres or
    hours does not print as ``1``."""
    sign = "+" if signed else ""
    if abs(value) >= 1000:
        return f"{value:{sign},.0f}"
    return f"{value:{sign}.4g}"


def capped_at(y: object) -> float | None:
    """The target's top value when many rows pile up on it, as on a censored target (every
    value above a limit recorded at the limit); else None."""
    values = np.asarray(y, dtype=float)
    if values.size == 0:
        return None
    top = float(np.max(values))
    return top if int(np.sum(values == top)) >= max(5, CAP_SHARE * values.size) else None


#: Slices of at least this many rows whose interval coverage is further than COVERAGE_GAP
#: from the level are named among the limitations.
MIN_ROWS_FOR_COVERAGE, COVERAGE_GAP = 100, 0.05


def data_limitations(y_true: object, slices: list[dict], rows: str = "rows",
                     level: float | None = None) -> list[str]:
    """What the test data shows about its own limits, each only when it holds: a capped target,
    slice values with too few rows to measure, and slices whose prediction intervals (at
    ``level``) cover the truth much more or less often than promised. ``rows`` names what a
    row is."""
    values = np.asarray(y_true, dtype=float)
    found = []
    cap = capped_at(values)
    if cap is not None:
        at_cap = int(np.sum(values == cap))
        found.append(f"The target looks capped at {number(cap)}: {at_cap:,} of {values.size:,} "
                     f"test {rows} ({at_cap / values.size:.1%}) sit exactly at that top value, "
                     f"so {rows} worth more are recorded at the cap: errors there are "
                     "understated and the model learns the cap, not their real value.")
    small: dict[str, list[str]] = {}
    for r in slices:
        if r["n"] < MIN_ROWS_FOR_WORST:
            small.setdefault(r["slice"], []).append(f"{r['value']} ({r['n']:,} rows)")
    for name, values_ in small.items():
        found.append(f"Too few test {rows} to measure in slice {name}: {', '.join(values_)}; "
                     f"their slice metrics are noise (fewer than {MIN_ROWS_FOR_WORST} rows).")
    off = [r for r in slices if level is not None and "coverage" in r
           and r["n"] >= MIN_ROWS_FOR_COVERAGE and abs(r["coverage"] - level) > COVERAGE_GAP]
    if off:
        found.append(f"The {level:.0%} prediction intervals miss their level by more than "
                     f"{COVERAGE_GAP:.0%} in " + ", ".join(
                         f"{r['slice']} = {r['value']} ({r['coverage']:.1%} of {r['n']:,})"
                         for r in off) + ": trust their width less there.")
    return found


def _cell(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:,.6g}" if abs(value) < 1e4 else number(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def worst_slice(slices: list[dict]) -> dict | None:
    """The slice value with the highest RMSE among those with enough rows to mean it."""
    solid = [r for r in slices if r["n"] >= MIN_ROWS_FOR_WORST] or slices
    return max(solid, key=lambda r: r["rmse"]) if solid else None


def _details(family: str, params: dict, git_commit: str, data_version: str, split: dict,
             trained_at: str) -> list[str]:
    sizes = ", ".join(f"{k} {v:,} rows" if isinstance(v, int) else f"{k} {v}"
                      for k, v in split.items() if k != "strategy")
    lines = ["## Model details", "",
             f"- Family: `{family}`",
             f"- Trained at: {trained_at}",
             f"- Git commit: `{git_commit}`",
             f"- Data version: `{data_version}`",
             f"- Split: {split.get('strategy', 'unknown')} ({sizes})" if sizes
             else f"- Split: {split.get('strategy', 'unknown')}",
             "", "### Hyperparameters", ""]
    if params:
        lines += _table(["parameter", "value"], sorted(params.items()))
    else:
        lines.append("(defaults)")
    return lines


def _metrics(metrics: dict, interval: tuple[float, float], confidence: float,
             level: float | None = None) -> list[str]:
    rows: list[tuple[str, str]] = []
    if "rmse" in metrics:
        rows.append(("RMSE", number(metrics["rmse"])))
    rows.append((f"RMSE {confidence:.0%} interval (bootstrap)",
                 f"{number(interval[0])} – {number(interval[1])}"))
    named = {"mae": ("MAE", number), "r2": ("R²", lambda v: f"{v:.4f}"),
             "mape": ("MAPE", lambda v: f"{v:.1f}%"), "n": ("Test rows", lambda v: f"{v:,}"),
             "interval_coverage": (f"Prediction interval coverage (level {level or 0:.0%})",
                                   lambda v: f"{v:.1%}"),
             "interval_width": ("Prediction interval mean width", number)}
    for key, (label, fmt) in named.items():
        if key in metrics:
            rows.append((label, fmt(metrics[key])))
    rows += [(k, _cell(v)) for k, v in metrics.items() if k not in named and k != "rmse"]
    return ["## Metrics (test set)", "", *_table(["metric", "value"], rows)]


def _slices(slices: list[dict]) -> list[str]:
    lines = ["## Metrics by slice", ""]
    if not slices:
        return lines + ["No slices configured."]
    worst = worst_slice(slices)
    ranged = any(r.get("range") for r in slices)
    rows = []
    covered = all("coverage" in r for r in slices)
    for r in slices:
        row = [r["slice"], r["value"], *([r.get("range", "")] if ranged else []), f"{r['n']:,}",
               number(r["rmse"]), number(r["mae"]), number(r["bias"], signed=True),
               *([f"{r['coverage']:.1%}", number(r["width"])] if covered else [])]
        rows.append([f"**{c}**" if c != "" else c for c in row] if r is worst else row)
    header = ["slice", "value", *(["range"] if ranged else []), "n", "RMSE", "MAE", "bias",
              *(["interval coverage", "interval width"] if covered else [])]
    lines += _table(header, rows)
    if worst is not None:
        lines += ["", f"Worst slice (in bold; at least {MIN_ROWS_FOR_WORST} rows): "
                  f"{worst['slice']} = {worst['value']}, RMSE {number(worst['rmse'])} "
                  f"on {worst['n']:,} rows. Bias is the mean of predicted − actual."]
    return lines


def _purpose(problem: ProblemConfig) -> list[str]:
    lines = ["## Intended use", "",
             problem.intended_use or "Not stated (`problem.intended_use` in params.yaml)."]
    if problem.out_of_scope:
        lines += ["", "Out of scope (do not use it for):", ""]
        lines += [f"- {item}" for item in problem.out_of_scope]
    return lines


def _limitations(problem: ProblemConfig, found: list[str]) -> list[str]:
    items = [*problem.limitations, *found]
    lines = ["## Known limitations", ""]
    if not items:
        return lines + ["None stated in `problem.limitations`, and none found in the test data."]
    return lines + [f"- {item}" for item in items]


def _reproduce(git_commit: str, data_version: str) -> list[str]:
    return ["## How to reproduce", "", "```sh",
            f"git checkout {git_commit.removesuffix('-dirty')}",
            "make setup        # the locked virtual environment",
            "dvc repro         # or: make run (same stages, Prefect driver)", "```", "",
            *(["The model was trained from a work tree with uncommitted changes "
               "(`-dirty`): the commit alone may not reproduce it.", ""]
              if git_commit.endswith("-dirty") else []),
            f"The evaluated data version is `{data_version}`; `dvc repro` re-fetches and "
            "verifies the source, so a different version means the data changed.", ""]


def model_card(*, name: str, data_version: str, git_commit: str, family: str, params: dict,
               metrics: dict, interval: tuple[float, float], confidence: float,
               slices: list[dict], split: dict, trained_at: str,
               problem: ProblemConfig | None = None, target: str = "the target",
               limitations: list[str] | None = None, level: float | None = None) -> str:
    """The model card as Markdown text (the caller decides where to write it). ``problem``
    says what the target is and what the model is for; ``target`` names the target column
    when ``problem.target`` does not describe it; ``limitations`` adds what the data showed
    (:func:`data_limitations`); ``level`` is the prediction intervals' (``serve.interval``).
    """
    problem = problem or ProblemConfig()
    unit = f" ({problem.unit})" if problem.unit else ""
    lines = [f"# Model card: {name}", "",
             f"A `{family}` regressor predicting {problem.target or target}{unit}. Test RMSE "
             f"{number(metrics.get('rmse', 0.0))} ({confidence:.0%} interval "
             f"{number(interval[0])} – {number(interval[1])}).", ""]
    if level is not None and "interval_coverage" in metrics:
        lines[-1:] = [f"Each prediction comes with a {level:.0%} interval: on the test set it "
                      f"held the truth for {metrics['interval_coverage']:.1%} of the "
                      f"{problem.rows} (mean width {number(metrics['interval_width'])}).", ""]
    lines += _details(family, params, git_commit, data_version, split, trained_at)
    lines += ["", *_purpose(problem), ""]
    lines += _metrics(metrics, interval, confidence, level) + [""]
    lines += _slices(slices) + ["", *_limitations(problem, limitations or []), ""]
    return "\n".join(lines + _reproduce(git_commit, data_version))
