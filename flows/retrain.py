"""The retrain-and-promote flow, and its schedule.

look for new data -> check each new batch against the batch contract -> drift against the
training reference -> (enough new data, or enough drift?) -> the training flow (ingest ...
register, whose gate moves ``champion`` only on evidence) -> ``dvc push`` when a remote is set.

No new data: the run records "skipped" and trains nothing, so it is safe to schedule often.
A rejected batch is quarantined, recorded and fails the run, with the champion untouched. Two
runs never overlap: a lock in the project (and a concurrency limit of 1 on the deployment).

The steps and their order are ``tabreg.promotion.retrain.retrain``'s; this flow only makes
them Prefect tasks, trains through the training flow and reports to the UI (``python -m tabreg
retrain`` runs the same without Prefect). ``python flows/retrain.py`` runs it once (``make
retrain``); ``--serve`` serves the deployments with the crons from ``params.yaml`` (``make
schedule``, against a Prefect server), the monitoring flow's (``flows/monitor.py``) with them.
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
from tabreg.config import Config, load_config
from tabreg.promotion import retrain as rt

DEPLOYMENT = "retrain"
DRIFT_DEPLOYMENT = "drift-check"


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="check new batches")
def check_new_batches(config: Config, root: Path, new: rt.NewData) -> rt.BatchCheck:
    return rt.screen_batches(config, root, new)


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="measure drift")
def measure_drift(config: Config, root: Path, new: rt.NewData,
                  checked: rt.BatchCheck) -> dict | None:
    return rt.new_data_drift(config, root, new, checked)


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="version data")
def version_data(root: Path) -> str:
    return rt.push_data(root)


def _report(outcome: dict, drift: dict | None) -> Any:
    """The outcome in the flow run's logs and artifacts; a skip ends in a Completed state
    named ``Skipped`` (shown apart in the Prefect UI), anything else in plain Completed."""
    import json

    from prefect.states import Completed

    from tabreg.orchestration import run_report

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


@flow(name="retrain", log_prints=True, persist_result=False)
def retrain(params: str = "params.yaml", root: str = ".", trigger: str = "schedule") -> dict:
    """Retrain when there is new data (``trigger="drift"``: only when it drifts enough)."""
    from tabreg.logs import quiet_libraries

    quiet_libraries(dvc=True)
    base = Path(root)
    config = load_config(base / params)

    def train() -> list[str]:
        return [s["stage"] for s in training(params=params, root=str(base)) if s["ran"]]

    hooks = rt.Hooks(train=train, screen=check_new_batches, measure=measure_drift,
                     push=version_data)
    outcome, drift = rt.retrain(config, base, trigger, hooks, get_run_logger())
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

    from tabreg.orchestration import flowrun

    parser = argparse.ArgumentParser(description="Run the retrain-and-promote flow.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--trigger", choices=("schedule", "drift", "monitor"),
                        default="schedule")
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

    try:
        from flows.monitor import deployment
    except ImportError:  # run as a script: flows/ is on sys.path
        from monitor import deployment  # type: ignore[no-redef]

    root = str(Path(root).resolve())
    config = load_config(Path(root) / params)
    serve(*deployments(config, params, root), *deployment(config, params, root))


if __name__ == "__main__":
    sys.exit(main())
