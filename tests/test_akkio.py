"""Tests for the Akkio HTTP client, against ``httpx.MockTransport`` handlers (no network)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import MappingProxyType
from typing import Any

import httpx
import pytest

from akkiosync.akkio import (
    DEFAULT_BASE_URL,
    AkkioClient,
    DatasetField,
    DatasetInfo,
    DatasetRef,
    _retry_after,
    encode_rows,
)
from akkiosync.emulator import Emulator, serve
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
from akkiosync.redact import MASK, redact

API_KEY = "akk-test-3f9c1e7b5d2a4c6e"
DATASET_ID = "7pmPB4MXU390Bs0Axxnd"

LIST_BODY = {
    "status": "success",
    "datasets": [{"id": DATASET_ID, "name": "Telco-Customer-Churn.csv"}],
}
GET_BODY = {
    "status": "success",
    "name": "titanic-sheet-titanic",
    "rows": 887,
    "fields": [{"type": "category", "name": "Survived"}, {"name": "Name", "type": "string"}],
}
CREATE_BODY = {"status": "success", "dataset_id": DATASET_ID, "dataset_name": "orders"}
OK_BODY = {"status": "success"}
BAD_KEY_BODY = {"status": "missing or invalid API key"}

Handler = Callable[[httpx.Request], httpx.Response]

# Calls made on an existing dataset id, by name, for parametrized error tests.
DATASET_CALLS: dict[str, Callable[[AkkioClient, str], object]] = {
    "get": lambda client, dataset_id: client.get_dataset(dataset_id),
    "add": lambda client, dataset_id: client.add_rows(dataset_id, [{"a": 1}]),
    "delete": lambda client, dataset_id: client.delete_dataset(dataset_id),
    "list": lambda client, _: client.list_datasets(),
}


class Recorder:
    """A MockTransport handler that records every request and answers each with a new response."""

    def __init__(self, status: int, **response: Any) -> None:
        self.status = status
        self.response = response
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, **self.response)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.last.content)
        return parsed


@pytest.fixture
def slept() -> list[float]:
    """The waits the clients of ``make_client`` asked for; nothing really sleeps."""
    return []


@pytest.fixture
def make_client(slept: list[float]) -> Iterator[Callable[..., AkkioClient]]:
    """Build clients over a handler, sleeping into ``slept``; every client is closed at teardown."""
    clients: list[AkkioClient] = []

    def make(handler: Handler, base_url: str = DEFAULT_BASE_URL, **options: Any) -> AkkioClient:
        options.setdefault("sleep", slept.append)
        client = AkkioClient(API_KEY, base_url, transport=httpx.MockTransport(handler), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def answering(status: int, body: object = None, **kwargs: Any) -> Recorder:
    """A recorder answering ``status`` with ``body`` as JSON (or raw ``content=``)."""
    if body is not None:
        kwargs["json"] = body
    return Recorder(status, **kwargs)


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    """A handler failing like a dropped connection; its text embeds the URL, as httpx's can."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"connection to {request.url} lost", request=request)

    return handler


