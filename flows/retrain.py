"""The retrain-and-promote flow, and its schedule.

look for new data -> check each new batch against the batch contract -> drift against the
training reference -> (enough new data, or enough drift?) -> the training flow (ingest ...
register, whose gate moves ``champion`` only on evidence) -> ``dvc push`` when a remote is set.

No new data: the run records "skipped" and trains nothing, so it is safe to schedule often.
A rejected batch is quarantined, recorded and fails the run, with the champion untouched. Two
runs never overlap: a lock in the project (and a concurrency limit of 1 on the deployment).

``python flows/retrain.py`` runs it once (``make retrain``); ``--serve`` serves the deployments
with the crons from ``params.yaml`` (``make schedule``, against a Prefect server).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

try:
    from flows.training import training
except ImportError:  # run as a script (`python flows/retrain.py`): flows/ is on sys.path
    from training import training
from tabreg import registry
from tabreg import retrain as rt
from tabreg.config import Config, load_config
from tabreg.data import landing

DEPLOYMENT = "retrain"
DRIFT_DEPLOYMENT = "drift-check"


def _record(config: Config, root: Path, **entry) -> dict:
    return registry.record(root / config.registry.ledger,
                           {"model": config.registry.model_name, **entry})


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="check new batches")
def check_new_batches(config: Config, root: Path, new: rt.NewData) -> rt.BatchCheck:
    checked = landing.screen(config, root, new.batches, by="retrain")
    if checked.rejected:
        _record(config, root, trigger="retrain", action="reject batch",
                files=sorted(checked.rejected), quarantine=str(checked.where),
                reasons=[f"{name}: {why.splitlines()[0]}"
                         for name, why in checked.rejected.items()])
    checked.refuse()
    return checked


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="measure drift")
def measure_drift(config: Config, root: Path, new: rt.NewData,
                  checked: rt.BatchCheck) -> dict | None:
    import pandas as pd

    from tabreg.steps.data import read_source

    if new.first_run:
        return None
    frames = list(checked.accepted.values())
    if new.source_changed:
        frames.append(read_source(config, root))
    if not frames:  # only rows ingested before this run: no new batch to compare
        return None
    current = pd.concat(frames, ignore_index=True)[list(config.schema.features)]
    return rt.drift(config, root, current)


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="version data")
def version_data(root: Path) -> str:
    """Push the DVC-tracked outputs (the new data version among them) to the remote."""
    import contextlib

    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:
        if not repo.config.get("core", {}).get("remote"):
            return "no DVC remote configured: data versioned in the local cache"
        pushed = repo.push()
    return f"pushed {pushed} file(s) to the DVC remote"


def _log_run(config: Config, root: Path, outcome: dict, drift: dict | None) -> None:
    import mlflow

    from tabreg import tracking

    tracking.start(config, root)
    with tracking.start_run(run_name=f"retrain-{outcome['action'].replace(' ', '-')}",
                          tags={"kind": "retrain", "outcome": outcome["action"],
                                "trigger": outcome["trigger"]}):
        mlflow.log_dict(outcome, "retrain.json")
        if drift:
            mlflow.log_metrics({f"psi.{k}": v["psi"] for k, v in drift["features"].items()})
            mlflow.log_metric("drift_max_psi", drift["max_psi"])
            mlflow.set_tag("drift_level", drift["level"])
            mlflow.log_dict(drift, "drift.json")


def _report(outcome: dict, drift: dict | None) -> Any:
    """The outcome in the flow run's logs and artifacts; a skip ends in a Completed state
    named ``Skipped`` (shown apart in the Prefect UI), anything else in plain Completed."""
    import json

    from prefect.states import Completed

    from tabreg import run_report

    reasons = outcome.get("reasons", [])
    run_report.log_to_ui(f"retrain: {outcome['action']}\n" + json.dumps(outcome, indent=2,
                                                                         default=str))
    rows = [{"kind": "outcome", "name": "action", "value": outcome["action"],
             "detail": "; ".join(reasons)},
            {"kind": "outcome", "name": "trigger", "value": outcome["trigger"], "detail": ""}]
    rows += [{"kind": "stage", "name": stage, "value": "ran", "detail": ""}
             for stage in outcome.get("ran", [])]
    if drift:
        rows += [{"kind": "drift", "name": feature, "value": f"{v['psi']:.3f}",
                  "detail": v.get("level", "")} for feature, v in drift["features"].items()]
    if outcome.get("decision"):
        rows.append({"kind": "decision", "name": "promotion", "value": outcome["decision"],
                     "detail": f"challenger {outcome.get('challenger')}, champion "
                               f"{outcome.get('champion') or 'none'}"})
    markdown = "\n\n".join([f"# Retrain: {outcome['action']}",
                              "\n".join(f"- {reason}" for reason in reasons),
                              run_report.markdown_table(rows)])
    run_report.publish("retrain", f"Retrain: {outcome['action']}", markdown, rows)
    if outcome["action"] == "skip":
        return Completed(name="Skipped", message="; ".join(reasons)[:500], data=outcome)
    return outcome


def _train_and_gate(config: Config, root: Path, params: str, trigger: str, reasons: list[str],
                    **facts: Any) -> dict:
    """Run the training flow and record the outcome with the gate's decision on the model
    this run trained: none when the run did not reach the gate (DVC found ``register`` up to
    date), never an earlier run's. A failing run is recorded as
    ``fail`` before its error goes on."""
    from tabreg.steps.registry import read_decision, trained_run_id

    try:
        stages = training(params=params, root=str(root))
    except Exception as exc:
        _record(config, root, trigger=trigger, action="fail", **facts, reasons=[
            *reasons, f"the training flow failed: {(str(exc) or type(exc).__name__)[:300]}"])
        raise
    ran = [s["stage"] for s in stages if s["ran"]]
    reasons.append(version_data(root))
    decision = read_decision(config, root, run_id=trained_run_id(root)) if "register" in ran \
        else None
    if decision is None:
        reasons.append("no gate decision: the training flow registered no new model (its "
                       "stages were up to date)")
    decision = decision or {}
    return _record(config, root, trigger=trigger, action="retrain", reasons=reasons, ran=ran,
                   **facts, decision=decision.get("action"),
                   challenger=decision.get("challenger"), champion=decision.get("champion"))


@flow(name="retrain", log_prints=True, persist_result=False)
def retrain(params: str = "params.yaml", root: str = ".", trigger: str = "schedule") -> dict:
    """Retrain when there is new data (``trigger="drift"``: only when it drifts enough)."""
    from tabreg import recovery
    from tabreg.logs import quiet_libraries
    from tabreg.steps.model import preflight

    quiet_libraries(dvc=True)
    logger = get_run_logger()
    base = Path(root)
    config = load_config(base / params)
    with rt.exclusive(base, config.retrain.lock_timeout):
        preflight(config, base)
        recovery.clean_up(config, base)  # what a killed run left: runs, trials, temp files
        new = rt.detect_new_data(config, base)
        if not new.found:
            outcome = _record(config, base, trigger=trigger, action="skip",
                              reasons=["no new data"])
            _log_run(config, base, outcome, None)
            logger.info("retrain: skipped, no new data")
            return _report(outcome, None)
        logger.info("retrain: %s", new.describe())
        checked = check_new_batches(config, base, new)
        drift = measure_drift(config, base, new, checked)
        rows, batch_rows = rt.count_new_rows(config, base, checked.accepted)
        go, why = rt.should_retrain(config, new, rows, drift and drift["level"], trigger,
                                    batch_rows)
        drift_note = (f"drift {drift['level']} (max PSI {drift['max_psi']:.3f} on "
                      f"{drift['worst_feature']})" if drift else "no drift reference")
        if not go:
            outcome = _record(config, base, trigger=trigger, action="skip",
                              reasons=[why, drift_note], new_rows=rows, batch_rows=batch_rows)
            _log_run(config, base, outcome, drift)
            logger.info("retrain: skipped: %s", why)
            return _report(outcome, drift)
        outcome = _train_and_gate(config, base, params, trigger, [why, drift_note],
                                  new_rows=rows, batch_rows=batch_rows)
        _log_run(config, base, outcome, drift)
        logger.info("retrain: %s; gate: %s", why, outcome["decision"] or "did not judge")
        return _report(outcome, drift)


def deployments(config: Config, params: str, root: str) -> list:
    """The scheduled retrain, and the drift check if ``retrain.drift_check_cron`` is set."""
    from prefect.schedules import Cron

    made = [retrain.to_deployment(
        name=DEPLOYMENT, schedule=Cron(config.retrain.cron, timezone=config.retrain.timezone),
        parameters={"params": params, "root": root, "trigger": "schedule"},
        concurrency_limit=1, tags=["tabreg"],
        description="Retrain on new data and promote on evidence")]
    if config.retrain.drift_check_cron:
        made.append(retrain.to_deployment(
            name=DRIFT_DEPLOYMENT,
            schedule=Cron(config.retrain.drift_check_cron, timezone=config.retrain.timezone),
            parameters={"params": params, "root": root, "trigger": "drift"},
            concurrency_limit=1, tags=["tabreg"],
            description="Retrain between scheduled runs when new data drifts"))
    return made


def main(argv: list[str] | None = None) -> int:
    import json
    import os

    from tabreg import flowrun

    parser = argparse.ArgumentParser(description="Run the retrain-and-promote flow.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--trigger", choices=("schedule", "drift"), default="schedule")
    parser.add_argument("--serve", action="store_true",
                        help="serve the scheduled deployments (needs PREFECT_API_URL)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the traceback of a failure, not only its message")
    args = parser.parse_args(argv)
    if args.serve:
        if not os.environ.get("PREFECT_API_URL"):
            print("error: schedules need a Prefect server. Start one with "
                  "`make prefect-server`, then run\n  PREFECT_API_URL=http://127.0.0.1:4200/"
                  "api make schedule", file=sys.stderr)
            return 2
        _, code = flowrun.run(_serve, verbose=args.verbose, params=args.params, root=args.root)
        return code
    outcome, code = flowrun.run(retrain, verbose=args.verbose, params=args.params,
                                root=args.root, trigger=args.trigger)
    if code:
        return code
    print(json.dumps(outcome, indent=2, default=str))
    return 0


def _serve(params: str, root: str) -> None:
    from prefect import serve

    root = str(Path(root).resolve())
    serve(*deployments(load_config(Path(root) / params), params, root))


if __name__ == "__main__":
    sys.exit(main())
