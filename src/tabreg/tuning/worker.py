"""A tuning worker: claims trials of a shared study until the budget or the guard ends it.

Started as ``python -m tabreg tune-worker --study NAME`` (by the tune step, once per local
worker, or on any host by a Prefect work pool or by hand): the same code on one machine or
many. A worker needs only the storage URL, the study's name and a checkout of the project with
the study's data version; it reads everything else from the study (see ``tuning.study``), and
talks to nothing but the storage. The tune step logs the trials to MLflow as they finish.

Each trial is cross-validated on the training split (the test split is never read), reported
fold by fold (and, for the MLP, epoch by epoch on the first fold) to a median pruner, under
a thread budget (``tabreg.resources``). A trial learns from, and is pruned against, only the
trials ``tune.lag`` or more before it, once they are finished (:class:`LaggedView`), so that
the trials do not depend on how many workers run or how fast.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabreg.config import Config
from tabreg.evaluation.card import number
from tabreg.evaluation.metrics import rmse
from tabreg.io import file_md5, read_table
from tabreg.models.candidates import Candidate, make_pipeline
from tabreg.tuning import study as shared
from tabreg.tuning.space import suggest

log = logging.getLogger(__name__)

#: MLP epochs are reported at this offset + epoch, apart from the per-fold steps 0..k-1, so
#: the median pruner compares epochs with epochs and folds with folds.
EPOCH_STEP_OFFSET = 1000
#: Epochs before an MLP trial can be pruned (the first ones are noisy).
EPOCH_WARMUP = 5




def cross_validate(candidate: Candidate, config: Config, frame: pd.DataFrame,
                   report: Callable[[float, int], None] | None = None, *, n_jobs: int = 1
                   ) -> tuple[list[float], np.ndarray]:
    """Fold RMSEs and out-of-fold predictions of ``candidate`` on ``frame``;
    ``report(value, step)`` may raise to prune."""
    from sklearn.model_selection import KFold

    y = frame[config.schema.target].to_numpy(dtype=float)
    folds = KFold(n_splits=config.tune.cv_folds, shuffle=True, random_state=config.tune.seed)
    scores: list[float] = []
    oof = np.full(len(frame), np.nan)
    for k, (fit_idx, val_idx) in enumerate(folds.split(frame)):
        pipeline = make_pipeline(candidate, config, n_jobs=n_jobs)
        fit_params = {}
        if candidate.family == "mlp" and report is not None and k == 0:
            def on_epoch(epoch: int, _loss: float, val_rmse: float) -> None:
                if epoch >= EPOCH_WARMUP and math.isfinite(val_rmse):
                    report(val_rmse, EPOCH_STEP_OFFSET + epoch)
            fit_params["model__epoch_callback"] = on_epoch
        pipeline.fit(frame.iloc[fit_idx], y[fit_idx], **fit_params)
        oof[val_idx] = pipeline.predict(frame.iloc[val_idx])
        scores.append(rmse(y[val_idx], oof[val_idx]))
        if report is not None:
            report(float(np.mean(scores)), k)
    return scores, oof


def sampler(config: Config, number: int, budget: int) -> Any:
    """The TPE sampler for trial ``number``: seeded by the study's seed and the trial number,
    so one worker repeats itself exactly, and parallel workers draw different random trials
    (one seed for all would give every worker the same start-up trials)."""
    import optuna

    with warnings.catch_warnings():  # multivariate and group are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=config.tune.seed + number, multivariate=True,
                                          group=True, n_startup_trials=min(10, budget))


def pruner() -> Any:
    """A median pruner that compares a trial only with finished trials of its own family.

    Optuna's ``MedianPruner`` compares with every finished trial: a gradient boosting trial was
    then judged against random forests at the same fold, and most of them were pruned before
    the family had a single finished trial to learn from (on the real data, 7 of 8)."""
    import optuna

    class FamilyMedianPruner(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            return prune_within_family(study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), trial)

    return FamilyMedianPruner()


#: Finished trials of a family before its trials can be pruned.
PRUNE_STARTUP_TRIALS = 4


def prune_within_family(finished: list, trial: Any) -> bool:
    """Prune when the trial's latest value is worse than the median of its family's finished
    trials at the same step (and the family has :data:`PRUNE_STARTUP_TRIALS` of them)."""
    step = trial.last_step
    if step is None:
        return False
    value = trial.intermediate_values[step]
    if not math.isfinite(value):
        return True
    family = trial.params.get("family")
    others = [t.intermediate_values[step] for t in finished
              if t.params.get("family") == family and step in t.intermediate_values]
    if len(others) < PRUNE_STARTUP_TRIALS:
        return False
    return value > float(np.median(others))


class LaggedView:
    """The study as trial ``number`` sees it: only the trials numbered below ``number - lag``.

    Why: with several workers, what a trial is proposed from (TPE) and judged against (the
    pruner) would otherwise be whichever trials had finished when it started or reported, so
    the order in which trials finish, which the number of workers or a busy neighbour
    changes, would steer the search. Trial n instead waits until trials 0..n-1-lag are
    finished (:func:`wait_for_view`) and sees those only: any number of workers up to
    lag + 1, idle or busy, runs the same trials. Everything else is the study's own.
    """

    def __init__(self, study: Any, number: int, lag: int) -> None:
        self._study, self.before = study, number - lag

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _seen(self, trials: list) -> list:
        return [t for t in trials if t.number < self.before]

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list:
        return self._seen(self._study.get_trials(deepcopy=deepcopy, states=states))

    def _get_trials(self, deepcopy: bool = True, states: Any = None,
                    use_cache: bool = False) -> list:
        return self._seen(self._study._get_trials(deepcopy=deepcopy, states=states,
                                                  use_cache=use_cache))

    @property
    def trials(self) -> list:
        return self.get_trials()


def wait_for_view(study: Any, before: int | None, *, lag: int = 0, budget: int = 0,
                  poll: float = 0.2) -> list[int]:
    """Wait until every trial numbered below ``before`` is finished, failing those whose
    worker died meanwhile; the time guard or a stop ends the wait. Returns the numbers waited
    for. ``before=None``: the view of the next trial to claim (the lowest WAITING one of the
    ``budget``, less ``lag``), so that a worker waits before it claims, and a trial's recorded
    time is its own work.

    It cannot wait in a circle: the trials waited for were claimed earlier (claims go in
    number order), and each of them waits, if at all, only for lower numbers."""
    waited: set[int] = set()
    while not shared.deadline_passed(study):
        trials = study.get_trials(deepcopy=False)
        below = before
        if below is None:
            waiting = [t.number for t in trials
                       if t.state.name == "WAITING" and t.number < budget]
            below = min(waiting) - lag if waiting else -1
        open_ = [t.number for t in trials
                 if t.number < below and t.state.name not in shared.FINISHED]
        if not open_:
            break
        waited.update(open_)
        shared.fail_dead_trials(study)
        _STOP.exit_if_asked()
        time.sleep(poll)
    return sorted(waited)


class _Heartbeat:
    """Beats for a trial while it runs, on storages that have a heartbeat (databases)."""

    def __init__(self, study: Any, trial_id: int) -> None:
        self._storage, self._id = study._storage, trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if shared.has_heartbeat(self._storage):
            self._storage.record_heartbeat(trial_id)
            self._thread = threading.Thread(target=self._run, name="trial-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(shared.HEARTBEAT_INTERVAL):
            try:
                self._storage.record_heartbeat(self._id)
            except Exception as exc:  # a dropped connection: the next beat retries
                log.warning("tune-worker: heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_trial(study: Any, frozen: Any, config: Config, train: pd.DataFrame, *,
              budget: int, threads: int) -> str:
    """Run one claimed trial to its end and tell the study; returns its final state."""
    import optuna

    from tabreg.resources import thread_budget

    heartbeat = _Heartbeat(study, frozen._trial_id)
    study.sampler = sampler(config, frozen.number, budget)
    # A Study for the trial, the sampler and the pruner (they only read trials through it).
    view: Any = LaggedView(study, frozen.number, config.tune.lag)
    try:
        try:
            with _STOP.interruptible():  # a stop asked for while claiming ends the trial here
                wait_for_view(study, view.before)
                trial = optuna.Trial(view, frozen._trial_id)

                def report(value: float, step: int) -> None:
                    trial.report(value, step)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned at step {step} (rmse "
                                                 f"{number(value)})")

                candidate = suggest(trial, config)
                with thread_budget(threads, with_torch=candidate.family == "mlp") as n_jobs:
                    scores, oof = cross_validate(candidate, config, train, report,
                                                 n_jobs=n_jobs)
        except optuna.TrialPruned:
            study.tell(frozen.number, state=optuna.trial.TrialState.PRUNED,
                       skip_if_finished=True)
            return "PRUNED"
        except BaseException as exc:  # a stopped worker (SIGTERM, Ctrl-C) fails its trial too
            reason = (f"{type(exc).__name__}: {exc}" if isinstance(exc, Exception)
                      else "its worker was stopped")[:2000]
            study._storage.set_trial_system_attr(frozen._trial_id, "fail_reason", reason)
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL,
                       skip_if_finished=True)
            if not isinstance(exc, Exception):
                raise
            log.warning("tune-worker: trial %d failed: %s", frozen.number, reason)
            return "FAIL"
        trial.set_user_attr("fold_rmse", scores)
        trial.set_user_attr(shared.ATTR_OOF, shared.encode_oof(oof))
        study.tell(trial, float(np.mean(scores)), skip_if_finished=True)
        return "COMPLETE"
    finally:
        heartbeat.stop()


def load_shared_study(storage_url: str, name: str) -> Any:
    """The study ``name``, with a clear error when it does not exist."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = shared.open_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage, pruner=pruner())
    except KeyError:
        raise shared.VersionMismatch(
            f"no study {name!r} in {shared.redact(storage_url)}: the tune step creates it "
            "(make tune); a worker only joins one") from None


