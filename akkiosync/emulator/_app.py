"""The emulator itself: one HTTP exchange in, one answer out, with faults injected on the way."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
import orjson

from akkiosync.emulator._faults import ANSWERS, STAND_INS, FaultDraw, FaultPlan
from akkiosync.emulator._pending import Pending
from akkiosync.emulator._request import asks_to_add, decode_rows, optional_str, read_params
from akkiosync.emulator._store import RequestError, Store, error

DEFAULT_API_KEY = "emulator-key"
API_PREFIX = "/v1"

_log = logging.getLogger(__name__)
_METHODS = ("GET", "POST", "DELETE")
_DATASETS = f"{API_PREFIX}/datasets"
_ROUTES = {
    _DATASETS: _METHODS,
    "/_emulator/rows": ("GET",),
    "/_emulator/health": ("GET",),
    "/_emulator/faults": ("GET", "POST"),
}
_REFUSALS = ("429", "500", "503")  # answered at once, nothing stored
_STORED_THEN_ERROR = ("error_after", "408_after")
# Akkio's answer to a bad key, byte for byte as akkio-api.md quotes it (orjson has no spaces).
_BAD_KEY = b'{"status": "missing or invalid API key"}'

Reply = tuple[int, dict[str, str], bytes]


class Emulator:
    """The state and the rules of a fake Akkio account; ``handle`` is one HTTP exchange.

    ``faults`` (or ``set_faults``) injects failures into ``/v1`` requests; ``sleep`` is how a
    ``slow`` fault and ``latency`` wait. Rows may land after their answer (``late``, a ``slow``
    past the client's timeout): ``settle`` waits for them.

    ``latency`` delays the answer to every add-rows request by that many seconds, once its rows
    are stored (or refused), as a far API would; the wait holds no lock, so other requests go
    on meanwhile. ``keep_only`` stores only that field of each row (``rows`` returns those
    cut-down rows), for clients that send more rows than are worth keeping whole; the row
    counts stay exact.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        data_file: Path | None = None,
        *,
        faults: FaultPlan | None = None,
        sleep: Callable[[float], None] = time.sleep,
        latency: float = 0.0,
        keep_only: str | None = None,
    ) -> None:
        if not latency >= 0:  # NaN too
            raise ValueError(f"latency must be a number of seconds >= 0, not {latency!r}")
        self.api_key = api_key
        self.data_file = data_file
        self.latency = latency
        self._sleep = sleep
        self._lock = threading.Lock()
        self._store = Store(data_file, keep_only)
        self._faults = FaultDraw(faults)
        self._pending = Pending()
        self._requests = 0

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout: float | None = None,
    ) -> Reply:
        """One HTTP exchange; `target` is the path plus optional '?query'.

        Returns (status, headers, body): every refusal is an answer. A ``drop_*`` fault raises
        ``httpx.RemoteProtocolError``, what a client sees when the server hangs up without an
        answer. `timeout` is the client's read timeout, for callers without a socket to enforce
        it: a ``slow`` fault longer than it carries on in the background and raises
        ``httpx.ReadTimeout`` after `timeout`. Only a bug raises anything else.
        """
        method, url = method.upper(), urlsplit(target)
        with self._pending.request():
            drawn = self._draw(method, url, headers, body)
            if drawn is None:
                return self._answer(method, url, headers, body)
            return self._inject(*drawn, method, url, headers, body, timeout)

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers from this emulator, without any socket.

        It honours the request's read timeout, which a MockTransport otherwise ignores.
        """

        def exchange(request: httpx.Request) -> httpx.Response:
            target = request.url.raw_path.decode("ascii")
            timeout = request.extensions.get("timeout", {}).get("read")
            reply = self.handle(
                request.method, target, request.headers, request.read(), timeout=timeout
            )
            return httpx.Response(reply[0], headers=reply[1], content=reply[2])

        return httpx.MockTransport(exchange)

    def settle(self, timeout: float | None = 10.0) -> bool:
        """Wait until no request is in flight and no late change is pending (None: for ever).

        True once settled; False if `timeout` seconds passed first.
        """
        return self._pending.settle(timeout)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Inject `plan` from the next ``/v1`` request on, its script and seed from the start;
        None injects nothing. The counts of fired faults carry on."""
        with self._lock:
            self._faults.use(plan)

    def fault_counts(self) -> dict[str, int]:
        """How many faults of each kind fired so far, every kind listed."""
        with self._lock:
            return dict(self._faults.fired)

    def rows(self, dataset_id: str) -> list[dict[str, Any]]:
        """A copy of the rows stored in a dataset, in order (KeyError if unknown)."""
        with self._lock:
            return [dict(row) for row in self._store.datasets[dataset_id].rows]

    def dataset_ids(self) -> list[str]:
        """The ids of the existing datasets, oldest first."""
        with self._lock:
            return list(self._store.datasets)

    def request_count(self) -> int:
        """How many ``/v1`` requests were handled, whatever their outcome, faults included."""
        with self._lock:
            return self._requests

    def _draw(
        self, method: str, url: SplitResult, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, FaultPlan] | None:
        """Count a ``/v1`` request and draw its fault, if any; other paths never get one."""
        if not url.path.startswith(API_PREFIX + "/"):
            return None
        with self._lock:
            self._requests += 1
            plan = self._faults.plan
        # Reading the body to tell an add-rows POST apart is done without the lock.
        if plan is None or (plan.only == "add" and not _adds_rows(method, url, headers, body)):
            return None
        with self._lock:
            kind = self._faults.draw(plan)
        return None if kind is None else (kind, plan)

    def _inject(
        self,
        kind: str,
        plan: FaultPlan,
        method: str,
        url: SplitResult,
        headers: Mapping[str, str],
        body: bytes,
        timeout: float | None,
    ) -> Reply:
        """The answer to a request that drew the fault `kind`."""
        if kind in STAND_INS and not _adds_rows(method, url, headers, body):
            kind = STAND_INS[kind]  # no rows to land: a plain error
        if kind in _REFUSALS:
            return _fault_reply(kind, plan)
        if kind == "drop_before":
            raise _hang_up()
        if kind == "late":  # the load balancer gave up; the backend did not
            self._pending.later(plan.delay, lambda: self._land(method, url, headers, body))
            return _fault_reply(kind, plan)
        if kind == "slow" and timeout is not None and plan.delay > timeout:
            self._pending.later(plan.delay, lambda: self._land(method, url, headers, body))
            self._sleep(timeout)
            raise httpx.ReadTimeout("timed out: the emulator's slow fault outlasts the timeout")
        if kind == "slow":
            self._sleep(plan.delay)  # without the lock: other requests go on meanwhile
        reply = self._answer(method, url, headers, body)
        if kind == "drop_after":
            raise _hang_up()
        if kind in _STORED_THEN_ERROR:  # a proxy's error replaces whatever the backend said
            return _fault_reply(kind, plan)
        return reply

    def _land(self, method: str, url: SplitResult, headers: Mapping[str, str], body: bytes) -> None:
        """Carry out a request whose client has its answer already; a refusal is dropped."""
        status = self._answer(method, url, headers, body)[0]
        outcome = "landed" if status == 200 else f"was refused ({status}) and dropped"
        _log.debug("a late %s %s %s", method, url.path, outcome)

    def _answer(
        self, method: str, url: SplitResult, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        try:
            return self._route(method, url, headers, body)
        except RequestError as refused:
            return _reply(refused.status, refused.body)
        except OSError:
            _log.exception("the emulator could not write its journal")
            return _reply(500, {"status": "error", "message": "could not persist the change"})

    def _route(
        self, method: str, url: SplitResult, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        path = url.path.rstrip("/")
        allowed = _ROUTES.get(path, ())
        if method not in _METHODS or (allowed and method not in allowed):
            return _reply(405, {"status": "error", "message": "method not allowed"}, allowed)
        if not allowed:
            raise error(404, "not found")
        if path == "/_emulator/health":
            return _reply(200, {"status": "success"})
        params = read_params(url.query, headers, body)
        key = params.get("api_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return 401, {"Content-Type": "application/json"}, _BAD_KEY
        if path == "/_emulator/faults":
            return _reply(200, self._fault_control(method, params))
        return _reply(200, self._act(method, path, params))

    def _act(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """Carry out an authorised request: the fields present pick the action."""
        dataset_id, name = optional_str(params, "id"), optional_str(params, "name")
        ok: dict[str, Any] = {"status": "success"}
        if method == "POST" and dataset_id is None and name is not None:
            with self._lock:
                dataset_id = self._store.create(name)
            return {"status": "success", "dataset_id": dataset_id, "dataset_name": name}
        if method == "POST" and dataset_id is not None and "rows" in params:
            try:
                rows = decode_rows(params["rows"])
                with self._lock:
                    self._store.add_rows(dataset_id, rows)
            finally:
                if self.latency:  # the way back from a far API, refusals included
                    self._sleep(self.latency)
            return ok
        with self._lock:
            if method == "GET" and dataset_id is None and path == _DATASETS:
                listed = [{"id": key, "name": ds.name} for key, ds in self._store.datasets.items()]
                return {"status": "success", "datasets": listed}
            if dataset_id is None:
                raise error(400, "an id is required (or a name, to create a dataset)")
            ds = self._store.get(dataset_id)
            if path == "/_emulator/rows":
                # a shallow copy: stored rows are never changed, and it is encoded unlocked
                return {"status": "success", "rows": list(ds.rows)}
            if method == "GET":
                fields = [{"name": f, "type": t} for f, t in ds.fields]
                return {
                    "status": "success",
                    "name": ds.name,
                    "rows": len(ds.rows),
                    "fields": fields,
                }
            if method == "DELETE":
                self._store.delete(dataset_id)
                return ok
            if params.get("parse_fields") in (True, 1, "true", "True", "1"):
                return ok  # the first rows already fixed the fields: nothing left to parse
        raise error(400, "POST with an id needs rows or parse_fields")

    def _fault_control(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /_emulator/faults`` replaces the plan (``{}`` clears it); GET shows it."""
        if method == "POST":
            settings = {key: value for key, value in params.items() if key != "api_key"}
            try:
                plan = FaultPlan.from_json(settings) if settings else None
            except ValueError as exc:
                raise error(400, str(exc)) from None
            self.set_faults(plan)
            return {"status": "success"}
        with self._lock:
            plan, fired = self._faults.plan, dict(self._faults.fired)
        shown = None if plan is None else plan.to_json()
        return {"status": "success", "fired": fired, "plan": shown}


def _hang_up() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def _fault_reply(kind: str, plan: FaultPlan) -> Reply:
    status, message = ANSWERS[kind]
    reply = _reply(status, {"status": "error", "message": message})
    if kind == "429":
        seconds = plan.retry_after
        reply[1]["Retry-After"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
    return reply


def _reply(status: int, body: dict[str, Any], allow: tuple[str, ...] = ()) -> Reply:
    headers = {"Content-Type": "application/json"}
    if status == 405:
        headers["Allow"] = ", ".join(allow or _METHODS)
    return status, headers, orjson.dumps(body)


def _adds_rows(method: str, url: SplitResult, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether a request is an add-rows POST (valid or not), whose rows a fault may land."""
    return url.path.rstrip("/") == _DATASETS and asks_to_add(method, url.query, headers, body)
