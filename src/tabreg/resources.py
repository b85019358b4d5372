"""Thread budgets: how many threads a fit may use, so that a busy neighbour costs a fair share.

Why explicit budgets: scikit-learn's histogram gradient boosting (and BLAS, and torch's
intra-op pool) run OpenMP threads that spin while they wait for each other. When one of them
shares a core with another busy process, each parallel region waits for the slowest thread and
a fit collapses: measured on 2 cores, 1.3 s idle, 3.1 s beside one busy process and more than
150 s beside two, with 2 threads; with 1 thread 1.1 s and 1.8 s. On tables of this size one
thread per fit loses nothing idle, so parallelism belongs at the level of trials (several
worker processes, one thread each) rather than inside a fit. ``OMP_WAIT_POLICY=PASSIVE``
would cure the collapse too, but costs 12x idle and must be set before the runtime starts.

Two kinds of pools get different budgets:

* spinning pools (OpenMP, BLAS, torch): :func:`spinning_threads`, one thread by default;
* joblib pools (the random forest's ``n_jobs``), whose idle threads sleep: the fit's share of
  the cores, :func:`fit_threads`, since they degrade gracefully beside a busy process.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tabreg.errors import ConfigError


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` set),
    not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, *, oversubscribe: bool = False,
                    cores: int | None = None) -> int:
    """``tune.workers`` as a number: null means one worker per usable core. More workers
    than cores only with ``tune.oversubscribe`` (each would then fight for a core)."""
    cores = usable_cores() if cores is None else cores
    if workers is None:
        return cores
    if workers < 1:
        raise ConfigError(f"tune.workers: {workers} worker processes cannot run a study; give "
                          "1 or more, or null for one per usable core")
    if workers > cores and not oversubscribe:
        raise ConfigError(f"tune.workers: {workers} workers on {cores} usable cores would "
                          "fight for cores; lower it, or set tune.oversubscribe: true")
    return workers


def fit_threads(workers: int, cores: int | None = None) -> int:
    """One fit's share of the cores when ``workers`` fits run at once (at least 1)."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, workers))


def spinning_threads(threads: int) -> int:
    """Threads for the spinning pools (OpenMP, BLAS, torch) of a fit allowed ``threads``.

    One, unless ``TABREG_SPINNING_THREADS`` says more: a bigger machine with a big table and
    nothing else running may gain from it, but beside a busy process these pools collapse
    (see the module's docstring), and at this data size they gain nothing.
    """
    wanted = os.environ.get("TABREG_SPINNING_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return min(int(wanted), threads)
    return 1


@contextmanager
def thread_budget(threads: int, *, with_torch: bool = False) -> Iterator[int]:
    """Run the block with its spinning pools limited (OpenMP and BLAS through threadpoolctl,
    torch's intra-op threads when ``with_torch`` or when it is already loaded); yields the joblib
    share, ``threads``, for ``n_jobs``. OpenMP's limit is per calling thread, and applies to
    the runtimes loaded when the block starts: enter it in the thread that fits, after the
    imports."""
    from threadpoolctl import threadpool_limits

    spinning = spinning_threads(threads)
    # Loaded first when wanted, so that its own OpenMP runtime is there before the limits.
    torch: Any = importlib.import_module("torch") if with_torch else sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=spinning):
        if torch is not None:
            torch.set_num_threads(spinning)
        try:
            yield threads
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)
