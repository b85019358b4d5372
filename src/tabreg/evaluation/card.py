"""A Markdown model card: what the model is, how good it is, and where not to trust it.

Written next to the metrics for every evaluated model, so anyone picking up a model file
finds its data version, commit, test metrics with their uncertainty, the slices where it is
worst, and the known flaws of the data, without digging through the tracker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: Slices with fewer rows than this are shown but never named the worst: their RMSE is noise.
MIN_ROWS_FOR_WORST = 30

DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "The target is capped at 500,001: districts worth more are recorded at the cap, so "
    "errors on expensive districts are understated and the model learns the cap, not their "
    "real value.",
    "The data is the 1990 California census: prices and geography of 1990, not current "
    "prices; do not use it to value property today.",
    "ISLAND has only a handful of districts, so its slice metrics are noise.",
)


def money(value: float) -> str:
    """Dollar amounts as ``41,448``: whole dollars, thousands separated."""
    return f"{value:,.0f}"


def _cell(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:,.6g}" if abs(value) < 1e4 else money(value)
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


def _metrics(metrics: dict, interval: tuple[float, float], confidence: float) -> list[str]:
    rows: list[tuple[str, str]] = []
    if "rmse" in metrics:
        rows.append(("RMSE", money(metrics["rmse"])))
    rows.append((f"RMSE {confidence:.0%} interval (bootstrap)",
                 f"{money(interval[0])} – {money(interval[1])}"))
    named = {"mae": ("MAE", money), "r2": ("R²", lambda v: f"{v:.4f}"),
             "mape": ("MAPE", lambda v: f"{v:.1f}%"), "n": ("Test rows", lambda v: f"{v:,}")}
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
    rows = []
    for r in slices:
        row = [r["slice"], r["value"], f"{r['n']:,}", money(r["rmse"]), money(r["mae"]),
               f"{r['bias']:+,.0f}"]
        rows.append([f"**{c}**" for c in row] if r is worst else row)
    lines += _table(["slice", "value", "n", "RMSE", "MAE", "bias"], rows)
    if worst is not None:
        lines += ["", f"Worst slice (in bold; at least {MIN_ROWS_FOR_WORST} rows): "
                  f"{worst['slice']} = {worst['value']}, RMSE {money(worst['rmse'])} "
                  f"on {worst['n']:,} rows. Bias is the mean of predicted − actual."]
    return lines


def model_card(*, name: str, data_version: str, git_commit: str, family: str, params: dict,
               metrics: dict, interval: tuple[float, float], confidence: float,
               slices: list[dict], split: dict, trained_at: str,
               limitations: list[str] | None = None) -> str:
    """The model card as Markdown text (the caller decides where to write it)."""
    lines = [f"# Model card: {name}", "",
             f"A `{family}` regressor predicting the median house value of a California "
             f"census district, in dollars. Test RMSE {money(metrics.get('rmse', 0.0))} "
             f"({confidence:.0%} interval {money(interval[0])} – {money(interval[1])}).", ""]
    lines += _details(family, params, git_commit, data_version, split, trained_at)
    lines += ["", "## Intended use", "",
              "Estimating district-level median house values from census features, for "
              "teaching and for comparing modelling approaches on a known dataset. Not for "
              "valuing individual properties, lending or any decision about a person.", ""]
    lines += _metrics(metrics, interval, confidence) + [""]
    lines += _slices(slices) + ["", "## Known limitations", ""]
    lines += [f"- {item}" for item in (*DEFAULT_LIMITATIONS, *(limitations or []))]
    lines += ["", "## How to reproduce", "", "```sh",
              f"git checkout {git_commit.removesuffix('-dirty')}",
              "make setup        # the locked virtual environment",
              "dvc repro         # or: make run (same stages, Prefect driver)", "```", "",
              *(["The model was trained from a work tree with uncommitted changes "
                 "(`-dirty`): the commit alone may not reproduce it.", ""]
                if git_commit.endswith("-dirty") else []),
              f"The evaluated data version is `{data_version}`; `dvc repro` re-fetches and "
              "verifies the source, so a different version means the data changed.", ""]
    return "\n".join(lines)
