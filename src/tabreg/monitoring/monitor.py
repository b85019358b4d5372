"""``make monitor``: one report on a window of served traffic, and what to do about it.

The window (by default since the last report's end, to now) is read from the inference log,
labels that arrived in ``monitor.labels`` are joined to it, and the summary
(:mod:`tabreg.monitoring.summary`) compares it with the champion's training data and test
figures (:mod:`tabreg.monitoring.evidence`). Then:

* the report: an HTML page that opens offline and a JSON summary, under ``paths.monitoring``
  (one folder per report, the latest also as ``report.html``, ``summary.json`` and
  ``to_label.csv`` beside them), the same logged as a run of the ``monitor.experiment``
  experiment in MLflow;
* the remedy when the verdict is ``act``: ``make rollback`` when the version the champion
  replaced does better on the same labelled rows (it is said, not done: moving the champion
  back is a person's decision), otherwise the retrain flow (``trigger="monitor"``), which
  retrains when new data has arrived and says what is missing when none has;
* a ledger entry with the verdict, its reasons and the remedy, beside the gate's decisions.

An empty window is not an error: it says there is nothing to monitor, writes nothing and
leaves the next window's start where it was.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.monitoring.window import parse_time, read_window

log = logging.getLogger(__name__)

SUMMARY, REPORT, TO_LABEL = "summary.json", "report.html", "to_label.csv"
#: Numeric features drawn beside the predictions in the report: the most drifted, at most.
DRAWN_FEATURES = 3


def last_until(folder: Path) -> datetime | None:
    """Where the last report's window ended (None: no report yet)."""
    path = folder / SUMMARY
    if not path.exists():
        return None
    try:
        return parse_time(json.loads(path.read_text())["window"]["until"], str(path))
    except (KeyError, TypeError, ValueError, TabregError):
        raise TabregError(f"{path} does not say where the last window ended; give the window "
                          "explicitly (SINCE=2026-11-30T00:00Z) or move the file aside") from None


def bounds(config: Config, root: Path, since: str | None, until: str | None
           ) -> tuple[datetime | None, datetime]:
    """The window: ``since`` (default: the last report's end) to ``until`` (default: now)."""
    end = parse_time(until, "until") if until else datetime.now(UTC)
    start = (parse_time(since, "since") if since
             else last_until(root / config.paths.monitoring))
    if start is not None and start >= end:
        raise TabregError(f"the window is empty by its bounds: since {start.isoformat()} is "
                          f"not before until {end.isoformat()}")
    return start, end


def gather(config: Config, root: Path, start: datetime | None, end: datetime
           ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The window's logged rows with their labels (NaN where none came), and what reading
    the labels found."""
    from tabreg.monitoring.labels import LabelReport, join, read_labels

    if not config.monitor.log:
        raise TabregError("the inference log is off (monitor.log is empty): there is no "
                          "served traffic to monitor; set monitor.log (or INFERENCE_LOG)")
    if "://" not in config.monitor.log:  # the days no server writes to any more: one file each
        from tabreg.serving.inference_log import compact_days

        today = datetime.now(UTC).strftime("%Y-%m-%d")
        merged = compact_days(root / config.monitor.log, before=today)
        if merged:
            log.info("monitor: merged the inference log's files of %d past day(s) (%d files)",
                     len(merged), sum(merged.values()))
    frame = read_window(config.monitor.log, root, start, end)
    target = config.schema.target
    folder = root / config.monitor.labels
    labels, report = (read_labels(folder, target) if folder.is_dir()
                      else (pd.DataFrame(), LabelReport()))
    if frame.empty:
        return frame, report.to_dict()
    if labels.empty:
        return frame.assign(**{target: np.nan}), report.to_dict()
    return join(frame, labels, target, report), report.to_dict()


def samples(summary: dict[str, Any], frame: pd.DataFrame, reference: pd.DataFrame,
            reference_predictions: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the report draws as distributions: the predictions, and the most drifted
    numeric features."""
    drawn = {"prediction": (np.asarray(reference_predictions, dtype=float),
                            frame["prediction"].to_numpy(dtype=float))}
    features = summary["input_drift"]["features"]
    numeric = sorted((k for k, v in features.items()
                      if v["kind"] == "numeric" and v["level"] != "none"),
                     key=lambda k: -features[k]["psi"])
    for name in numeric[:DRAWN_FEATURES]:
        drawn[name] = (pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=float),
                       pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float))
    return drawn


def remedy(summary: dict[str, Any], rollback: dict[str, Any] | None) -> dict[str, str]:
    """What an ``act`` verdict calls for: ``rollback`` when the replaced version did better
    on the same labelled rows, else ``retrain``; ``none`` for ``ok`` and ``warn``."""
    if summary["verdict"] != "act":
        return {"kind": "none", "detail": f"verdict {summary['verdict']}: nothing to do"
                + (" but to watch the reasons" if summary["verdict"] == "warn" else "")}
    if rollback and rollback.get("previous_better"):
        return {"kind": "rollback", "detail": (
            f"version {rollback['previous']}, which the champion replaced, does better on the "
            f"same {rollback['rows']:,} labelled rows (RMSE {rollback['previous_rmse']:,.0f} "
            f"against {rollback['champion_rmse']:,.0f}): `make rollback` moves the champion "
            "back to it")}
    return {"kind": "retrain", "detail": "the retrain flow was started"}


