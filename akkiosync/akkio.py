"""The HTTP client for Akkio's ``/v1/datasets``: the only module that knows its URLs and payloads.

One URL serves every action; the fields sent pick it. GET carries ``api_key`` in the query
string (that is how Akkio reads it); POST and DELETE carry every field in a JSON body, so the
key stays out of URLs whenever it can. Every failure is mapped to ``errors`` in ``_error_for``
and ``_transport_error``, which also decide ``maybe_landed``.

Every try first waits for the rate limiter, if any. A retriable failure is tried again (after
the ``RetryPolicy``'s backoff, honouring ``Retry-After``) only when it provably changed nothing:
any failure of a GET, and a 429 or connect error of a POST or DELETE. A failure that may have
landed is raised at once: only the caller can reconcile it, from the dataset's row count.
"""

from __future__ import annotations

import contextlib
import email.utils
import importlib.metadata
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import httpx
import orjson

from akkiosync.errors import (
    AkkioAuthError,
    AkkioError,
    AkkioFatalError,
    AkkioRetriableError,
    AkkioTransportError,
    DatasetNotFoundError,
    PayloadTooLargeError,
)
from akkiosync.pacing import RateLimiter, RetryPolicy
from akkiosync.redact import redact, register_secret

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.akkio.com/v1"
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

_AUTH_MESSAGE = re.compile(r"api[ _-]?key", re.IGNORECASE)
_NOT_FOUND_MESSAGE = re.compile(r"not found|does not exist|no such|unknown dataset", re.I)
# Transport failures raised before any byte of the request could leave this process.
_QUOTED = 500  # characters of a server's message quoted in an error
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_BODY_OVERHEAD = 200  # bytes of an add-rows body besides its rows: the key, the id, the braces


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """A batch of rows as the JSON array an add-rows request carries: encoded once, where the
    batch is prepared (off the sending thread), and spliced into the request's body."""

    count: int
    data: bytes

    @property
    def size(self) -> int:
        """The add-rows request body's size in bytes, near enough (its other fields are short)."""
        return len(self.data) + _BODY_OVERHEAD


def encode_rows(rows: Sequence[Mapping[str, object]]) -> EncodedRows:
    """Encode ``rows`` (JSON-safe records: their values are what ``mapping`` makes them) as an
    add-rows request sends them."""
    records = rows if isinstance(rows, list) else list(rows)
    try:  # the mapper's records are dicts already: no pass over them in Python
        return EncodedRows(len(records), orjson.dumps(records))
    except orjson.JSONEncodeError:  # other mappings, or an integer past 64 bits
        return EncodedRows(len(records), _dumps([dict(r) for r in records]))


