"""The exception tree of akkiosync.

Every error says what the caller should do with it: ``retriable`` errors may succeed if the
same thing is tried again later; the others will not. ``exit_code`` is what the CLI exits with.

    AkkioSyncError                 exit 1
    ├── ConfigError                exit 2: bad YAML, env, usage; fix the configuration
    │   └── JobNotFoundError       exit 2: a job name that no file defines
    ├── SourceError                the SQL source failed
    │   └── SourceUnavailableError retriable: connection refused or dropped
    ├── SchemaError                the source no longer matches the dataset's pinned schema
    ├── StateError                 the checkpoint store is unusable
    └── AkkioError                 Akkio's API failed
        ├── AkkioRetriableError    retriable: 429, 5xx
        │   └── AkkioTransportError   retriable: no (complete) answer; the request may have landed
        └── AkkioFatalError        a request Akkio refuses: other 4xx, a non-"success" body
            ├── AkkioAuthError     the API key is missing or invalid
            └── DatasetNotFoundError  the pinned dataset no longer exists

Messages never contain secrets: build them from redacted parts (see ``redact``).
"""

from __future__ import annotations


class AkkioSyncError(Exception):
    """Base of every error akkiosync raises on purpose."""

    retriable: bool = False
    exit_code: int = 1


class ConfigError(AkkioSyncError):
    """The configuration (env, job files, CLI usage) is wrong; nothing was attempted."""

    exit_code = 2


class JobNotFoundError(ConfigError):
    """A job was asked for by name but no job file defines it."""


class SourceError(AkkioSyncError):
    """The SQL source could not be read."""


class SourceUnavailableError(SourceError):
    """The source database could not be reached, or the connection dropped."""

    retriable = True


class SchemaError(AkkioSyncError):
    """The source's columns no longer match the schema pinned for the dataset."""


class StateError(AkkioSyncError):
    """The checkpoint store is unusable (corrupt, newer schema version, locked)."""


class AkkioError(AkkioSyncError):
    """Akkio's API did not do what was asked."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AkkioRetriableError(AkkioError):
    """A temporary refusal (429, 5xx): the same request may succeed later."""

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class AkkioTransportError(AkkioRetriableError):
    """No complete answer arrived (timeout, reset): the request may or may not have landed."""


class AkkioFatalError(AkkioError):
    """Akkio refused the request itself; sending it again will not help."""


class AkkioAuthError(AkkioFatalError):
    """The API key is missing or invalid."""


class DatasetNotFoundError(AkkioFatalError):
    """The dataset this job writes to no longer exists on Akkio."""
