"""The training flow: the pipeline's steps as Prefect tasks, in DVC's order and with DVC's memory.

Each task asks DVC whether its stage is up to date (deps, params and outs as in ``dvc.yaml``);
if so it does nothing, otherwise it runs the step in-process and records it in ``dvc.lock``.
A second run with nothing changed therefore recomputes nothing, and after a run ``dvc status``
is clean. Run it with ``make run`` (or ``python flows/training.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tabreg import steps
from tabreg.config import Config, load_config
from tabreg.evaluation.card import number
from tabreg.orchestration.dvc_stages import (
    data_version,
    describe_changes,
    ran_before,
    record_stage,
    stage_changes,
)

#: The state name a stage DVC finds up to date ends in (a Completed state, shown apart).
SKIPPED = "Skipped"


def _path_names(config: Config) -> dict[str, str]:
    """Readable names for the pipeline's data files in the stage decisions."""
    return {config.paths.raw: "raw data", config.paths.train: "training data",
            config.paths.test: "test data", config.paths.tuning: "tuning result",
            config.paths.model: "trained model", config.paths.model_record: "training record",
            f"{config.paths.reports}/metrics.json": "test metrics"}


@task(cache_policy=NO_CACHE, retries=0, persist_result=False, task_run_name="{name}")
def run_stage(name: str, params: str, root: str) -> dict:
    """Run one step unless DVC says its stage is up to date; record it afterwards.

    An up-to-date stage ends in a Completed state named ``Skipped`` (the Prefect UI shows it
    apart from the stages that ran); each decision is logged as a sentence."""
    from prefect.states import Completed

    logger = get_run_logger()
    base = Path(root)
    config = load_config(base / params)  # re-read: each task must stand alone when retried
    changes = stage_changes(base, name)
    if not changes:
        logger.info("%s: up to date, skipped", name)
        return Completed(name=SKIPPED, message=f"{name}: up to date (DVC)",
                         data={"stage": name, "ran": False, "seconds": 0.0,
                               "why": "up to date"})
    why = describe_changes(name, changes, ran_before=ran_before(base, name),
                           names=_path_names(config))
    logger.info("%s", why)
    started = time.perf_counter()
    result = steps.get(name)(config, base)
    seconds = time.perf_counter() - started
    record_stage(base, name)
    logger.info("%s: done in %.2f s", name, seconds)
    return {"stage": name, "ran": True, "seconds": round(seconds, 3), "result": result,
            "why": why.removeprefix(f"{name}: ").removesuffix(", running")}


@flow(name="training", log_prints=True, persist_result=False)
def training(params: str = "params.yaml", root: str = ".") -> list[dict]:
    """ingest -> validate -> split -> features -> tune -> train -> evaluate -> register."""
    from tabreg.logs import quiet_libraries
    from tabreg.orchestration.preflight import preflight
    from tabreg.store import recovery

    quiet_libraries(dvc=True)
    # Prefect attaches its handlers to the `tabreg` loggers (PREFECT_LOGGING_EXTRA_LOGGERS) but
    # leaves them at WARNING: the steps' INFO lines (trials as they finish) would be lost.
    logging.getLogger("tabreg").setLevel(logging.INFO)
    # A bad configuration, an unreachable tracking store or a missing GPU fails here, before
    # any step runs.
    config = load_config(Path(root) / params)
    preflight(config, Path(root))
    recovery.clean_up(config, Path(root))  # what a killed run left: runs, trials, temp files
    stages = []
    for name in steps.STEP_NAMES:
        state = run_stage(name, params, root, return_state=True)
        stages.append(state.result())  # a failed stage raises its error here: nothing after
    report(stages, Path(root), params)
    return stages


def report(stages: list[dict], root: Path, params: str) -> None:
    """The run's summary in the flow run's logs and artifacts (the Prefect UI)."""
    from tabreg.orchestration import run_report

    facts = summary_facts(stages, root, params)
    run_report.log_to_ui(summary(stages, root, params))
    markdown = "\n\n".join(["# Training pipeline summary",
                              run_report.markdown_table(stage_rows(stages)),
                              "\n".join(f"- **{label}** {text}" if label
                                        else f"  - {text.removeprefix('- ')}"
                                        for label, text in facts)])
    run_report.publish("training", "Training pipeline summary", markdown,
                       table_rows(stages, root, params))


def main(argv: list[str] | None = None) -> int:
    from tabreg.orchestration import flowrun

    parser = argparse.ArgumentParser(description="Run the training flow once.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the traceback of a failure, not only its message")
    args = parser.parse_args(argv)
    stages, code = flowrun.run(training, verbose=args.verbose, params=args.params,
                               root=args.root)
    if code:
        return code
    print(summary(stages, Path(args.root), args.params))
    return 0


def _reports(root: Path, config: Config) -> dict[str, dict | None]:
    import json

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


if __name__ == "__main__":
    sys.exit(main())
