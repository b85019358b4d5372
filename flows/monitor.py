"""The monitoring flow, and its schedule.

read the window of served traffic -> join labels -> compare with the champion's training data
and test figures -> report (HTML, JSON, MLflow) -> on ``act``: the retrain flow (a subflow,
``trigger="monitor"``), or the advice to roll back -> the ledger.

The work is ``tabreg.monitoring.monitor.monitor``'s; this flow runs it in Prefect and starts
the retrain flow as its subflow, so both runs show together in the UI. ``python
flows/monitor.py`` runs it once (``make monitor``); its deployment is served with the retrain
deployments by ``make schedule``, on ``monitor.cron``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow

try:
    from flows.retrain import retrain
except ImportError:  # run as a script (`python flows/monitor.py`): flows/ is on sys.path
    from retrain import retrain
from tabreg.config import Config

DEPLOYMENT = "monitor"


@flow(name="monitor", log_prints=True, persist_result=False)
def monitor(params: str = "params.yaml", root: str = ".", since: str | None = None,
            until: str | None = None, act: bool = True) -> dict:
    """One monitoring report; on ``act``, the retrain flow or the advice to roll back."""
    from pathlib import Path

    from tabreg.config import load_config
    from tabreg.logs import quiet_libraries
    from tabreg.monitoring.monitor import monitor as report
    from tabreg.orchestration import run_report

    quiet_libraries(dvc=True)
    config = load_config(Path(root) / params)

    def start_retrain() -> dict:
        outcome: Any = retrain(params=params, root=root, trigger="monitor")
        return outcome if isinstance(outcome, dict) else outcome.result()

    summary = report(config, Path(root), since=since, until=until,
                     retrain=start_retrain if act else None)
    rows = [{"kind": "verdict", "value": summary["verdict"], "detail": ""}]
    rows += [{"kind": "reason", "value": "", "detail": r} for r in summary["reasons"]]
    if summary["rows"]:
        rows.append({"kind": "remedy", "value": summary["action"]["kind"],
                     "detail": summary["action"]["detail"]})
    markdown = "\n\n".join([f"# Monitor: {summary['verdict']}",
                              run_report.markdown_table(rows)])
    run_report.publish("monitor", f"Monitor: {summary['verdict']}", markdown, rows)
    return summary


def deployment(config: Config, params: str, root: str) -> list:
    """The scheduled monitor (none when ``monitor.cron`` is null)."""
    from prefect.schedules import Cron

    if not config.monitor.cron:
        return []
    return [monitor.to_deployment(
        name=DEPLOYMENT, schedule=Cron(config.monitor.cron, timezone=config.monitor.timezone),
        parameters={"params": params, "root": root}, concurrency_limit=1, tags=["tabreg"],
        description="Report on the served traffic; retrain or advise a rollback on act")]


def main(argv: list[str] | None = None) -> int:
    from tabreg.cli import summary_lines
    from tabreg.orchestration import flowrun

    parser = argparse.ArgumentParser(description="Run the monitoring flow once.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--root", default=".")
    parser.add_argument("--since", default=None, help="the window's start (ISO time; default: "
                        "where the last report ended)")
    parser.add_argument("--until", default=None, help="the window's end (default: now)")
    parser.add_argument("--no-act", dest="act", action="store_false",
                        help="report only: do not start the retrain flow on act")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the traceback of a failure, not only its message")
    args = parser.parse_args(argv)
    summary, code = flowrun.run(monitor, verbose=args.verbose, params=args.params,
                                root=args.root, since=args.since, until=args.until,
                                act=args.act)
    if code:
        return code
    summary_lines(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
