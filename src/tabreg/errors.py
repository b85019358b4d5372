"""Errors a user can act on.

Every failure that comes from input (configuration, data, archives, sources) is raised as a
subclass of :class:`TabregError` with a message that names what is wrong and where. The CLI
and the flows print that message once, without a traceback, and exit non-zero
(:func:`report`); so do they for what the environment does to a run (a full disk, a file that
cannot be read, Ctrl-C). A traceback is for bugs, and for ``-v``.
"""

from __future__ import annotations

import sys
import traceback


class TabregError(Exception):
    """Base class of the errors the CLI reports without a traceback."""

    exit_code = 1


class ConfigError(TabregError):
    """``params.yaml`` (or an environment override) is invalid."""

    exit_code = 2


class SourceError(TabregError):
    """The data source cannot be fetched, or its checksum does not match."""


class ArchiveError(TabregError):
    """The archive is corrupt, unsafe, or lacks the expected member."""


class SchemaError(TabregError):
    """A table does not have the expected structure (columns, types, rows)."""


class ValidationFailed(TabregError):
    """The data breaks its Great Expectations contract."""


class ServiceError(TabregError):
    """A service of the local stack (``make services``) cannot be started, reached or stopped."""


class StoreError(TabregError):
    """The MLflow store is damaged, or has lost what the decision ledger records."""


def fault(exc: BaseException) -> tuple[str, int] | None:
    """The message and exit code of a failure caused by input or the environment; None for
    anything else, which is a bug and deserves its traceback."""
    if isinstance(exc, TabregError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, MemoryError):
        return "out of memory: use a smaller budget or a machine with more memory", 1
    if isinstance(exc, OSError):  # a full disk, a permission, a file that went away
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", 1
    return None


def report(exc: BaseException, *, verbose: bool = False) -> int | None:
    """Print a fault once on stderr (``error: ...``; its traceback too when ``verbose``) and
    return its exit code; None, printing nothing, for a bug (the caller re-raises it)."""
    found = fault(exc)
    if found is None:
        return None
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"error: {found[0]}", file=sys.stderr)
    return found[1]
