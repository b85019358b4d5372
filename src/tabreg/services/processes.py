"""Long-running child processes: start detached with a log, find again by pid, stop.

The stack outlives the command that starts it, so each service runs in its own session
(process group) with its output in a log file; what ``stop`` needs to find it again (pid and
start time, so a recycled pid is never taken for ours) is recorded in the stack's state file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tabreg.errors import ServiceError


@dataclass(frozen=True)
class Process:
    """A started service: enough to tell later whether it still runs, and to stop it."""

    name: str
    pid: int
    started: float  # psutil's create_time, to tell our process from a recycled pid
    log: str
    port: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            return (abs(proc.create_time() - self.started) < 1.0
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False


def spawn(name: str, cmd: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path,
          port: int | None = None, user: str | None = None) -> Process:
    """Start ``cmd`` detached (its own session), output appended to ``log``."""
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=dict(env), cwd=cwd,
                                 start_new_session=True, user=user)
    return Process(name, popen.pid, psutil.Process(popen.pid).create_time(), str(log), port)


def terminate(processes: Sequence[Process], timeout: float = 15.0) -> list[Process]:
    """Stop services and their children together: SIGTERM to each one's process group,
    SIGKILL to what remains after ``timeout``. Returns those that were running."""
    import psutil

    running, procs = [], []
    for process in processes:
        if not process.alive():
            continue
        try:
            leader = psutil.Process(process.pid)
            procs += [leader, *leader.children(recursive=True)]
        except psutil.Error:
            continue
        running.append(process)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in running:
            with contextlib.suppress(OSError):
                os.killpg(process.pid, sig)
        for proc in procs:  # a child that left its group is stopped too
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=timeout)
        if not procs:
            break
    return running


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (or the port cannot be bound there)."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else host
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((probe, port)) == 0:
            return True
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def who_listens(port: int) -> str:
    """A short description of the process listening on ``port``, when it can be found."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                    and conn.pid:
                proc = psutil.Process(conn.pid)
                return f"pid {conn.pid}: {' '.join(proc.cmdline())[:120]}"
    except (psutil.Error, OSError):
        pass
    return "another process"


def log_tail(path: str | Path, lines: int = 15) -> str:
    """The last ``lines`` of a log, indented, for an error message."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def wait_http(process: Process, url: str, timeout: float) -> None:
    """Wait until ``url`` answers 2xx; fail with the log's tail if the process dies or the
    time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if not process.alive():
            raise ServiceError(f"{process.name} exited while starting; its log "
                               f"({process.log}) ends with:\n{log_tail(process.log)}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{process.name} did not answer {url} within {timeout:.0f} s; "
                               f"its log ({process.log}) ends with:\n{log_tail(process.log)}")
        time.sleep(0.5)
