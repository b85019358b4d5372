"""What the libraries print: one format, and only what a user can act on.

DVC, MLflow and Great Expectations each install their own console handlers or levels, so a
flow run used to print three timestamp formats, DVC's lock-file lines twice (its handler and
Prefect's) and INFO chatter no user can act on. :func:`quiet_libraries` routes their records
through the root logger (Prefect's console handler in a flow, the CLI's format in a command) at
WARNING, and drops the few warnings that are by design here. A real problem (any other warning
or error) still shows.

Called when a command or flow starts, never at import.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

#: Loggers whose INFO lines (lock files written, tables created, temporary folders) are the
#: libraries' bookkeeping: only their warnings and errors reach the console.
LIBRARY_LOGGERS = ("dvc", "dvc_objects", "dvc_data", "mlflow", "alembic", "sqlalchemy.engine",
                   "great_expectations")

#: (logger, message prefix) of warnings that describe a choice this project made on purpose.
EXPECTED_WARNINGS = (
    # Models are saved with cloudpickle because they hold our own transformers and a torch
    # module, which skops cannot load without trusting each type; the registry is ours.
    ("mlflow.sklearn", "Saving scikit-learn models in the pickle or cloudpickle format"),
)


class _DropExpected(logging.Filter):
    """Drop the records of :data:`EXPECTED_WARNINGS` (matched by logger and message start)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(record.name == name and str(record.msg).startswith(prefix)
                       for name, prefix in EXPECTED_WARNINGS)


class _WarningsOnly(logging.Filter):
    """For loggers a library sets to INFO itself (so setting a level would not last)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _add_once(logger: logging.Logger, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def quiet_libraries(*, dvc: bool = False) -> None:
    """Send the libraries' records through the root logger at WARNING (``dvc``: also take
    over DVC's console handlers, which ``import dvc`` installs; only flows use DVC in-process).

    MLflow configures its loggers when it is imported; ``MLFLOW_CONFIGURE_LOGGING=false``
    (unless the caller set it) stops that in this process and the processes it starts, and
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` its download bars.
    """
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    # MLflow draws a progress bar for each artifact it downloads, even a small file read
    # back from the local store (two per training run, when log_model checks the logged
    # model against its input example): in a pipeline's log, lines of noise, not progress.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if "mlflow" in sys.modules:  # imported before this call: undo its own handler
        mlflow_logger = logging.getLogger("mlflow")
        mlflow_logger.handlers = []
        mlflow_logger.propagate = True
    for name, _ in EXPECTED_WARNINGS:
        _add_once(logging.getLogger(name), _DropExpected)
    # Great Expectations sets this one to INFO when imported ("Created temporary directory
    # ... for ephemeral docs site", twice per validation).
    _add_once(logging.getLogger("great_expectations.data_context.types.base"), _WarningsOnly)
    if dvc:
        importlib.import_module("dvc.logger")  # installs DVC's handlers; then replace them

        for name in ("dvc", "dvc_objects", "dvc_data"):
            logger = logging.getLogger(name)
            logger.handlers = []
            logger.setLevel(logging.WARNING)
            logger.propagate = True