class TestRequests:
    """Each call sends its method to /datasets, with the key in the query for GET, else the body."""

    def test_list_sends_key_in_query(self, make_client: Callable[..., AkkioClient]) -> None:
        """list_datasets is a GET whose only field, api_key, is in the query string."""
        recorder = answering(200, LIST_BODY)
        make_client(recorder).list_datasets()
        request = recorder.last
        assert request.method == "GET"
        assert request.url.host == "api.akkio.com"
        assert request.url.path == "/v1/datasets"
        assert dict(request.url.params) == {"api_key": API_KEY}
        assert request.content == b""

    def test_get_sends_key_and_id_in_query(self, make_client: Callable[..., AkkioClient]) -> None:
        """get_dataset is a GET with api_key and id in the query string."""
        recorder = answering(200, GET_BODY)
        make_client(recorder).get_dataset(DATASET_ID)
        assert recorder.last.method == "GET"
        assert dict(recorder.last.url.params) == {"api_key": API_KEY, "id": DATASET_ID}

    def test_create_sends_json_body(self, make_client: Callable[..., AkkioClient]) -> None:
        """create_dataset POSTs api_key and name as JSON, and nothing in the URL."""
        recorder = answering(200, CREATE_BODY)
        make_client(recorder).create_dataset("orders")
        request = recorder.last
        assert request.method == "POST"
        assert request.url.path == "/v1/datasets"
        assert request.url.query == b""
        assert API_KEY not in str(request.url)
        assert request.headers["Content-Type"] == "application/json"
        assert recorder.body() == {"api_key": API_KEY, "name": "orders"}

    def test_add_rows_sends_compact_json_array(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """add_rows POSTs rows as a JSON array, compact and with non-ASCII kept as UTF-8."""
        recorder = answering(200, OK_BODY)
        rows = [{"name": "Zoë", "n": 1}, MappingProxyType({"name": "Ann", "n": None})]
        make_client(recorder).add_rows(DATASET_ID, rows)
        request = recorder.last
        assert request.method == "POST"
        assert request.url.query == b""
        assert recorder.body() == {
            "api_key": API_KEY,
            "id": DATASET_ID,
            "rows": [{"name": "Zoë", "n": 1}, {"name": "Ann", "n": None}],
        }
        assert b", " not in request.content
        assert "Zoë".encode() in request.content

    def test_delete_sends_json_body(self, make_client: Callable[..., AkkioClient]) -> None:
        """delete_dataset is a DELETE carrying api_key and id in a JSON body."""
        recorder = answering(200, OK_BODY)
        make_client(recorder).delete_dataset(DATASET_ID)
        assert recorder.last.method == "DELETE"
        assert recorder.last.url.query == b""
        assert recorder.body() == {"api_key": API_KEY, "id": DATASET_ID}

    @pytest.mark.parametrize("base_url", ["http://akkio.test/v1", "http://akkio.test/v1/"])
    def test_base_url_with_or_without_slash(
        self, make_client: Callable[..., AkkioClient], base_url: str
    ) -> None:
        """A trailing slash on the base URL does not change the URL called."""
        recorder = answering(200, LIST_BODY)
        make_client(recorder, base_url).list_datasets()
        assert recorder.last.url.copy_with(query=None) == httpx.URL("http://akkio.test/v1/datasets")

    def test_user_agent(self, make_client: Callable[..., AkkioClient]) -> None:
        """Requests identify themselves as akkiosync/<version>."""
        recorder = answering(200, LIST_BODY)
        make_client(recorder).list_datasets()
        product, _, version = recorder.last.headers["User-Agent"].partition("/")
        assert product == "akkiosync"
        assert version

    def test_no_rows_sends_nothing(self, make_client: Callable[..., AkkioClient]) -> None:
        """Adding an empty list of rows makes no request."""
        recorder = answering(200, OK_BODY)
        make_client(recorder).add_rows(DATASET_ID, [])
        assert recorder.requests == []

    def test_nan_is_never_sent_as_invalid_json(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """A NaN that got past the mapper (whose job refusing it is) goes out as JSON null, never
        as the token NaN that strict JSON parsers refuse."""
        recorder = answering(200, OK_BODY)
        make_client(recorder).add_rows(DATASET_ID, [{"x": float("nan")}])
        assert b"NaN" not in recorder.last.content
        assert recorder.body()["rows"] == [{"x": None}]

    def test_integers_past_64_bits_are_sent_whole(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """An integer JSON allows but orjson refuses (past 64 bits) is still sent, digit for
        digit."""
        recorder = answering(200, OK_BODY)
        make_client(recorder).add_rows(DATASET_ID, [{"n": 2**70, "s": "é"}])
        assert str(2**70).encode() in recorder.last.content
        assert recorder.body()["rows"] == [{"n": 2**70, "s": "é"}]

    def test_encoded_rows_are_spliced_into_the_body(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """Rows encoded beforehand (off the sending thread) make the same body as records."""
        rows = [{"name": "Zoë", "n": 1}, {"name": "Ann", "n": None}]
        recorder = answering(200, OK_BODY)
        client = make_client(recorder)
        client.add_rows(DATASET_ID, rows)
        from_records = recorder.last.content
        encoded = encode_rows(rows)
        client.add_rows(DATASET_ID, encoded)
        assert recorder.last.content == from_records
        assert encoded.count == 2
        assert len(from_records) <= encoded.size

    def test_no_encoded_rows_sends_nothing(self, make_client: Callable[..., AkkioClient]) -> None:
        """An empty encoded batch is no request."""
        recorder = answering(200, OK_BODY)
        make_client(recorder).add_rows(DATASET_ID, encode_rows([]))
        assert recorder.requests == []

    def test_context_manager_closes(self) -> None:
        """Leaving the with-block closes the client: it can send nothing more."""
        with AkkioClient(API_KEY, transport=httpx.MockTransport(answering(200, LIST_BODY))) as c:
            assert c.list_datasets()
        with pytest.raises(RuntimeError, match="closed"):
            c.list_datasets()


class TestParsing:
    """Answers are read as documented, and tolerantly where the format is only inferred."""

    def test_list(self, make_client: Callable[..., AkkioClient]) -> None:
        """The documented list answer becomes DatasetRefs."""
        refs = make_client(answering(200, LIST_BODY)).list_datasets()
        assert refs == [DatasetRef(DATASET_ID, "Telco-Customer-Churn.csv")]

    def test_get(self, make_client: Callable[..., AkkioClient]) -> None:
        """The documented dataset answer becomes a DatasetInfo with the requested id."""
        info = make_client(answering(200, GET_BODY)).get_dataset(DATASET_ID)
        assert info == DatasetInfo(
            id=DATASET_ID,
            name="titanic-sheet-titanic",
            rows=887,
            fields=(DatasetField("Survived", "category"), DatasetField("Name", "string")),
        )

    def test_rows_as_numeric_string(self, make_client: Callable[..., AkkioClient]) -> None:
        """A rows count sent as a numeric string is read as an int."""
        body = {**GET_BODY, "rows": "887"}
        assert make_client(answering(200, body)).get_dataset(DATASET_ID).rows == 887

    def test_missing_fields_and_rows_mean_empty(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """A dataset without fields (no schema yet) may omit both: it has no rows."""
        info = make_client(answering(200, {"status": "success", "name": "new"})).get_dataset("d")
        assert (info.rows, info.fields) == (0, ())

    def test_missing_fields_with_rows(self, make_client: Callable[..., AkkioClient]) -> None:
        """A missing fields list is an empty tuple; the rows count is still read."""
        body = {"status": "success", "name": "n", "rows": 3}
        info = make_client(answering(200, body)).get_dataset("d")
        assert (info.rows, info.fields) == (3, ())

    @pytest.mark.parametrize("rows", [None, "lots", -1, True, 1.5, [3]])
    def test_unusable_rows_count_with_fields(
        self, make_client: Callable[..., AkkioClient], rows: object
    ) -> None:
        """A dataset with a schema but no usable rows count is refused, never guessed."""
        body = {**GET_BODY, "rows": rows}
        with pytest.raises(AkkioFatalError, match="rows"):
            make_client(answering(200, body)).get_dataset(DATASET_ID)

    @pytest.mark.parametrize("fields", ["Survived", [{"type": "string"}], ["Name"]])
    def test_malformed_fields(
        self, make_client: Callable[..., AkkioClient], fields: object
    ) -> None:
        """Fields that are not a list of named objects are refused."""
        body = {**GET_BODY, "fields": fields}
        with pytest.raises(AkkioFatalError, match="field"):
            make_client(answering(200, body)).get_dataset(DATASET_ID)

    def test_create(self, make_client: Callable[..., AkkioClient]) -> None:
        """The create answer's dataset_id and dataset_name make the DatasetRef."""
        ref = make_client(answering(200, CREATE_BODY)).create_dataset("orders")
        assert ref == DatasetRef(DATASET_ID, "orders")

    def test_create_falls_back_to_id_and_requested_name(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """Without dataset_id/dataset_name, `id` and the requested name are used."""
        ref = make_client(answering(200, {"status": "success", "id": "x1"})).create_dataset("o")
        assert ref == DatasetRef("x1", "o")

    def test_create_without_id(self, make_client: Callable[..., AkkioClient]) -> None:
        """A create answer without any id is refused."""
        with pytest.raises(AkkioFatalError, match="no dataset id"):
            make_client(answering(200, OK_BODY)).create_dataset("orders")

    def test_list_without_datasets(self, make_client: Callable[..., AkkioClient]) -> None:
        """A list answer without a datasets key is refused."""
        with pytest.raises(AkkioFatalError, match="'datasets'"):
            make_client(answering(200, OK_BODY)).list_datasets()

    def test_list_item_without_id(self, make_client: Callable[..., AkkioClient]) -> None:
        """A listed dataset without an id is refused; a missing name is empty."""
        body = {"status": "success", "datasets": [{"name": "x"}]}
        with pytest.raises(AkkioFatalError, match="no id"):
            make_client(answering(200, body)).list_datasets()
        body = {"status": "success", "datasets": [{"id": "a"}]}
        assert make_client(answering(200, body)).list_datasets() == [DatasetRef("a", "")]


class TestErrorMapping:
    """Every failure becomes the error that tells the caller what to do, with its status code."""

    def test_429_retry_after_seconds(self, make_client: Callable[..., AkkioClient]) -> None:
        """429 is retriable and carries Retry-After in seconds."""
        recorder = answering(429, {"status": "slow down"}, headers={"Retry-After": "7"})
        with pytest.raises(AkkioRetriableError) as caught:
            make_client(recorder).add_rows(DATASET_ID, [{"a": 1}])
        assert type(caught.value) is AkkioRetriableError
        assert caught.value.retriable
        assert (caught.value.status_code, caught.value.retry_after) == (429, 7.0)

    def test_429_retry_after_http_date(self, make_client: Callable[..., AkkioClient]) -> None:
        """A Retry-After HTTP date becomes the seconds left until it."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
        recorder = answering(429, {"status": "slow down"}, headers={"Retry-After": when})
        with pytest.raises(AkkioRetriableError) as caught:
            make_client(recorder).list_datasets()
        assert caught.value.retry_after is not None
        assert 100 < caught.value.retry_after <= 120

    @pytest.mark.parametrize("header", [{}, {"Retry-After": "soon"}])
    def test_429_without_usable_retry_after(
        self, make_client: Callable[..., AkkioClient], header: dict[str, str]
    ) -> None:
        """An absent or garbled Retry-After gives retry_after None."""
        with pytest.raises(AkkioRetriableError) as caught:
            make_client(answering(429, {"status": "x"}, headers=header)).list_datasets()
        assert caught.value.retry_after is None

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_5xx(self, make_client: Callable[..., AkkioClient], status: int) -> None:
        """5xx is retriable, even with an HTML body, whose text is quoted briefly."""
        recorder = answering(status, content=b"<html><h1>Service Unavailable</h1></html>")
        with pytest.raises(AkkioRetriableError, match="Service Unavailable") as caught:
            make_client(recorder).get_dataset(DATASET_ID)
        assert type(caught.value) is AkkioRetriableError
        assert caught.value.status_code == status

    @pytest.mark.parametrize(
        "exc_type",
        [
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.PoolTimeout,
            httpx.ReadTimeout,
            httpx.WriteTimeout,
            httpx.ReadError,
            httpx.RemoteProtocolError,
        ],
    )
    def test_transport_errors(
        self, make_client: Callable[..., AkkioClient], exc_type: type[httpx.TransportError]
    ) -> None:
        """A request without a complete answer raises AkkioTransportError naming the cause."""
        with pytest.raises(AkkioTransportError) as caught:
            make_client(raising(exc_type)).add_rows(DATASET_ID, [{"a": 1}])
        message = str(caught.value)
        assert message.startswith(f"POST /datasets (add 1 rows to {DATASET_ID}): ")
        assert exc_type.__name__ in message
        assert caught.value.retriable
        assert caught.value.status_code is None

    @pytest.mark.parametrize(
        ("status", "body"),
        [(401, {"status": "unauthorized"}), (403, None), (404, BAD_KEY_BODY), (200, BAD_KEY_BODY)],
    )
    def test_auth(self, make_client: Callable[..., AkkioClient], status: int, body: object) -> None:
        """401/403, or the bad-key body under any status, is an AkkioAuthError."""
        with pytest.raises(AkkioAuthError) as caught:
            make_client(answering(status, body)).get_dataset(DATASET_ID)
        assert caught.value.status_code == status
        assert not caught.value.retriable

    def test_error_body_with_http_200(self, make_client: Callable[..., AkkioClient]) -> None:
        """A 200 whose status is not "success" is fatal, with the server's message."""
        body = {"status": "error", "message": "quota exceeded for this plan"}
        with pytest.raises(AkkioFatalError) as caught:
            make_client(answering(200, body)).create_dataset("orders")
        assert type(caught.value) is AkkioFatalError
        assert str(caught.value) == (
            "POST /datasets (create 'orders'): HTTP 200: quota exceeded for this plan"
        )

    def test_200_without_status(self, make_client: Callable[..., AkkioClient]) -> None:
        """A JSON 200 answer without a success status is fatal."""
        with pytest.raises(AkkioFatalError, match="'success'"):
            make_client(answering(200, {})).delete_dataset(DATASET_ID)

    def test_400_with_message(self, make_client: Callable[..., AkkioClient]) -> None:
        """Another 4xx is fatal and quotes the server's message."""
        body = {"status": "error", "message": "rows do not match the dataset's fields"}
        with pytest.raises(AkkioFatalError) as caught:
            make_client(answering(400, body)).add_rows(DATASET_ID, [{"a": 1}])
        assert type(caught.value) is AkkioFatalError
        assert caught.value.status_code == 400
        assert str(caught.value) == (
            f"POST /datasets (add 1 rows to {DATASET_ID}): "
            "HTTP 400: rows do not match the dataset's fields"
        )

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (404, {"status": "error"}),
            (400, {"status": "error", "message": "Dataset does not exist"}),
            (200, {"status": "Dataset not found"}),
        ],
    )
    @pytest.mark.parametrize("call", ["get", "add", "delete"])
    def test_unknown_dataset(
        self, make_client: Callable[..., AkkioClient], status: int, body: object, call: str
    ) -> None:
        """A call on a dataset id answered 404 or "not found" raises DatasetNotFoundError."""
        client = make_client(answering(status, body))
        with pytest.raises(DatasetNotFoundError) as caught:
            DATASET_CALLS[call](client, "gone")
        assert caught.value.status_code == status
        assert "gone" in str(caught.value)

    def test_non_json_404_is_not_a_missing_dataset(
        self, make_client: Callable[..., AkkioClient]
    ) -> None:
        """A 404 that is not Akkio's JSON (a wrong base URL) is fatal, not DatasetNotFoundError."""
        with pytest.raises(AkkioFatalError) as caught:
            make_client(answering(404, content=b"Not Found")).get_dataset(DATASET_ID)
        assert type(caught.value) is AkkioFatalError

    def test_404_on_list_or_create(self, make_client: Callable[..., AkkioClient]) -> None:
        """A 404 on a call without a dataset id is fatal, not DatasetNotFoundError."""
        client = make_client(answering(404, {"status": "error", "message": "no route"}))
        for call in (client.list_datasets, lambda: client.create_dataset("o")):
            with pytest.raises(AkkioFatalError) as caught:
                call()
            assert type(caught.value) is AkkioFatalError

    @pytest.mark.parametrize("content", [b"<html>OK</html>", b"", b"[1, 2]", b"\xff\xfe"])
    def test_unreadable_2xx(self, make_client: Callable[..., AkkioClient], content: bytes) -> None:
        """A 2xx that is not a JSON object may have landed: AkkioTransportError, reconcile."""
        with pytest.raises(AkkioTransportError, match="unreadable answer") as caught:
            make_client(answering(200, content=content)).add_rows(DATASET_ID, [{"a": 1}])
        assert caught.value.status_code == 200


class Script:
    """A MockTransport handler passing request n to the n-th scripted handler; the last repeats."""

    def __init__(self, *steps: Handler, events: list[str] | None = None) -> None:
        self.steps = steps
        self.events = events
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.events is not None:
            self.events.append("request")
        return self.steps[min(len(self.requests), len(self.steps)) - 1](request)


class RecordingLimiter(RateLimiter):
    """A limiter that never waits and notes each acquire in ``events``."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(math.inf)
        self.events = events

    def acquire(self) -> None:
        self.events.append("acquire")
        super().acquire()


def half() -> float:
    """A jitter that always draws the middle of the range."""
    return 0.5


# Failures by name, built fresh for each test (a Recorder keeps state).
FAILURES: dict[str, Callable[[], Handler]] = {
    "429": lambda: answering(429, {"status": "slow down"}, headers={"Retry-After": "2"}),
    "400": lambda: answering(400, {"status": "error", "message": "bad rows"}),
    "401": lambda: answering(401, {"status": "unauthorized"}),
    "404": lambda: answering(404, {"status": "error", "message": "Dataset not found"}),
    "200-error": lambda: answering(200, {"status": "error", "message": "quota exceeded"}),
    "408": lambda: answering(408, {"status": "error", "message": "request timeout"}),
    "413": lambda: answering(413, content=b"<html>Request Entity Too Large</html>"),
    "500": lambda: answering(500, {"status": "error", "message": "boom"}),
    "502-html": lambda: answering(502, content=b"<html>Bad Gateway</html>"),
    "503-retry-after": lambda: answering(503, content=b"busy", headers={"Retry-After": "1"}),
    "200-unreadable": lambda: answering(200, content=b"<html>OK</html>"),
    "200-bad-gzip": lambda: answering(200, content=b"xx", headers={"Content-Encoding": "gzip"}),
    "ConnectError": lambda: raising(httpx.ConnectError),
    "ConnectTimeout": lambda: raising(httpx.ConnectTimeout),
    "PoolTimeout": lambda: raising(httpx.PoolTimeout),
    "ReadTimeout": lambda: raising(httpx.ReadTimeout),
    "WriteTimeout": lambda: raising(httpx.WriteTimeout),
    "ReadError": lambda: raising(httpx.ReadError),
    "RemoteProtocolError": lambda: raising(httpx.RemoteProtocolError),
}
NOTHING_DONE = ("429", "ConnectError", "ConnectTimeout", "PoolTimeout")
MAY_HAVE_LANDED = (
    "500",
    "502-html",
    "503-retry-after",
    "200-unreadable",
    "200-bad-gzip",
    "ReadTimeout",
    "WriteTimeout",
    "ReadError",
    "RemoteProtocolError",
)
# Refusals that prove nothing was stored (a 413 refuses the body before it is processed, RFC
# 9110 15.5.14), and refusals a proxy may relay after forwarding.
REFUSED_NOTHING = ("401", "404", "413")
REFUSED_MAYBE = ("400", "408", "200-error")
REFUSED = REFUSED_NOTHING + REFUSED_MAYBE

# The calls that change data, with the answer each gets on success.
CHANGING_CALLS: dict[str, tuple[Callable[[AkkioClient], object], object]] = {
    "add": (lambda client: client.add_rows(DATASET_ID, [{"a": 1}]), OK_BODY),
    "create": (lambda client: client.create_dataset("orders"), CREATE_BODY),
    "delete": (lambda client: client.delete_dataset(DATASET_ID), OK_BODY),
}
READING_CALLS: dict[str, tuple[Callable[[AkkioClient], object], object]] = {
    "get": (lambda client: client.get_dataset(DATASET_ID), GET_BODY),
    "list": (lambda client: client.list_datasets(), LIST_BODY),
}


class TestMaybeLanded:
    """maybe_landed is True exactly when a data-changing request may have been applied."""

    def test_default(self) -> None:
        """An AkkioError has not landed unless the constructor says so."""
        assert AkkioError("x").maybe_landed is False
        assert AkkioFatalError("x", status_code=400).maybe_landed is False
        assert AkkioTransportError("x", maybe_landed=True).maybe_landed is True
        error = AkkioRetriableError("x", status_code=500, retry_after=1.0, maybe_landed=True)
        assert (error.maybe_landed, error.retry_after, error.status_code) == (True, 1.0, 500)

    @pytest.mark.parametrize("failure", MAY_HAVE_LANDED)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_changing_call_may_have_landed(
        self, make_client: Callable[..., AkkioClient], call: str, failure: str
    ) -> None:
        """A POST/DELETE that got a 5xx, an unreadable 2xx or lost its answer may have landed."""
        client = make_client(FAILURES[failure](), retry=RetryPolicy(attempts=1))
        with pytest.raises(AkkioRetriableError) as caught:
            CHANGING_CALLS[call][0](client)
        assert caught.value.maybe_landed is True

    @pytest.mark.parametrize("failure", NOTHING_DONE + REFUSED_NOTHING)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_changing_call_did_nothing(
        self, make_client: Callable[..., AkkioClient], call: str, failure: str
    ) -> None:
        """A POST/DELETE rate limited, refused for its key or dataset, or never sent has not
        landed."""
        client = make_client(FAILURES[failure](), retry=RetryPolicy(attempts=1))
        with pytest.raises(AkkioError) as caught:
            CHANGING_CALLS[call][0](client)
        assert caught.value.maybe_landed is False

    @pytest.mark.parametrize("failure", REFUSED_MAYBE)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_refusal_may_have_landed(
        self, make_client: Callable[..., AkkioClient], call: str, failure: str
    ) -> None:
        """Another 4xx or an error body on a POST/DELETE may come from a proxy after it
        forwarded the request: it is fatal, yet may have landed."""
        client = make_client(FAILURES[failure](), retry=RetryPolicy(attempts=1))
        with pytest.raises(AkkioFatalError) as caught:
            CHANGING_CALLS[call][0](client)
        assert caught.value.maybe_landed is True

    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_413_says_send_less(self, make_client: Callable[..., AkkioClient], call: str) -> None:
        """A 413 is its own error, so that a caller can split the batch; nothing landed."""
        client = make_client(FAILURES["413"](), retry=RetryPolicy(attempts=3))
        with pytest.raises(PayloadTooLargeError, match="413"):
            CHANGING_CALLS[call][0](client)

    @pytest.mark.parametrize("failure", sorted(FAILURES))
    @pytest.mark.parametrize("call", sorted(READING_CALLS))
    def test_reading_call_never_lands(
        self, make_client: Callable[..., AkkioClient], call: str, failure: str
    ) -> None:
        """A GET changes nothing, so none of its failures has landed."""
        client = make_client(FAILURES[failure](), retry=RetryPolicy(attempts=1))
        with pytest.raises(AkkioError) as caught:
            READING_CALLS[call][0](client)
        assert caught.value.maybe_landed is False


class TestReadingRetries:
    """GETs are retried through 429, 5xx and transport errors, with backoff and Retry-After."""

    def test_get_retries_until_success(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """429 (Retry-After 7), 503 and a read timeout are retried; the fourth try succeeds."""
        script = Script(
            answering(429, {"status": "slow down"}, headers={"Retry-After": "7"}),
            answering(503, content=b"Service Unavailable"),
            raising(httpx.ReadTimeout),
            answering(200, GET_BODY),
        )
        info = make_client(script, rand=half).get_dataset(DATASET_ID)
        assert info.rows == 887
        assert len(script.requests) == 4
        # Retry-After floors the first wait; then 0.5 * 2**(n-1) seconds, halved by the jitter.
        assert slept == [7.0, 0.5, 1.0]

    def test_list_retries(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """list_datasets is retried the same way."""
        script = Script(answering(502, content=b"Bad Gateway"), answering(200, LIST_BODY))
        refs = make_client(script, rand=half).list_datasets()
        assert refs == [DatasetRef(DATASET_ID, "Telco-Customer-Churn.csv")]
        assert len(script.requests) == 2
        assert slept == [0.25]

    @pytest.mark.parametrize("failure", sorted(set(FAILURES) - set(REFUSED)))
    def test_every_retriable_failure_is_retried(
        self, make_client: Callable[..., AkkioClient], slept: list[float], failure: str
    ) -> None:
        """Any retriable failure of a GET, even one that would have landed on a POST, is retried."""
        script = Script(FAILURES[failure](), answering(200, GET_BODY))
        assert make_client(script).get_dataset(DATASET_ID).rows == 887
        assert len(script.requests) == 2
        assert len(slept) == 1

    def test_gives_up_after_attempts(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """After ``attempts`` tries the last error is raised; it sleeps only between tries."""
        script = Script(answering(500, content=b"first"), answering(503, content=b"last"))
        client = make_client(script, retry=RetryPolicy(attempts=3), rand=half)
        with pytest.raises(AkkioRetriableError, match="HTTP 503: last") as caught:
            client.get_dataset(DATASET_ID)
        assert caught.value.status_code == 503
        assert len(script.requests) == 3
        assert slept == [0.25, 0.5]

    def test_default_policy_tries_eight_times(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """Without a policy the client tries a failing GET eight times, waiting at most 30s."""
        script = Script(raising(httpx.ReadTimeout))
        with pytest.raises(AkkioTransportError):
            make_client(script, rand=lambda: 1.0).list_datasets()
        assert len(script.requests) == 8
        assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]

    def test_retry_after_is_capped(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """A Retry-After beyond max_retry_after waits max_retry_after."""
        script = Script(
            answering(429, {"status": "slow down"}, headers={"Retry-After": "3600"}),
            answering(200, LIST_BODY),
        )
        make_client(script, retry=RetryPolicy(max_retry_after=60.0)).list_datasets()
        assert slept == [60.0]

    @pytest.mark.parametrize("failure", REFUSED)
    def test_refusals_are_not_retried(
        self, make_client: Callable[..., AkkioClient], slept: list[float], failure: str
    ) -> None:
        """A 4xx or an error body is raised at once."""
        script = Script(FAILURES[failure](), answering(200, GET_BODY))
        with pytest.raises(AkkioFatalError):
            make_client(script).get_dataset(DATASET_ID)
        assert len(script.requests) == 1
        assert slept == []

    def test_single_attempt_never_sleeps(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """With attempts=1 a failure is raised after one try, without waiting."""
        script = Script(answering(503, content=b"busy"))
        with pytest.raises(AkkioRetriableError):
            make_client(script, retry=RetryPolicy(attempts=1)).list_datasets()
        assert len(script.requests) == 1
        assert slept == []

    def test_retries_are_logged_without_the_key(
        self, make_client: Callable[..., AkkioClient], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each retry logs a WARNING with the attempt, the reason and the wait, never the key."""
        caplog.set_level(logging.WARNING, logger="akkiosync.akkio")
        script = Script(
            raising(httpx.ReadTimeout), answering(503, content=b"busy"), answering(200, GET_BODY)
        )
        make_client(script, retry=RetryPolicy(attempts=3), rand=half).get_dataset(DATASET_ID)
        warnings = [r for r in caplog.records if r.name == "akkiosync.akkio"]
        assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
        first, second = (r.getMessage() for r in warnings)
        assert "ReadTimeout" in first
        assert first.endswith("(attempt 1 of 3); retrying in 0.25s")
        assert "HTTP 503: busy" in second
        assert second.endswith("(attempt 2 of 3); retrying in 0.50s")
        assert not any(API_KEY in r.getMessage() for r in warnings)


class TestChangingRetries:
    """POST and DELETE are retried only after failures that provably did nothing."""

    @pytest.mark.parametrize("failure", NOTHING_DONE)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_retries_what_did_nothing(
        self, make_client: Callable[..., AkkioClient], slept: list[float], call: str, failure: str
    ) -> None:
        """A 429 or a connection never made is sent again, with the same body, until it works."""
        send, success = CHANGING_CALLS[call]
        script = Script(FAILURES[failure](), FAILURES[failure](), answering(200, success))
        send(make_client(script))
        assert len(script.requests) == 3
        assert len({request.content for request in script.requests}) == 1
        assert len(slept) == 2
        if failure == "429":
            assert slept == [2.0, 2.0]  # Retry-After: 2 floors both waits

    @pytest.mark.parametrize("failure", MAY_HAVE_LANDED)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_raises_at_once_what_may_have_landed(
        self, make_client: Callable[..., AkkioClient], slept: list[float], call: str, failure: str
    ) -> None:
        """A 5xx, an unreadable 2xx or a lost answer is raised after one try, for reconciling."""
        send, success = CHANGING_CALLS[call]
        script = Script(FAILURES[failure](), answering(200, success))
        with pytest.raises(AkkioRetriableError) as caught:
            send(make_client(script))
        assert caught.value.maybe_landed is True
        assert len(script.requests) == 1
        assert slept == []

    @pytest.mark.parametrize("failure", REFUSED)
    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_refusals_are_not_retried(
        self, make_client: Callable[..., AkkioClient], slept: list[float], call: str, failure: str
    ) -> None:
        """A 4xx or an error body is raised at once, for the caller to reconcile if it may
        have landed."""
        send, success = CHANGING_CALLS[call]
        script = Script(FAILURES[failure](), answering(200, success))
        with pytest.raises(AkkioFatalError) as caught:
            send(make_client(script))
        assert caught.value.maybe_landed is (failure in REFUSED_MAYBE)
        assert len(script.requests) == 1
        assert slept == []

    def test_429_gives_up_after_attempts(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """A 429 that never clears is raised after ``attempts`` tries, still not landed."""
        script = Script(FAILURES["429"]())
        with pytest.raises(AkkioRetriableError) as caught:
            make_client(script, retry=RetryPolicy(attempts=4)).add_rows(DATASET_ID, [{"a": 1}])
        assert (caught.value.status_code, caught.value.maybe_landed) == (429, False)
        assert len(script.requests) == 4
        assert slept == [2.0, 2.0, 2.0]

    def test_lost_answer_after_a_429(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """A retry that then loses its answer stops there: the second try may have landed."""
        script = Script(FAILURES["429"](), raising(httpx.ReadTimeout), answering(200, OK_BODY))
        with pytest.raises(AkkioTransportError) as caught:
            make_client(script).add_rows(DATASET_ID, [{"a": 1}])
        assert caught.value.maybe_landed is True
        assert len(script.requests) == 2
        assert slept == [2.0]


class TestRateLimiting:
    """Every try, retries included, first waits for the limiter."""

    def test_acquire_before_every_attempt(self, make_client: Callable[..., AkkioClient]) -> None:
        """Each of three tries of a GET acquires the limiter once, just before its request."""
        events: list[str] = []
        script = Script(
            answering(503, content=b"busy"),
            raising(httpx.ReadTimeout),
            answering(200, GET_BODY),
            events=events,
        )
        make_client(script, limiter=RecordingLimiter(events)).get_dataset(DATASET_ID)
        assert events == ["acquire", "request"] * 3

    @pytest.mark.parametrize("call", sorted(CHANGING_CALLS))
    def test_changing_calls_acquire_per_attempt(
        self, make_client: Callable[..., AkkioClient], call: str
    ) -> None:
        """A POST/DELETE retried after a 429 acquires once per try."""
        events: list[str] = []
        send, success = CHANGING_CALLS[call]
        script = Script(FAILURES["429"](), answering(200, success), events=events)
        send(make_client(script, limiter=RecordingLimiter(events)))
        assert events == ["acquire", "request"] * 2

    def test_no_request_no_acquire(self, make_client: Callable[..., AkkioClient]) -> None:
        """Adding no rows sends nothing and takes no slot."""
        events: list[str] = []
        make_client(answering(200, OK_BODY), limiter=RecordingLimiter(events)).add_rows("d", [])
        assert events == []

    def test_spacing_through_a_real_limiter(
        self, make_client: Callable[..., AkkioClient], slept: list[float]
    ) -> None:
        """Three calls at one instant through a 5/s limiter wait 0.2s, then 0.4s; no backoff."""
        limiter_waits: list[float] = []
        limiter = RateLimiter(5.0, clock=lambda: 100.0, sleep=limiter_waits.append)
        client = make_client(answering(200, LIST_BODY), limiter=limiter)
        for _ in range(3):
            client.list_datasets()
        assert limiter_waits == pytest.approx([0.2, 0.4])
        assert slept == []


class TestRetryAfter:
    """Retry-After is read as seconds or an HTTP date, relative to the clock given."""

    NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("30", 30.0),
            (" 1.5 ", 1.5),
            ("-4", 0.0),
            ("Wed, 01 May 2024 12:01:30 GMT", 90.0),
            ("Wed, 01 May 2024 11:00:00 GMT", 0.0),
            (None, None),
            ("", None),
            ("nan", None),
            ("inf", None),
            ("tomorrow-ish", None),
        ],
    )
    def test_values(self, value: str | None, expected: float | None) -> None:
        """Each header value gives the expected delay (never negative), or None."""
        assert _retry_after(value, now=self.NOW) == expected


class TestSecrets:
    """The API key appears in no exception message and no log record of this module."""

    SCENARIOS = (
        answering(400, {"status": "error", "message": f"bad api_key={API_KEY}"}),
        answering(500, content=f"crash handling key {API_KEY}".encode()),
        answering(200, {"status": f"key {API_KEY} rejected"}),
        answering(404, BAD_KEY_BODY),
        answering(200, content=f"?api_key={API_KEY}".encode()),
        raising(httpx.ConnectError),
        raising(httpx.ReadTimeout),
    )

    @pytest.mark.parametrize("handler", SCENARIOS)
    @pytest.mark.parametrize("call", ["list", "get", "add"])
    def test_errors_never_show_the_key(
        self, make_client: Callable[..., AkkioClient], handler: Handler, call: str
    ) -> None:
        """Even a server or an httpx error echoing the key yields a message without it."""
        client = make_client(handler)
        with pytest.raises(AkkioError) as caught:
            DATASET_CALLS[call](client, DATASET_ID)
        assert API_KEY not in str(caught.value)
        assert API_KEY not in repr(caught.value)
        assert caught.value.__cause__ is None

    def test_log_records(
        self, make_client: Callable[..., AkkioClient], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Each request logs method, path and status at DEBUG; no record carries the key."""
        caplog.set_level(logging.DEBUG)
        make_client(answering(200, LIST_BODY)).list_datasets()
        once = make_client(raising(httpx.ReadTimeout), retry=RetryPolicy(attempts=1))
        with pytest.raises(AkkioTransportError):
            once.get_dataset(DATASET_ID)
        ours = [r for r in caplog.records if r.name == "akkiosync.akkio"]
        assert [r.levelno for r in ours] == [logging.DEBUG, logging.DEBUG]
        assert ours[0].getMessage().startswith("GET /v1/datasets -> 200 in ")
        assert "ReadTimeout" in ours[1].getMessage()
        assert not any(API_KEY in r.getMessage() for r in ours)
        # httpx's own INFO line shows the GET URL, key included: RedactingFilter must mask it.
        assert not any(API_KEY in redact(r.getMessage()) for r in caplog.records)

    def test_key_is_registered_and_hidden(self, make_client: Callable[..., AkkioClient]) -> None:
        """Creating a client registers the key for redaction, and its repr does not show it."""
        client = make_client(answering(200, OK_BODY))
        assert redact(f"x {API_KEY} y") == f"x {MASK} y"
        assert API_KEY not in repr(client)


class TestAgainstEmulator:
    """The client drives the emulator through a dataset's whole life, in-process and over HTTP."""

    def test_lifecycle(self) -> None:
        """Create, add rows, read them back as a count and fields, list, delete, then not found."""
        emulator = Emulator(api_key=API_KEY)
        with AkkioClient(API_KEY, "http://akkio.test/v1", transport=emulator.transport()) as client:
            ref = client.create_dataset("orders")
            assert ref.name == "orders"
            assert client.get_dataset(ref.id) == DatasetInfo(ref.id, "orders", 0, ())
            client.add_rows(ref.id, [{"id": 1, "total": 9.5}, {"id": 2, "total": 3.0}])
            client.add_rows(ref.id, [{"id": 3, "total": 1.25}])
            info = client.get_dataset(ref.id)
            assert info.rows == 3
            assert [f.name for f in info.fields] == ["id", "total"]
            assert client.list_datasets() == [ref]
            client.delete_dataset(ref.id)
            with pytest.raises(DatasetNotFoundError):
                client.get_dataset(ref.id)
            assert client.list_datasets() == []
        assert emulator.dataset_ids() == []

    def test_refusals(self) -> None:
        """Rows that do not match the fields are fatal; a wrong key is an auth error."""
        emulator = Emulator(api_key=API_KEY)
        transport = emulator.transport()
        with AkkioClient(API_KEY, "http://akkio.test/v1", transport=transport) as client:
            ref = client.create_dataset("orders")
            client.add_rows(ref.id, [{"id": 1}])
            with pytest.raises(AkkioFatalError, match="HTTP 400: row 0 does not match") as caught:
                client.add_rows(ref.id, [{"id": 2, "extra": True}])
            assert type(caught.value) is AkkioFatalError
            assert emulator.rows(ref.id) == [{"id": 1}]
        with (
            AkkioClient("wrong-key", "http://akkio.test/v1", transport=transport) as client,
            pytest.raises(AkkioAuthError),
        ):
            client.list_datasets()

    def test_over_loopback_http(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The same calls work through httpx's real transport against the loopback server."""
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):  # keep localhost off any proxy
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.lower(), raising=False)
        emulator = Emulator(api_key=API_KEY)
        with serve(emulator) as server, AkkioClient(API_KEY, server.url, timeout=5.0) as client:
            ref = client.create_dataset("über")
            client.add_rows(ref.id, [{"name": "Zoë"}])
            assert client.get_dataset(ref.id).rows == 1
            assert emulator.rows(ref.id) == [{"name": "Zoë"}]