def study_config(study: Any) -> Config:
    """The configuration the study was made with (stored in it), so every worker agrees."""
    return Config.model_validate(study.user_attrs[shared.ATTR_CONFIG])


class _Stop:
    """SIGTERM (the tune step stopping its workers, Prefect cancelling a flow run) ends the
    worker through Python, so that its trial is told FAIL rather than left RUNNING. It may
    interrupt a trial's computation only: arriving while a trial is claimed or told, it is
    held and ends the worker once the trial's state is stored. (A flag, not a blocked signal:
    a signal mask is per thread, and any pool thread left unblocked would deliver it anyway.)
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._open = False

    def install(self) -> Any:
        """Handle SIGTERM (in the main thread only); returns the handler it replaced, for
        :meth:`restore` (None when nothing was replaced)."""
        if threading.current_thread() is not threading.main_thread():
            return None
        self.signum, self._open = None, False
        return signal.signal(signal.SIGTERM, self._handle)

    def restore(self, previous: Any) -> None:
        """Give SIGTERM back to ``previous``: a process that ran a worker in-process (the tune
        step with ``tune.launcher: inline``) must not go on holding its SIGTERMs."""
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        if self._open:
            self._open = False
            raise SystemExit(128 + signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        self.exit_if_asked()
        self._open = True
        try:
            yield
        finally:
            self._open = False

    def exit_if_asked(self) -> None:
        if self.signum is not None:
            raise SystemExit(128 + self.signum)


_STOP = _Stop()


def work(root: Path, storage_url: str, name: str, *, threads: int | None = None,
         max_trials: int | None = None, after_trial: Callable[[], object] | None = None
         ) -> dict:
    """Claim and run trials of study ``name`` until none is left, the guard fires, or
    ``max_trials`` ran here; ``after_trial`` is called after each. Returns what this worker
    did."""
    previous = _STOP.install()
    try:
        return _work(root, storage_url, name, threads=threads, max_trials=max_trials,
                     after_trial=after_trial)
    finally:
        _STOP.restore(previous)


def _work(root: Path, storage_url: str, name: str, *, threads: int | None,
          max_trials: int | None, after_trial: Callable[[], object] | None) -> dict:
    from tabreg.resources import fit_threads

    study = load_shared_study(storage_url, name)
    config = study_config(study)
    train_path = root / config.paths.train
    shared.check_versions(study, file_md5(train_path) if train_path.exists()
                          else "missing")
    train = read_table(train_path)
    threads = threads or fit_threads(1)
    done: dict[str, int] = {}
    started = time.monotonic()
    while max_trials is None or sum(done.values()) < max_trials:
        budget = int(study.user_attrs[shared.ATTR_BUDGET])
        if shared.deadline_passed(study):
            break
        shared.fail_dead_trials(study)
        _STOP.exit_if_asked()
        wait_for_view(study, None, lag=config.tune.lag, budget=budget)
        frozen = shared.claim(study, budget)
        if frozen is None:
            break
        state = run_trial(study, frozen, config, train, budget=budget, threads=threads)
        done[state] = done.get(state, 0) + 1
        if after_trial is not None:
            after_trial()
        _STOP.exit_if_asked()
    return {"study": name, "trials": done, "threads": threads,
            "seconds": round(time.monotonic() - started, 1), **shared.worker_identity()}
