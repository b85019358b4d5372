"""The training flow: the pipeline's stages as Prefect tasks, in DVC's order and with DVC's
memory (``tabreg.orchestration.stage_run``): a stage DVC finds up to date does nothing, so a
second run with nothing changed recomputes nothing, and after a run ``dvc status`` is clean.
Run it with ``make run`` (or ``python flows/training.py``); ``python -m tabreg pipeline`` runs
the same stages without Prefect.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tabreg import steps
from tabreg.config import load_config
from tabreg.orchestration import stage_run
from tabreg.orchestration.summary import stage_rows, summary, summary_facts, table_rows

#: The state name a stage DVC finds up to date ends in (a Completed state, shown apart).
SKIPPED = "Skipped"


@task(cache_policy=NO_CACHE, retries=0, persist_result=False, task_run_name="{name}")
def run_stage(name: str, params: str, root: str) -> dict:
    """One stage (``tabreg.orchestration.stage_run``); an up-to-date stage ends in a Completed
    state named ``Skipped``, which the Prefect UI shows apart from the stages that ran."""
    from prefect.states import Completed

    base = Path(root)
    config = load_config(base / params)  # re-read: each task must stand alone when retried
    outcome = stage_run.run_stage(config, base, name, get_run_logger())
    if not outcome["ran"]:
        return Completed(name=SKIPPED, message=f"{name}: up to date (DVC)", data=outcome)
    return outcome


@flow(name="training", log_prints=True, persist_result=False)
def training(params: str = "params.yaml", root: str = ".") -> list[dict]:
    """ingest -> validate -> split -> features -> tune -> train -> evaluate -> register."""
    from tabreg.logs import quiet_libraries

    quiet_libraries(dvc=True)
    # Prefect attaches its handlers to the `tabreg` loggers (PREFECT_LOGGING_EXTRA_LOGGERS) but
    # leaves them at WARNING: the steps' INFO lines (trials as they finish) would be lost.
    logging.getLogger("tabreg").setLevel(logging.INFO)
    # A bad configuration, an unreachable tracking store or a missing GPU fails here, before
    # any step runs.
    stage_run.prepare(load_config(Path(root) / params), Path(root))
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


if __name__ == "__main__":
    sys.exit(main())