def run_remedy(action: dict[str, str], retrain: Callable[[], dict] | None
               ) -> BaseException | None:
    """Start the retrain flow for a ``retrain`` remedy; its outcome (or its failure, which
    is returned to be raised once the report is written) goes into ``action``."""
    if action["kind"] != "retrain":
        return None
    if retrain is None:
        action["detail"] = "retraining was not asked for (--no-act): run `make retrain`"
        return None
    try:
        outcome = retrain()
    except Exception as exc:  # noqa: BLE001 - reported, recorded, then raised by the caller
        action["detail"] = f"the retrain flow failed: {(str(exc) or type(exc).__name__)[:300]}"
        return exc
    action["retrain"] = outcome.get("action", "?")
    action["detail"] = f"the retrain flow ran: {outcome.get('action', '?')}: " + "; ".join(
        map(str, outcome.get("reasons", [])))
    if outcome.get("decision"):
        action["detail"] += f"; gate: {outcome['decision']}"
    return None


def write_outputs(folder: Path, summary: dict[str, Any],
                  drawn: dict[str, tuple[np.ndarray, np.ndarray]],
                  pending: pd.DataFrame) -> dict[str, Path]:
    """The report, the summary and the rows to label: in a folder of their own (named by
    the window's end) and, as the latest, beside it (unless an earlier window was asked for:
    the next default window starts where the latest one ended)."""
    from tabreg.io import write_json
    from tabreg.monitoring import report

    stamp = summary["window"]["until"].replace(":", "").replace("-", "")[:15] + "Z"
    here = folder / stamp
    files = {"report": report.write(summary, drawn, here / REPORT),
             "summary": write_json(summary, here / SUMMARY),
             "to_label": here / TO_LABEL}
    pending.drop(columns=["date"], errors="ignore").to_csv(files["to_label"], index=False)
    latest = last_until(folder)
    if latest is not None and parse_time(summary["window"]["until"], "until") < latest:
        return files  # an earlier window looked at again: the latest stays the latest
    for path in files.values():  # the latest, where a reader (and the next window) looks
        tmp = folder / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.replace(folder / path.name)
    return files


def log_run(config: Config, root: Path, summary: dict[str, Any],
            files: dict[str, Path]) -> str:
    """The report as a run of the monitoring experiment; returns its id."""
    import mlflow

    from tabreg.store import tracking

    tracking.start(config, root, name=config.monitor.experiment)
    live, drifted = summary["live"], summary["input_drift"]
    metrics = {"rows": summary["rows"], "input_max_psi": drifted["max_psi"],
               "prediction_psi": summary["prediction_drift"]["psi"],
               "flagged_share": summary["flags"]["any"], "labelled_rows": live.get("rows", 0)}
    metrics.update({f"live_{k}": live[k] for k in ("rmse", "mae", "rmse_low", "rmse_high",
                                                    "interval_coverage", "interval_width")
                    if live.get(k) is not None})
    metrics.update({f"psi.{k}": v["psi"] for k, v in drifted["features"].items()})
    with tracking.start_run(run_name=f"monitor-{summary['verdict']}", tags={
            "kind": "monitor", "verdict": summary["verdict"],
            "remedy": summary["action"]["kind"], "model": summary["model"],
            "champion_version": summary["champion"]["version"]}) as run:
        mlflow.log_params({"window.since": summary["window"]["since"] or "start of the log",
                           "window.until": summary["window"]["until"]})
        mlflow.log_metrics(metrics)
        for path in files.values():
            mlflow.log_artifact(str(path))
        return str(run.info.run_id)


def monitor(config: Config, root: Path, *, since: str | None = None,
            until: str | None = None, retrain: Callable[[], dict] | None = None
            ) -> dict[str, Any]:
    """One monitoring report (see the module docstring); returns its summary. ``retrain``
    starts the retrain flow when the verdict calls for it (None: only say so)."""
    from tabreg.monitoring import evidence
    from tabreg.monitoring.summary import summarize, to_label

    start, end = bounds(config, root, since, until)
    frame, labels = gather(config, root, start, end)
    window = {"since": start.isoformat() if start else None, "until": end.isoformat()}
    if frame.empty:
        log.info("monitor: nothing to monitor: no row was scored in the window")
        return {"rows": 0, "verdict": "ok", "window": window, "reasons": [
            "nothing to monitor: no row was scored in the window"]}
    served = evidence.champion(config, root)
    reference, predicted = evidence.reference(config, root, served)
    summary = summarize(frame, reference, predicted, served.figures, config)
    target = config.schema.target
    labelled = frame[frame[target].notna()]
    rollback = (evidence.rollback_evidence(config, served, labelled)
                if summary["verdict"] == "act" else None)
    drift = config.retrain.drift
    summary.update(window=window, model=served.name, labels=labels, rollback=rollback,
                   champion_slices=served.slices, action=remedy(summary, rollback),
                   thresholds={"psi_moderate": drift.psi_moderate, "psi_major": drift.psi_major})
    failure = run_remedy(summary["action"], retrain)
    pending = to_label(frame, target, config.monitor.to_label_rows)
    summary["to_label"] = {"rows": len(pending),
                           "path": str(Path(config.paths.monitoring) / TO_LABEL)}
    summary["report"] = str(Path(config.paths.monitoring) / REPORT)
    files = write_outputs(root / config.paths.monitoring, summary,
                          samples(summary, frame, reference, predicted), pending)
    summary["mlflow_run"] = log_run(config, root, summary, files)
    _record(config, root, summary)
    if failure is not None:
        raise failure
    return summary


def _record(config: Config, root: Path, summary: dict[str, Any]) -> None:
    """The verdict and its remedy in the decision ledger."""
    from tabreg.promotion import registry

    registry.record(root / config.registry.ledger, {
        "model": summary["model"], "action": "monitor", "verdict": summary["verdict"],
        "reasons": summary["reasons"], "remedy": summary["action"]["kind"],
        "detail": summary["action"]["detail"], "window": summary["window"],
        "rows": summary["rows"], "champion": summary["champion"]["version"],
        "mlflow_run": summary.get("mlflow_run")})
