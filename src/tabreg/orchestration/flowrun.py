"""Running a Prefect flow from the command line (``make run``, ``make retrain``).

Two things the flows' ``main`` needs and Prefect does not do by itself:

* **A temporary server that starts safely.** With no ``PREFECT_API_URL``, every flow run
  starts a temporary Prefect server, which creates (or migrates) the database in
  ``PREFECT_HOME`` as it starts. Two runs starting together on a fresh home migrate it at once:
  one server dies with "duplicate column" tracebacks, or the database is left half made. So the
  first start on a home, and the first after a Prefect upgrade, happens under an OS lock in the
  home; later starts only read a marker under it and go on in parallel.
* **One message for a fault.** Prefect logs a failing task's exception with its traceback
  twice (the task, then the flow) and each "Finished in state Failed" line repeats it. For a
  fault of input or environment (``tabreg.errors.fault``) those records are kept off the
  console, where the command prints the message once; Prefect's API handler still gets them,
  so the UI records the failure and its traceback. A bug keeps its tracebacks; ``-v`` shows
  everything.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tabreg.errors import ServiceError, fault, report

T = TypeVar("T")

#: In ``PREFECT_HOME``: the lock around a first start, and the marker saying which Prefect
#: version and database a start has already prepared.
LOCK_NAME, MARKER_NAME = ".tabreg-database.lock", ".tabreg-database"


def _database_file(url: str) -> Path | None:
    """The SQLite file behind a database URL (None for another database)."""
    head, _, path = url.partition(":///")
    return Path(path) if head.startswith("sqlite") and path else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _start_server(home: Path) -> None:
    """Start this process's temporary server (Prefect keeps one per process; the flow run
    then uses it), allowing the time a first start takes on a busy machine."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    from tabreg.services.prefect_server import STARTUP_TIMEOUT

    timeout = max(get_current_settings().server.ephemeral.startup_timeout_seconds,
                  STARTUP_TIMEOUT)
    try:
        SubprocessASGIServer().start(timeout=int(timeout))
    except Exception as exc:  # noqa: BLE001 - Prefect raises RuntimeError, httpx errors...
        raise ServiceError(
            f"Prefect's temporary server did not start within {timeout:.0f} s "
            f"({str(exc).splitlines()[0][:300]}); its database is in {home} (PREFECT_HOME). "
            "Raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a busy machine, or "
            "start a server (`make prefect-server`) and set PREFECT_API_URL") from None


def start_local_server() -> None:
    """Start Prefect's temporary server for this process now, under the home's lock when
    its database may not be ready yet; nothing to do when ``PREFECT_API_URL`` names a
    server."""
    import prefect
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    home = Path(settings.home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    secret = settings.server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    made = hashlib.sha256(f"{prefect.__version__} {url}".encode()).hexdigest()[:16]
    marker, database = home / MARKER_NAME, _database_file(url)
    with _locked(home / LOCK_NAME):
        ready = marker.exists() and marker.read_text().strip() == made
        if not (ready and (database is None or database.exists())):
            _start_server(home)  # creates or migrates the database, alone
            marker.write_text(made + "\n")
            return
    _start_server(home)  # the database is ready: start beside any other run


class _FaultOnce(logging.Filter):
    """Console only: drop the records that report a fault (its exception, then the "Finished
    in state Failed" lines that repeat it); the command prints it once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and fault(exc) is not None:
            self.seen = True
            return False
        return not (self.seen and record.name.startswith(("prefect.flow_runs",
                                                          "prefect.task_runs"))
                    and str(record.msg).startswith("Finished in state Failed"))


@contextmanager
def _faults_once(enabled: bool) -> Iterator[None]:
    from prefect.logging.handlers import PrefectConsoleHandler

    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, PrefectConsoleHandler)] if enabled else []
    quiet = _FaultOnce()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def run(flow: Callable[..., T], *, verbose: bool = False, **parameters: Any
        ) -> tuple[T | None, int]:
    """Run ``flow(**parameters)``: (its result, 0), or (None, exit code) once a fault was
    printed as one message. A bug is raised, with its traceback."""
    try:
        start_local_server()
        with _faults_once(enabled=not verbose):
            return flow(**parameters), 0
    except BaseException as exc:  # a fault is shown once, as a message; a bug is raised
        code = report(exc, verbose=verbose)
        if code is None:
            raise
        return None, code
