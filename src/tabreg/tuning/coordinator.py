"""The tune step's side of the study: create it, start workers, watch, log, conclude.

The coordinator never fits a model. It makes (or resumes) the study with its budget and
versions, starts ``tune.workers`` workers (local processes, or Prefect flow runs), reports
each trial as it finishes (a progress line, and a nested MLflow run under the pipeline's
parent run), fires the time guard when ``tune.timeout`` passes, and, once no trial of the
budget is left to run, returns the best candidate (or the blend of the best trials).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabreg.config import Config
from tabreg.errors import TabregError
from tabreg.io import file_md5, read_table
from tabreg.models.candidates import Blend, Candidate
from tabreg.tuning import launch, progress
from tabreg.tuning import study as shared
from tabreg.tuning.space import family_schedule, study_name
from tabreg.tuning.worker import EPOCH_STEP_OFFSET

log = logging.getLogger(__name__)
#: Seconds between looks at the storage while workers run.
POLL = 1.0


class TuningFailed(TabregError):
    """No trial of the study completed, or the workers could not run."""


@dataclass(frozen=True)
class TuneResult:
    study: str
    best: Candidate | Blend
    best_value: float
    trials: list[dict] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    best_trial: int | None = None
    blend: dict[str, Any] = field(default_factory=dict)
    budget: int = 0
    guard: str | None = None  # the time guard's message, when it fired
    workers: dict[str, Any] = field(default_factory=dict)
    #: The chosen candidate's out-of-fold predictions on the training rows (in their order):
    #: what the prediction intervals are calibrated on.
    oof: Any = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out

    def per_family(self) -> dict[str, dict[str, int]]:
        return progress.per_family(self.trials)


def _config_attr(config: Config) -> dict:
    """The configuration as plain JSON data (infinite bins survive as JSON's Infinity)."""
    return json.loads(json.dumps(config.model_dump(mode="python", by_alias=True)))


def open_study(config: Config, root: Path, url: str, data_version: str) -> Any:
    """Create or resume the study for this data and space, stamped with what workers check."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name(config, data_version)
    study = optuna.create_study(study_name=name, storage=shared.open_storage(url),
                                load_if_exists=True, direction="minimize")
    attrs = study.user_attrs
    if attrs.get(shared.ATTR_DATA) not in (None, data_version):  # a study name collision
        raise TuningFailed(f"study {name} holds trials of data {attrs[shared.ATTR_DATA]}")
    stamp = {shared.ATTR_CONFIG: _config_attr(config), shared.ATTR_DATA: data_version,
             shared.ATTR_CODE: shared.code_version(), shared.ATTR_BUDGET: config.tune.n_trials,
             shared.ATTR_DEADLINE: None}
    for key, value in stamp.items():
        study.set_user_attr(key, value)
    return study


def workers_to_start(asked: int, pending: int, lag: int) -> int:
    """No more workers than trials left to run, nor than trials that can run at once: trial n
    waits for trials 0..n-1-lag (``tuning.worker.LaggedView``), so lag + 1 run side by side."""
    return min(asked, pending, lag + 1)


def tune(config: Config, root: Path, *, parent_run_id: str | None = None) -> TuneResult:
    """Run (or resume) the study until ``tune.n_trials`` trials have ended, or the guard
    (``tune.timeout``) fires; the training split is ``paths.train`` under ``root``."""
    from tabreg.resources import fit_threads

    train_path = root / config.paths.train
    train = read_table(train_path)
    data_version = file_md5(train_path)
    url = shared.storage_url(config, root)
    where = launch.choose(config.tune.launcher)
    workers = launch.worker_count(config.tune.workers, where,
                                  oversubscribe=config.tune.oversubscribe)
    study = open_study(config, root, url, data_version)
    if failed := shared.fail_dead_trials(study):
        log.warning("tune: trials %s were left running by a worker that died; marked failed",
                    failed)
    budget = config.tune.n_trials
    schedule = family_schedule(config.tune.families, config.tune.family_weights, budget)
    pending = shared.ensure_budget(study, budget, schedule)
    started = workers_to_start(workers, pending, config.tune.lag)
    if workers > (at_once := workers_to_start(workers, workers, config.tune.lag)):
        log.warning("tune: %d workers asked for, but with tune.lag %d only %d trials can run "
                    "at once; starting %d (a larger lag lets more run, as another study)",
                    workers, config.tune.lag, at_once, min(at_once, pending))
    threads = fit_threads(max(started, 1))
    log.info("tune: study %s: %d of %d trials done; %d to run on %d %s worker(s)",
             study.study_name, budget - pending, budget, pending, started, where)
    watch = _Watch(study, budget, config, parent_run_id)
    watch.seen = {t.number for t in study.get_trials(deepcopy=False)
                  if t.state.name in shared.FINISHED}
    guard = None
    if pending:
        if config.tune.timeout is not None:
            study.set_user_attr(shared.ATTR_DEADLINE, time.time() + config.tune.timeout)
        runner: launch.Workers
        if where == "inline":
            runner = launch.InlineWorker(root, url, study.study_name, threads,
                                         after_trial=watch.report_new)
        elif where == "local":
            runner = launch.LocalWorkers(root, url, study.study_name, started, threads,
                                         root / ".cache" / "tune" / study.study_name)
        else:
            runner = launch.PrefectWorkers(study.study_name, started)
        try:
            guard = watch.until_done(runner)
        finally:
            runner.stop()
        watch.report_new()
    return conclude(study, train, config, budget, guard,
                    {"launcher": where, "workers": started, "threads_per_fit": threads})


class _Watch:
    """Reports trials as they finish, and decides when the study is over."""

    def __init__(self, study: Any, budget: int, config: Config,
                 parent_run_id: str | None) -> None:
        self.study, self.budget, self.config = study, budget, config
        self.parent = parent_run_id
        self.seen: set[int] = set()
        self.started = time.monotonic()
        self.best: float | None = None

    def _trials(self) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False) if t.number < self.budget]

    def report_new(self) -> list[Any]:
        trials = self._trials()
        finished = [t for t in trials if t.state.name in shared.FINISHED]
        running = sum(t.state.name == "RUNNING" for t in trials)
        for t in sorted(finished, key=lambda t: t.datetime_complete or t.datetime_start):
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            if t.state.name == "COMPLETE" and (self.best is None or t.value < self.best):
                self.best = t.value
            progress.log.info(progress.trial_line(
                t, len(self.seen), self.budget, self.best,
                time.monotonic() - self.started, running))
            if self.parent:
                log_trial_run(t, self.study.study_name, self.parent)
        return trials

    def until_done(self, runner: launch.Workers) -> str | None:
        """Wait until every trial of the budget has ended, or the guard fired and the running
        trials ended; returns the guard's message if it fired."""
        fired = False
        while True:
            trials = self.report_new()
            states = [t.state.name for t in trials]
            if all(s in shared.FINISHED for s in states):
                return _guard_text(trials, self.budget) if fired else None
            if not fired and shared.deadline_passed(self.study):
                fired = True
                log.warning("tune: the time guard (tune.timeout = %ss) fired: no new trials; "
                            "waiting for the running ones", self.config.tune.timeout)
            if runner.running() == 0:
                shared.fail_dead_trials(self.study)
                self.report_new()
                if fired or "RUNNING" not in states:
                    if not fired and "WAITING" in states:
                        raise TuningFailed("tuning workers stopped with trials left: "
                                           + "; ".join(runner.failures() or ["no reason"]))
                    return _guard_text(self._trials(), self.budget) if fired else None
            time.sleep(POLL)


def _guard_text(trials: list[Any], budget: int) -> str:
    ended = sum(t.state.name in shared.FINISHED for t in trials)
    return (f"study stopped by the time guard (tune.timeout) after {ended} of {budget} "
            "trials; rerun to resume it, or raise tune.timeout")


def log_trial_run(trial: Any, study: str, parent_run_id: str) -> None:
    """The trial as a nested MLflow run of the pipeline's parent run (its real start and end
    times, parameters, fold-by-fold and epoch-by-epoch curves)."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None
    end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
    state = {"COMPLETE": "complete", "PRUNED": "pruned"}.get(trial.state.name, "failed")
    worker = trial.system_attrs.get(shared.ATTR_WORKER) or {}
    tags = {"mlflow.parentRunId": parent_run_id, "kind": "trial", "study": study,
            "trial": str(trial.number), "family": str(trial.params.get("family")),
            "state": state, "worker": f"{worker.get('host')}:{worker.get('pid')}"}
    if reason := trial.system_attrs.get("fail_reason"):
        tags["error"] = str(reason)[:5000]
    run = client.create_run(parent.info.experiment_id, start_time=start,
                            run_name=f"trial-{trial.number}", tags=tags)
    stamp = end or start or 0
    metrics = []
    for step, value in sorted(trial.intermediate_values.items()):
        key, at = (("cv_rmse_running", step) if step < EPOCH_STEP_OFFSET
                   else ("fold0_val_rmse", step - EPOCH_STEP_OFFSET))
        metrics.append(Metric(key, float(value), stamp, at))
    if trial.state.name == "COMPLETE":
        folds = trial.user_attrs.get("fold_rmse") or []
        metrics.append(Metric("cv_rmse", float(trial.value), stamp, 0))
        if folds:
            import numpy as np

            metrics.append(Metric("cv_rmse_std", float(np.std(folds)), stamp, 0))
    if trial.duration is not None:
        metrics.append(Metric("seconds", trial.duration.total_seconds(), stamp, 0))
    params = [Param(k, str(v)) for k, v in trial.params.items()]
    client.log_batch(run.info.run_id, metrics=metrics, params=params,
                     tags=[RunTag("mlflow.runName", f"trial-{trial.number}")])
    status = {"complete": "FINISHED", "pruned": "KILLED"}.get(state, "FAILED")
    client.set_terminated(run.info.run_id, status=status, end_time=end)


def conclude(study: Any, train: Any, config: Config, budget: int, guard: str | None,
             workers: dict[str, Any]) -> TuneResult:
    """The study's result: trial records, importances, the best candidate or the blend."""
    import optuna

    from tabreg.tuning.blend import blend_of_best

    trials = study.get_trials(deepcopy=False)
    records = [shared.trial_record(t) for t in trials]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete and guard:
        raise TuningFailed(f"{guard}; no trial completed before it fired")
    if not complete:
        errors = {t.number: t.system_attrs.get("fail_reason", "") for t in trials
                  if t.state.name == "FAIL"}
        raise TuningFailed(f"study {study.study_name}: no trial completed ({len(trials)} "
                           f"trials; failures: {errors or 'none'}); see the MLflow trial runs")
    importances: dict[str, float] = {}
    if len(complete) >= 3:
        try:
            with warnings.catch_warnings():  # "fewer than 2 trials in some regimes": expected
                warnings.filterwarnings("ignore", message="Some regimes for parameter")
                importances = {k: float(v) for k, v in
                               optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as exc:  # too few distinct values, for one
            log.warning("tune: parameter importances unavailable: %s", exc)
    best = min(complete, key=lambda t: t.value)
    y = train[config.schema.target].to_numpy(dtype=float)
    chosen, value = Candidate.from_flat(best.params), float(best.value)
    oof = (shared.decode_oof(best.user_attrs[shared.ATTR_OOF])
           if shared.ATTR_OOF in best.user_attrs else None)
    blend = blend_of_best(trials, y, config)
    if blend and blend["chosen"]:
        chosen, value, oof = blend["candidate"], blend["cv_rmse"], blend["oof"]
    blend.pop("candidate", None)
    blend.pop("oof", None)
    if guard:
        log.warning("tune: %s", guard)
    result = TuneResult(study.study_name, chosen, value, records, importances, best.number,
                        blend, budget, guard, workers, oof)
    log.info("tune: trials per family: %s", progress.families_text(result.per_family()))
    return result
