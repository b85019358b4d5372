"""Who holds a piece of work (a tuning trial, an MLflow run, a temporary file), and whether
that process still lives.

kill -9 (or a power cut) gives a process no chance to close what it opened: its trial and its
MLflow runs stay RUNNING, its temporary files stay on disk. Whoever starts next can clean that
up only if it can prove the holder is gone, so the holder is recorded when the work starts:
host, pid and the process's start time (a pid the system has since given to another process has
another start time). A holder on another host is never judged from here.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def identity() -> dict[str, Any]:
    """This process: host, pid and start time."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": start_time(os.getpid())}


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None if it is gone."""
    try:
        import psutil

        return round(psutil.Process(pid).create_time(), 2)
    except Exception:  # gone, or no psutil
        return None


def alive(holder: dict[str, Any]) -> bool:
    """Whether the process ``holder`` names (on this host) still runs: its pid exists and,
    when its start time was recorded, still has that start time."""
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return True  # nothing to judge by: assume it lives
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    since = holder.get("since")
    return since is None or start_time(pid) == since


def dead_here(holder: dict[str, Any] | None) -> bool:
    """Whether ``holder`` provably died: it ran on this host and its process is gone. An
    unknown holder, or one on another host, is not judged (False)."""
    return (holder is not None and holder.get("host") == socket.gethostname()
            and not alive(holder))
