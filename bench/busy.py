"""Benchmarks beside a busy process: a fit's thread budget, its cost to torch, parallel trials.

A user's machine is never idle. Each figure here is measured alone and beside a CPU-bound
neighbour pinned to core 0 (a browser, an IDE, a test run), in the same run, and reported as
a ratio: a fit under the project's thread budget (``tabreg.resources``) beside the neighbour
over the same fit alone; the MLP under that budget over torch's defaults, idle, and beside
the neighbour over idle; and completed trials per minute with 2 workers over 1, idle and
beside the neighbour.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

PY = sys.executable


@contextmanager
def busy_neighbour(core: int = 0) -> Iterator[None]:
    """A CPU-bound process pinned to ``core`` for the duration of the block."""
    def pin() -> None:
        if hasattr(os, "sched_setaffinity") and core in os.sched_getaffinity(0):
            os.sched_setaffinity(0, {core})

    proc = subprocess.Popen([PY, "-c", "while True: pass"], preexec_fn=pin)
    try:
        time.sleep(0.5)  # let it reach its core
        yield
    finally:
        proc.kill()
        proc.wait()


def _seconds(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return median(times)


def _training_frame(rows: int, real: Path | None):
    """The first ``rows`` real districts (shuffled) when the archive is at hand, else
    generated ones; with the pipeline's configuration and a description."""
    import pandas as pd

    from tabreg.config import load_config
    from tabreg.data import synthetic

    config = load_config(Path(__file__).resolve().parents[1] / "params.yaml", env={})
    if real is not None and real.is_file():
        import tarfile

        with tarfile.open(real) as archive:
            member = archive.extractfile(config.data.member)
            if member is not None:
                frame = pd.read_csv(member).sample(frac=1, random_state=0).head(rows)
                return frame, config, f"{len(frame):,} real rows"
    return synthetic.generate(rows, seed=5), config, f"{rows:,} generated rows"


def _training_matrix(rows: int, real: Path | None):
    """The feature matrix and target of :func:`_training_frame`."""
    from tabreg.models.features import build_preprocessor

    frame, config, what = _training_frame(rows, real)
    y = frame[config.schema.target].to_numpy(dtype=float)
    X = build_preprocessor(config.schema, config.features).fit_transform(frame)
    return X, y, what


def threads(plan, work: Path, real: Path | None, row: Callable[..., dict]) -> dict:
    """One gradient boosting fit (300 iterations, 63 leaves) under the budget, alone and
    beside the neighbour; the same with 2 threads for reference; the MLP's idle cost."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    from tabreg.resources import thread_budget, usable_cores

    rows = 3000 if plan.quick else 16_512
    X, y, what = _training_matrix(rows, real)
    iterations, reps = (60, 1) if plan.quick else (300, 3)

    def fit() -> None:
        HistGradientBoostingRegressor(max_iter=iterations, max_leaf_nodes=63,
                                      early_stopping=False, random_state=0).fit(X, y)

    with thread_budget(1):
        alone = _seconds(fit, reps)
        with busy_neighbour():
            beside = _seconds(fit, reps)
    cores = usable_cores()
    with threadpool_limits(limits=cores):
        alone_all = _seconds(fit, reps)
        with busy_neighbour():  # may collapse: one rep, bounded by the fit itself
            beside_all = _seconds(fit, 1)
    mlp = _mlp(X, y, work, quick=plan.quick)
    ratio = beside / alone
    torch_ratio = mlp["budget_idle_s"] / mlp["default_idle_s"]
    torch_busy = mlp["budget_busy_s"] / mlp["budget_idle_s"]
    return {
        "rows": what, "hgb_iterations": iterations, "hgb_alone_s": round(alone, 3),
        "hgb_beside_busy_s": round(beside, 3), "hgb_all_threads_alone_s": round(alone_all, 3),
        "hgb_all_threads_beside_busy_s": round(beside_all, 3), "cores": cores,
        **{f"mlp_{k}": v for k, v in mlp.items()},
        "table": [
            row(f"gradient boosting fit ({iterations} iterations, {what}) beside a busy "
                "process pinned to core 0, over the same fit alone (thread budget: 1 thread)",
                f"{beside:.2f} s", f"alone: {alone:.2f} s", f"{ratio:.2f}x", "<= 2.5x",
                ratio <= 2.5),
            row(f"the same fit with all {cores} threads (no budget), for reference",
                f"{beside_all:.2f} s beside", f"alone: {alone_all:.2f} s",
                f"{beside_all / alone_all:.2f}x"),
            row(f"MLP fit ({mlp['epochs']} epochs), idle: thread budget (1 thread) over "
                f"torch's default ({cores} threads)",
                f"{mlp['budget_idle_s']:.2f} s", f"{mlp['default_idle_s']:.2f} s",
                f"{torch_ratio:.2f}x", "<= 1.10x", torch_ratio <= 1.10),
            row("the same MLP fit under the budget beside the busy process, over idle; "
                f"torch's defaults there: {mlp['default_busy_s']:.2f} s",
                f"{mlp['budget_busy_s']:.2f} s", f"{mlp['budget_idle_s']:.2f} s",
                f"{torch_busy:.2f}x", "<= 2.5x", torch_busy <= 2.5),
        ]}


#: One MLP fit timed in a fresh process: OpenMP's wait policy is read when torch loads.
_MLP_FIT = """
import sys, time
import numpy as np
budget, data = sys.argv[1] == "budget", sys.argv[4]
epochs, reps = int(sys.argv[2]), int(sys.argv[3])
from tabreg.resources import fit_threads, thread_budget
import torch
from tabreg.models.mlp import TorchMLPRegressor
X, y = np.load(data + ".X.npy"), np.load(data + ".y.npy")
def fit():
    TorchMLPRegressor(depth=2, width=128, max_epochs=epochs, patience=epochs, batch_size=256,
                      device="cpu", random_state=0).fit(X, y)
