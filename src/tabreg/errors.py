"""Errors a user can act on.

Every failure that comes from input (configuration, data, archives, sources) is raised as a
subclass of :class:`TabregError` with a message that names what is wrong and where. The CLI
prints that message once, without a traceback, and exits non-zero.
"""


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