def _dumps(value: object) -> bytes:
    """Compact JSON, UTF-8, no NaN: orjson, or the standard library for what orjson refuses (an
    integer past 64 bits, which JSON itself allows)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # also for what is no JSON at all: json raises, clearly
        return json.dumps(
            value, separators=(",", ":"), allow_nan=False, ensure_ascii=False
        ).encode()


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """A dataset as listed or created: its id and name."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class DatasetField:
    """One field of a dataset's schema, with the type Akkio inferred for it."""

    name: str
    type: str


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One dataset in detail: its row count is what reconciliation relies on."""

    id: str
    name: str
    rows: int
    fields: tuple[DatasetField, ...]


class AkkioClient:
    """A synchronous client for ``/v1/datasets``; use it as a context manager or ``close`` it."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        register_secret(api_key)
        self._on_retry = on_retry
        self._api_key = api_key
        self._retry = retry if retry is not None else RetryPolicy()
        self._limiter = limiter
        self._sleep = sleep
        self._rand = rand
        self._url = f"{base_url.rstrip('/')}/datasets"
        self._path = httpx.URL(self._url).path
        self._client = httpx.Client(
            transport=transport, timeout=timeout, headers={"User-Agent": _user_agent()}
        )

    def list_datasets(self) -> list[DatasetRef]:
        """Return every dataset the key can see."""
        body = self._call("GET", "list datasets", {})
        datasets = body.get("datasets")
        if not isinstance(datasets, list):
            raise _shape_error("GET /datasets (list datasets)", "answer has no 'datasets' list")
        return [_dataset_ref(item, "GET /datasets (list datasets)") for item in datasets]

    def get_dataset(self, dataset_id: str) -> DatasetInfo:
        """Return the dataset's name, row count and fields; ``DatasetNotFoundError`` if gone."""
        where = f"GET /datasets (get {dataset_id})"
        body = self._call("GET", f"get {dataset_id}", {"id": dataset_id}, dataset_call=True)
        fields = _fields(body.get("fields"), where)
        return DatasetInfo(
            id=dataset_id,
            name=str(body.get("name") or ""),
            rows=_row_count(body.get("rows"), has_fields=bool(fields), where=where),
            fields=fields,
        )

    def create_dataset(self, name: str) -> DatasetRef:
        """Create an empty dataset; its schema is set by the first rows added."""
        body = self._call("POST", f"create {name!r}", {"name": name})
        dataset_id = body.get("dataset_id") or body.get("id")
        if not isinstance(dataset_id, str) or not dataset_id:
            raise _shape_error(f"POST /datasets (create {name!r})", "answer has no dataset id")
        dataset_name = body.get("dataset_name")
        return DatasetRef(dataset_id, dataset_name if isinstance(dataset_name, str) else name)

    def add_rows(self, dataset_id: str, rows: Sequence[Mapping[str, object]] | EncodedRows) -> None:
        """Append ``rows`` (records, or records already encoded) in one request; nothing is
        sent for no rows.

        An error with ``maybe_landed`` means the rows may or may not have landed: reconcile.
        ``PayloadTooLargeError``: nothing landed; send them in smaller batches.
        """
        encoded = rows if isinstance(rows, EncodedRows) else encode_rows(rows)
        if not encoded.count:
            return
        action = f"add {encoded.count} rows to {dataset_id}"
        self._call("POST", action, {"id": dataset_id, "rows": encoded}, dataset_call=True)

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete the dataset and its rows."""
        self._call("DELETE", f"delete {dataset_id}", {"id": dataset_id}, dataset_call=True)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self, method: str, action: str, fields: dict[str, object], *, dataset_call: bool = False
    ) -> dict[str, Any]:
        """Try a request until it succeeds, fails for good, or may have landed; see the module."""
        attempts = self._retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._send(method, action, fields, dataset_call=dataset_call)
            except AkkioRetriableError as exc:
                if exc.maybe_landed or attempt == attempts:
                    raise
                wait = self._retry.delay(attempt, exc.retry_after, self._rand)
                logger.warning(
                    "%s (attempt %d of %d); retrying in %.2fs",
                    redact(str(exc)), attempt, attempts, wait,
                )  # fmt: skip
                if self._on_retry is not None:
                    self._on_retry()
                self._sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(
        self, method: str, action: str, fields: dict[str, object], *, dataset_call: bool
    ) -> dict[str, Any]:
        """Send one request and return its successful JSON body, or raise the mapped error."""
        where = f"{method} /datasets ({action})"
        changes = method != "GET"
        fields = {"api_key": self._api_key, **fields}
        if self._limiter is not None:
            self._limiter.acquire()
        start = time.perf_counter()
        try:
            if method == "GET":
                params = {key: str(value) for key, value in fields.items()}
                response = self._client.get(self._url, params=params)
            else:
                content = _body(fields)
                headers = {"Content-Type": "application/json"}
                response = self._client.request(method, self._url, content=content, headers=headers)
        except (httpx.TransportError, httpx.DecodingError) as exc:
            elapsed = time.perf_counter() - start
            lost = _transport_error(exc, where, changes=changes)
            logger.debug("%s %s failed after %.3fs: %s", method, self._path, elapsed, lost)
            # ``from None``: the httpx error holds the request, whose URL may carry the key.
            raise lost from None
        elapsed = time.perf_counter() - start
        logger.debug("%s %s -> %d in %.3fs", method, self._path, response.status_code, elapsed)
        error, body = _error_for(response, where, dataset_call=dataset_call, changes=changes)
        if error is not None:
            raise error
        return body


def _body(fields: Mapping[str, object]) -> bytes:
    """A POST or DELETE body: ``fields`` as JSON, with encoded rows spliced in unchanged."""
    encoded = [(key, value) for key, value in fields.items() if isinstance(value, EncodedRows)]
    body = _dumps({k: v for k, v in fields.items() if not isinstance(v, EncodedRows)})
    for key, value in encoded:  # the body is an object of at least the key: it ends with "}"
        body = b"".join((body[:-1], b",", _dumps(key), b":", value.data, b"}"))
    return body


def _transport_error(
    exc: httpx.TransportError | httpx.DecodingError, where: str, *, changes: bool
) -> AkkioTransportError:
    """Map a request that got no (complete) answer; it may have landed unless it never left."""
    reason = redact(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):  # say where it looked
        with contextlib.suppress(RuntimeError):  # an error raised outside a request
            url = exc.request.url
            port = url.port or (443 if url.scheme == "https" else 80)
            reason = f"cannot connect to {url.host}:{port} (AKKIO_BASE_URL): {reason}"
    landed = changes and not isinstance(exc, _NEVER_SENT)
    return AkkioTransportError(redact(f"{where}: {reason}"), maybe_landed=landed)


def _error_for(
    response: httpx.Response, where: str, *, dataset_call: bool, changes: bool
) -> tuple[AkkioError | None, dict[str, Any]]:
    """Map an answer to the error it means (or None), and its JSON object body (or {}).

    ``changes``: the request changes data (POST, DELETE), so any failed answer may have been
    applied (``maybe_landed``: a proxy can relay an error after forwarding the request) except
    those that prove it was not: 401/403 (and a key refused in the body), 429, and a 404.
    """
    status = response.status_code
    try:
        parsed = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        parsed = None
    readable = isinstance(parsed, dict)
    body: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    success = body.get("status") == "success"
    message = _server_message(body) if readable else " ".join(response.text.split())[:200]

    def fail(
        cls: type[AkkioError], reason: str, *, landed: bool = False
    ) -> tuple[AkkioError, dict[str, Any]]:
        text = redact(f"{where}: HTTP {status}: {reason}")
        return cls(text, status_code=status, maybe_landed=changes and landed), body

    if status in (401, 403) or (readable and not success and _AUTH_MESSAGE.search(message)):
        return fail(AkkioAuthError, message or "missing or invalid API key")
    if status == 429 or status >= 500:
        retry_after = _retry_after(response.headers.get("Retry-After"))
        text = redact(f"{where}: HTTP {status}: {message or response.reason_phrase}")
        landed = changes and status != 429  # a 429 refused the request before doing anything
        error = AkkioRetriableError(
            text, status_code=status, retry_after=retry_after, maybe_landed=landed
        )
        return error, body
    # Only Akkio's own JSON can say the dataset is gone: a plain "404 Not Found" page comes from
    # something in front of it (a wrong base URL), and misreading it could get a job reset.
    gone = status == 404 or (not success and _NOT_FOUND_MESSAGE.search(message) is not None)
    if dataset_call and readable and gone:
        return fail(DatasetNotFoundError, message or "dataset not found")
    if status == 413:  # refused before its body was read: nothing of it can have been stored
        return fail(PayloadTooLargeError, message or "request body too large")
    if not 200 <= status < 300:
        # A 404 says nothing here takes such requests (a wrong base URL): nothing was stored.
        return fail(AkkioFatalError, message or response.reason_phrase, landed=status != 404)
    if not readable:
        # The request may have landed: the caller must reconcile, as after a lost answer.
        return fail(
            AkkioTransportError, f"unreadable answer: {message or 'empty body'}", landed=True
        )
    if not success:
        return fail(AkkioFatalError, message or "answer has no 'success' status", landed=True)
    return None, body


def _server_message(body: Mapping[str, Any]) -> str:
    """The most telling text of an Akkio JSON body: message, error, then a non-success status."""
    for key in ("message", "error", "detail"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return _bounded(value)
    status = body.get("status")
    return _bounded(str(status)) if status not in (None, "success") else ""


def _bounded(text: str) -> str:
    """Server text as errors and logs quote it: at most ``_QUOTED`` characters, for a server
    (or a proxy in front of it) may answer with a page of any length."""
    return text if len(text) <= _QUOTED else f"{text[:_QUOTED]}... ({len(text)} characters)"


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP date); None if unusable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _shape_error(where: str, problem: str) -> AkkioFatalError:
    """A successful answer whose shape this client cannot use: retrying will not change it."""
    return AkkioFatalError(redact(f"{where}: {problem}"))


def _dataset_ref(item: object, where: str) -> DatasetRef:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise _shape_error(where, "a listed dataset has no id")
    return DatasetRef(item["id"], str(item.get("name") or ""))


def _fields(value: object, where: str) -> tuple[DatasetField, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _shape_error(where, "'fields' is not a list")
    fields = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _shape_error(where, "a field has no name")
        fields.append(DatasetField(item["name"], str(item.get("type") or "")))
    return tuple(fields)


def _row_count(value: object, *, has_fields: bool, where: str) -> int:
    """The ``rows`` count, as an int or a numeric string; absent only makes sense when empty."""
    if value is None and not has_fields:
        return 0  # no schema yet means no rows yet
    if isinstance(value, str) and value.strip().isdecimal():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    # Reconciliation decides from this number: a guess could resend or drop a batch.
    raise _shape_error(where, f"unusable 'rows' count {value!r}")


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("akkiosync")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"akkiosync/{version}"