def timed():
    fit()  # warm-up: allocator, thread pools
    times = []
    for _ in range(reps):
        began = time.perf_counter(); fit(); times.append(time.perf_counter() - began)
    return min(times)
if budget:
    with thread_budget(fit_threads(1), with_torch=True):
        print(timed())
else:
    print(timed())
"""


def _mlp(X, y, work: Path, *, quick: bool) -> dict:
    """The MLP under the project's budget (one thread) and under torch's default (a thread per
    core), each in a fresh process, idle and beside the busy neighbour. The fastest of a few
    fits: the figure is what the setting costs, not what the machine's other load added."""
    import numpy as np

    import tabreg

    data = work / "mlp"
    np.save(f"{data}.X.npy", np.asarray(X, dtype=np.float32))
    np.save(f"{data}.y.npy", np.asarray(y, dtype=np.float32))
    epochs, reps = (2, 1) if quick else (8, 3)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "TABREG_SPINNING_THREADS")}
    env["PYTHONPATH"] = str(Path(tabreg.__file__).resolve().parents[1])

    def seconds(setting: str, reps: int = reps) -> float:
        out = subprocess.run([PY, "-c", _MLP_FIT, setting, str(epochs), str(reps), str(data)],
                             env=env, capture_output=True, text=True, timeout=1800, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    figures = {"epochs": epochs, "budget_idle_s": seconds("budget"),
               "default_idle_s": seconds("default")}
    with busy_neighbour():
        figures["budget_busy_s"] = seconds("budget")
        figures["default_busy_s"] = seconds("default", 1)  # may collapse: one fit
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


#: The workers bench's search space: the pipeline's families, at a few seconds a trial.
_WORKERS_SPACE = {
    "random_forest": {"n_estimators": {"low": 40, "high": 120, "int": True},
                      "max_features": {"low": 2, "high": 8, "int": True}},
    "hist_gradient_boosting": {"max_iter": {"low": 100, "high": 300, "int": True},
                               "max_leaf_nodes": {"low": 15, "high": 63, "int": True}}}
#: ``--quick``'s: the same families at a fraction of a second a trial (the quick run checks
#: that the section works, not the figures).
_WORKERS_SPACE_QUICK = {
    "random_forest": {"n_estimators": {"low": 5, "high": 15, "int": True},
                      "max_features": {"low": 2, "high": 8, "int": True}},
    "hist_gradient_boosting": {"max_iter": {"low": 10, "high": 30, "int": True},
                               "max_leaf_nodes": {"low": 15, "high": 63, "int": True}}}


def _study(folder: Path, frame, trials: int, workers: int,
           space: dict = _WORKERS_SPACE) -> tuple[float, float, list]:
    """One study of ``trials`` trials with ``workers`` workers: (trials ended per minute,
    seconds of the whole tune, the trials as (number, params, value, state))."""
    import yaml

    from tabreg.config import parse_config
    from tabreg.io import write_table
    from tabreg.tuning import tune

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["tune"].update(n_trials=trials, timeout=None, cv_folds=3, workers=workers,
                       launcher="local", blend=False, space=space,
                       families=["random_forest", "hist_gradient_boosting"],
                       storage=f"journal:{folder / 'optuna.journal'}")
    config = parse_config(raw, env={}, origin="bench")
    write_table(frame, folder / config.paths.train)
    began = time.perf_counter()
    result = tune(config, folder)
    seconds = time.perf_counter() - began
    done = [(t["number"], t["params"], t["value"], t["state"]) for t in result.trials]
    # Trials ended per minute of the study's own span (first trial started to last one
    # ended): the workers' start-up (imports, a few seconds) is not tuning throughput.
    ended = [t for t in result.trials if t["ended"] is not None]
    span = max(t["ended"] for t in ended) - min(t["started"] for t in ended)
    return len(ended) / span * 60, seconds, done


@contextmanager
def one_core(core: int = 0) -> Iterator[None]:
    """Run the block (and the processes it starts) on one core, so that a worker's fits get
    one thread, as each of two workers' fits do on two cores."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def workers(plan, work: Path, real: Path | None, row: Callable[..., dict]) -> dict:
    """Completed trials per minute of one study: 2 workers over 1, and 2 workers beside the
    neighbour over idle.

    Two baselines for "1 worker", because one worker alone on 2 cores already uses the
    second core: its fits get both cores' threads (``fit_threads``), which the random forest
    turns into nearly 2x (joblib over trees). Over 1 worker at the same thread budget per
    fit (one thread, on one core) the figure is the scaling of trials across workers, what
    the target is about; over 1 worker on both cores it is what a user gains by running
    workers instead of threads.

    The trials are the pipeline's own kind (3-fold cross-validation of random forests and
    gradient boosting on the real training rows, a few seconds each): with toy trials of a
    second, the fixed cost per trial (the sampler, the storage, the tune step logging each
    trial to MLflow on the same 2 cores) is what gets measured, not tuning throughput."""
    rows, trials = (800, 4) if plan.quick else (16_512, 12)
    space = _WORKERS_SPACE_QUICK if plan.quick else _WORKERS_SPACE
    frame, _, what = _training_frame(rows, real)

    one, one_s, one_trials = _study(work / "one", frame, trials, 1, space)
    with one_core():
        one_thread, _, _ = _study(work / "one-core", frame, trials, 1, space)
    two, _, two_trials = _study(work / "two", frame, trials, 2, space)
    with busy_neighbour():
        two_busy, _, two_busy_trials = _study(work / "two-busy", frame, trials, 2, space)
        _, one_busy_s, one_busy_trials = _study(work / "one-busy", frame, trials, 1, space)
    scaling, over_threads = two / one_thread, two / one
    kept, slower = two_busy / two, one_busy_s / one_s
    same = one_trials == one_busy_trials
    same_two = two_trials == one_trials and two_busy_trials == one_trials
    return {"rows": what, "trials": trials, "one_worker_per_min": round(one, 2),
            "one_worker_one_thread_per_min": round(one_thread, 2),
            "two_workers_per_min": round(two, 2), "two_workers_busy_per_min": round(two_busy, 2),
            "one_worker_seconds": round(one_s, 1), "one_worker_busy_seconds": round(one_busy_s, 1),
            "one_worker_same_trials_busy": same, "two_workers_same_trials": same_two,
            "table": [
                row(f"tuning: trials ended per minute, 2 workers over 1 at one thread per fit "
                    f"({trials} trials, {what}, 2 idle cores)", f"{two:.1f}/min",
                    f"{one_thread:.1f}/min", f"{scaling:.2f}x", ">= 1.6x", scaling >= 1.6),
                row("tuning: 2 workers over 1 worker whose fits use both cores' threads",
                    f"{two:.1f}/min", f"{one:.1f}/min", f"{over_threads:.2f}x"),
                row("tuning: 2 workers beside a busy process pinned to core 0, over idle; "
                    "the same trials and values as 1 worker, idle and busy: "
                    f"{'yes' if same_two else 'NO'}", f"{two_busy:.1f}/min", f"{two:.1f}/min",
                    f"{kept:.2f}x", ">= 0.6x, same trials", kept >= 0.6 and same_two),
                row("tuning: 1 worker beside the busy process, over idle (time); same trials "
                    f"and values: {'yes' if same else 'NO'}", f"{one_busy_s:.0f} s",
                    f"{one_s:.0f} s", f"{slower:.2f}x", "<= 2.2x, same trials",
                    slower <= 2.2 and same),
            ]}
