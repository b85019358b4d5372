"""Where tuning workers run: local processes, flow runs of a Prefect deployment, or the tune
step's own process.

Either way a worker is ``tabreg.tuning.worker.work`` on a shared study, so they differ only
in who runs it: processes the tune step starts (``local``), Prefect workers on any host that
serve the ``tune-worker`` deployment's work pool (``prefect``; adding a host adds
throughput), or the tune step itself, one trial at a time (``inline``). ``auto`` uses Prefect
when ``PREFECT_API_URL`` names a server that has the deployment (``make services`` creates
it), else local processes.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from tabreg.errors import ConfigError

log = logging.getLogger(__name__)

#: The deployment that runs ``flows/tune_worker.py`` (flow name / deployment name).
DEPLOYMENT = "tune-worker/tune-worker"


class Workers(Protocol):
    def running(self) -> int: ...
    def failures(self) -> list[str]: ...
    def stop(self) -> None: ...


def _die_with_parent() -> None:
    """In a local worker, before it runs: SIGTERM when the tune step's process dies, even by
    kill -9, so no orphan goes on tuning a study nobody watches (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalWorkers:
    """``n`` worker processes on this machine, their output in ``log_dir``."""

    def __init__(self, root: Path, storage_url: str, study: str, n: int, threads: int,
                 log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.logs = [log_dir / f"worker-{i}.log" for i in range(n)]
        command = [sys.executable, "-m", "tabreg", "--root", str(root), "-q", "tune-worker",
                   "--study", study, "--storage", storage_url, "--threads", str(threads)]
        self.procs = []
        for path in self.logs:
            with path.open("wb") as out:
                self.procs.append(subprocess.Popen(command, stdout=out, stderr=out,
                                                   stdin=subprocess.DEVNULL,
                                                   preexec_fn=_die_with_parent))

    def running(self) -> int:
        return sum(p.poll() is None for p in self.procs)

    def failures(self) -> list[str]:
        """For each worker that exited non-zero: its exit status and last lines."""
        out = []
        for proc, path in zip(self.procs, self.logs, strict=True):
            if proc.poll() not in (None, 0):
                tail = path.read_text(errors="replace").strip().splitlines()[-3:]
                out.append(f"worker pid {proc.pid} exited {proc.returncode}: "
                           + " | ".join(tail))
        return out

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class InlineWorker:
    """The trials run here, in the tune step's own process, one after the other, before the
    constructor returns; ``after_trial`` is called after each (the step's progress lines).

    For budgets so small that a worker process's start-up (about 3 s of imports each) is most
    of the work, and for a debugger's breakpoints in a trial. A failing worker is reported as
    a local one is, through :meth:`failures`.
    """

    def __init__(self, root: Path, storage_url: str, study: str, threads: int,
                 after_trial: Callable[[], object] | None = None) -> None:
        from tabreg.tuning.worker import work

        self.error: str | None = None
        try:
            work(root, storage_url, study, threads=threads, after_trial=after_trial)
        except Exception as exc:  # told to the step as a local worker's exit would be
            self.error = f"{type(exc).__name__}: {exc}"

    def running(self) -> int:
        return 0

    def failures(self) -> list[str]:
        return [f"the inline worker stopped: {self.error}"] if self.error else []

    def stop(self) -> None:
        pass


class PrefectWorkers:
    """``n`` flow runs of the tune-worker deployment, picked up by any Prefect worker."""

    def __init__(self, study: str, n: int) -> None:
        from prefect.deployments import run_deployment

        # Called outside an event loop, run_deployment runs synchronously: flow runs, not
        # coroutines.
        self.runs: list[Any] = [run_deployment(DEPLOYMENT, parameters={"study": study},
                                               timeout=0) for _ in range(n)]
        log.info("tune: submitted %d flow runs of the %s deployment: %s", n, DEPLOYMENT,
                 ", ".join(r.name for r in self.runs))

    def _states(self) -> list[Any]:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            return [client.read_flow_run(r.id).state for r in self.runs]

    def running(self) -> int:
        return sum(1 for s in self._states() if s is None or not s.is_final())

    def failures(self) -> list[str]:
        return [f"flow run {r.name}: {s.name} {s.message or ''}".strip()
                for r, s in zip(self.runs, self._states(), strict=True)
                if s is not None and s.is_final() and not s.is_completed()]

    def stop(self) -> None:
        from prefect import get_client
        from prefect.states import Cancelling

        with get_client(sync_client=True) as client:
            for run in self.runs:
                state = client.read_flow_run(run.id).state
                if state is not None and not state.is_final():
                    client.set_flow_run_state(run.id, Cancelling(), force=True)


def prefect_deployment_available() -> bool:
    """Whether a Prefect server is configured and has the tune-worker deployment."""
    if not os.environ.get("PREFECT_API_URL"):
        return False
    from prefect import get_client

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(DEPLOYMENT)
        return True
    except Exception:  # no such deployment, or the server does not answer
        return False


def worker_count(workers: int | None, where: str, *, oversubscribe: bool = False) -> int:
    """How many workers run the study ``where`` (``local``, ``prefect`` or ``inline``): one
    inline; else ``tune.workers``, held to the usable cores only for local processes (a
    Prefect deployment's may run on other hosts)."""
    from tabreg.resources import resolve_workers

    if where == "inline":
        return 1
    return resolve_workers(workers, oversubscribe=oversubscribe or where == "prefect")


def choose(launcher: str) -> str:
    """``local``, ``inline`` or ``prefect`` for the configured ``tune.launcher``."""
    if launcher in ("local", "inline"):
        return launcher
    available = prefect_deployment_available()
    if launcher == "prefect" and not available:
        raise ConfigError(f"tune.launcher is 'prefect' but no Prefect server with the "
                          f"{DEPLOYMENT} deployment is configured (PREFECT_API_URL="
                          f"{os.environ.get('PREFECT_API_URL') or 'unset'}); run make "
                          "services, or set tune.launcher: local")
    return "prefect" if available else "local"
