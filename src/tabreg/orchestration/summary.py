"""What a pipeline run ran and ended with: the terminal's summary and the UI's table.

Read back from the reports the steps wrote (ingest, split, tuning, metrics, the promotion
decision on the model this run trained), so that the Prefect flow, the command line and the
retrain flow tell a run's story the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from tabreg.config import Config, load_config
from tabreg.evaluation.card import number
from tabreg.orchestration.dvc_stages import data_version


def path_names(config: Config) -> dict[str, str]:
    """Readable names for the pipeline's data files in the stage decisions."""
    return {config.paths.raw: "raw data", config.paths.train: "training data",
            config.paths.test: "test data", config.paths.tuning: "tuning result",
            config.paths.model: "trained model", config.paths.model_record: "training record",
            f"{config.paths.reports}/metrics.json": "test metrics"}


def _reports(root: Path, config: Config) -> dict[str, dict | None]:
    from tabreg.steps.register import read_decision, trained_run_id

    paths = {"ingest": root / config.paths.reports / "ingest.json",
             "split": root / config.paths.reports / "split.json",
             "metrics": root / config.paths.reports / "metrics.json",
             "tuning": root / config.paths.tuning}
    found = {k: json.loads(p.read_text()) if p.exists() else None for k, p in paths.items()}
    # Only a decision on the model this pipeline trained: never an earlier model's.
    found["promotion"] = read_decision(config, root, run_id=trained_run_id(config, root))
    return found


def summary_facts(stages: list[dict], root: Path, params: str) -> list[tuple[str, str]]:
    """What a run ended with, as (label, text) lines (label "": a continuation line)."""
    config = load_config(root / params)
    r = _reports(root, config)
    facts: list[tuple[str, str]] = []
    version = data_version(root, config.paths.raw) or "not recorded"
    if ingest := r["ingest"]:
        facts.append(("data", f"{ingest['rows']} rows from {len(ingest['batches'])} file(s), "
                      f"version {version} (DVC md5 of {config.paths.raw})"))
    facts.append(("validation", f"passed: {config.paths.reports}/validation/"))
    if split := r["split"]:
        facts.append(("split", f"{split['strategy']}: {split['rows']['train']} train / "
                      f"{split['rows']['test']} test rows; largest stratum deviation "
                      f"{100 * split['max_stratum_test_share_deviation']:.2f} points"))
    if tuning := r["tuning"]:
        trials = ", ".join(f"{n} {state.lower()}" for state, n in tuning["trials"].items())
        blend = tuning.get("blend") or {}
        chosen = (f"blend of trials {blend['trials']}" if blend.get("chosen")
                  else f"trial {tuning.get('best_trial')}, {tuning['best']['family']}")
        facts.append(("tuning", f"best: {chosen}, CV RMSE {number(tuning['best_cv_rmse'])} "
                      f"({trials}; study {tuning['study']})"))
        if tuning.get("per_family") is not None:
            from tabreg.tuning.progress import families_text

            facts.append(("", f"trials per family: {families_text(tuning['per_family'])}"))
        if tuning.get("guard"):
            facts.append(("WARNING", tuning["guard"]))
    if scores := r["metrics"]:
        facts.append(("test", f"RMSE {number(scores['rmse'])} "
                      f"({100 * config.evaluate.confidence:.0f}% "
                      f"interval {number(scores['rmse_low'])}-{number(scores['rmse_high'])}), "
                      f"MAE {number(scores['mae'])}, R^2 {scores['r2']:.3f}"))
        facts.append(("model card", f"{config.paths.reports}/model_card.md; runs: make ui"))
    if decision := r["promotion"]:
        facts.append(("promotion", f"{decision['action']} (challenger "
                      f"{config.registry.model_name} version {decision.get('challenger')}); "
                      f"champion now: {_champion_after(decision)}"))
        facts.extend(("", f"- {reason}") for reason in decision.get("reasons", []))
        facts.append(("", "make status shows the registry; make rollback reverts"))
    return facts


def _champion_after(decision: dict) -> str:
    champion = decision.get("to") or (decision["challenger"] if decision["action"] ==
                                      "promote" else decision.get("champion"))
    return f"version {champion}" if champion else "none"


def stage_rows(stages: list[dict]) -> list[dict]:
    """One row per stage: ran or skipped, how long, and why (DVC's reason, as a sentence)."""
    return [{"stage": s["stage"], "state": "ran" if s["ran"] else "skipped",
             "seconds": s["seconds"] if s["ran"] else None, "why": s.get("why", "")}
            for s in stages]


def table_rows(stages: list[dict], root: Path, params: str) -> list[dict]:
    """The stages, the test metrics and the promotion decision as one table."""
    config = load_config(root / params)
    r = _reports(root, config)
    rows = [{"kind": "stage", "name": row["stage"], "value": row["state"],
             "detail": (f"{row['seconds']:.2f} s; " if row["seconds"] is not None else "")
             + row["why"]} for row in stage_rows(stages)]
    if tuning := r["tuning"]:
        rows.append({"kind": "metric", "name": "best CV RMSE",
                     "value": f"{number(tuning['best_cv_rmse'])}", "detail": tuning["study"]})
    if scores := r["metrics"]:
        pct = f"{100 * config.evaluate.confidence:.0f}%"
        rows += [{"kind": "metric", "name": "test RMSE", "value": f"{number(scores['rmse'])}",
                  "detail": f"{pct} interval {number(scores['rmse_low'])}-"
                            f"{number(scores['rmse_high'])}"},
                 {"kind": "metric", "name": "test MAE", "value": f"{number(scores['mae'])}",
                  "detail": ""},
                 {"kind": "metric", "name": "test R^2", "value": f"{scores['r2']:.3f}",
                  "detail": ""}]
    if decision := r["promotion"]:
        rows.append({"kind": "decision", "name": "promotion", "value": decision["action"],
                     "detail": f"challenger version {decision.get('challenger')}, champion "
                               f"now {_champion_after(decision)}: "
                               + "; ".join(decision.get("reasons", []))})
    return rows


def summary(stages: list[dict], root: Path, params: str) -> str:
    """The one-screen account of a run: what ran, on which data, with what result."""
    lines = ["", "Training pipeline summary"]
    for s in stages:
        state = f"ran in {s['seconds']:.2f} s" if s["ran"] else "up to date (skipped)"
        lines.append(f"  {s['stage']:<10} {state}")
    lines += [f"  {label:<10} {text}" for label, text in summary_facts(stages, root, params)]
    return "\n".join(lines)
