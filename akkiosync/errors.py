"""The exception tree of akkiosync.

Every error says what the caller should do with it: ``retriable`` errors may succeed if the
same thing is tried again later; the others will not. ``exit_code`` is what the CLI exits with.

    AkkioSyncError                 exit 1
    ├── ConfigError                exit 2: bad YAML, env, usage; fix the configuration
    │   └── JobNotFoundError       exit 2: a job name that no file defines
    ├── SourceError                the SQL source failed
    │   └── SourceUnavailableError retriable: connection refused or dropped
    ├── SchemaError                the source no longer matches the dataset's pinned schema
    ├── BadValueError              a source value does not fit its dataset field
    ├── StateError                 the checkpoint store is unusable
    ├── JobBusyError               another process holds the job's lock: nothing was changed
    ├── DatasetExistsError         the target dataset is already in use (a namesake the store
    │                              has no record of, rows already there, another job's):
    │                              adopt it, append to it or create one, deliberately
    ├── DeliveryMismatchError      the dataset's row count fits neither "landed" nor "not
    │                              landed": an operator must decide (see delivery)
    └── AkkioError                 Akkio's API failed; maybe_landed: it may have been applied
        ├── AkkioRetriableError    retriable: 429, 5xx (maybe_landed for a POST/DELETE's 5xx)
        │   └── AkkioTransportError   retriable: no (complete) answer; maybe_landed unless it
        │                             provably never left (connect errors, pool timeout)
        └── AkkioFatalError        a request Akkio refuses: other 4xx, a non-"success" body
            ├── AkkioAuthError     the API key is missing or invalid
            ├── DatasetNotFoundError  the pinned dataset no longer exists
            └── PayloadTooLargeError  413: the body is over the server's limit; nothing was
                                   stored: send the rows in smaller batches

Every ``AkkioError`` also says whether the request may have been applied although it failed:
``maybe_landed`` is True for a request that changes data (POST, DELETE) whose failure does not
prove it was refused: a 5xx, a 4xx other than those below, a 2xx whose body is unreadable or says
"error" (a proxy may relay an error after forwarding the request), or a transport error once the
request could be on its way (read/write timeout, connection reset or closed while waiting). It
is False for every GET, for 401/403 and a refused key, for 429 (rate limited: not processed),
for a 404 (no such dataset, or no such URL), for a 413 (a body over the server's limit is
refused before it is processed: nothing of it is stored), and for transport errors that prove
nothing was sent (``httpx.ConnectError``, ``ConnectTimeout``, ``PoolTimeout``). A failure
with ``maybe_landed`` must not be blindly resent: reconcile by reading the dataset's settled
row count.

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


class BadValueError(AkkioSyncError):
    """A source value does not fit its dataset field (7.9 in an integer field, text in a number
    field): sending it altered would corrupt the dataset quietly, so the run stops."""


class StateError(AkkioSyncError):
    """The checkpoint store is unusable (corrupt, newer schema version, locked)."""


class JobBusyError(AkkioSyncError):
    """Another process holds the job's lock (it is running the job), so a command that would
    change the job's state did nothing; ``holder`` is that process's pid."""

    def __init__(self, job: str, holder: str, undone: str = "changed") -> None:
        super().__init__(
            f"job {job} is running in another process (pid {holder}): nothing was {undone}; "
            "wait for it to finish or use --wait SECONDS"
        )
        self.job = job
        self.holder = holder


class DatasetExistsError(AkkioSyncError):
    """A first run found its target already in use: a dataset of the job's target name although
    the checkpoint store has no record of the job (a lost or new state file), an existing
    dataset that already holds rows, or one another job of the store writes. Going on would
    resend rows beside the ones there, so the run stops until an operator chooses."""


class DeliveryMismatchError(AkkioSyncError):
    """Whether a batch (or a dataset creation) landed cannot be told: someone else writes to
    the dataset, or Akkio counts lazily. Sending again could duplicate rows, so the job stops."""


class AkkioError(AkkioSyncError):
    """Akkio's API did not do what was asked."""

    def __init__(
        self, message: str, *, status_code: int | None = None, maybe_landed: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.maybe_landed = maybe_landed


class AkkioRetriableError(AkkioError):
    """A temporary refusal (429, 5xx): the same request may succeed later."""

    retriable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        maybe_landed: bool = False,
    ) -> None:
        super().__init__(message, status_code=status_code, maybe_landed=maybe_landed)
        self.retry_after = retry_after


class AkkioTransportError(AkkioRetriableError):
    """No complete answer arrived (timeout, reset): see ``maybe_landed`` for whether it may have."""


class AkkioFatalError(AkkioError):
    """Akkio refused the request itself; sending it again will not help."""


class AkkioAuthError(AkkioFatalError):
    """The API key is missing or invalid."""


class DatasetNotFoundError(AkkioFatalError):
    """The dataset this job writes to no longer exists on Akkio."""


class PayloadTooLargeError(AkkioFatalError):
    """The request's body is over the server's size limit (413): the same request fails
    again, but the same rows in smaller batches may not."""
