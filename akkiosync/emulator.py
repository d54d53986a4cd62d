"""An Akkio-compatible fake of ``/v1/datasets`` (see akkio-api.md), in-process or on a port.

One URL whose fields pick the action, taken from the query string, a JSON or a form body (the
body wins). The first rows fix a dataset's fields; every later row must carry the same keys; a
request is all or nothing. ``/_emulator/rows`` and ``/_emulator/health`` are our own additions.
With ``data_file``, every change is an fsync'd line of an append-only JSON-lines journal that is
replayed on start. Nothing here imports the rest of ``akkiosync``: it stays an independent referee.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import secrets
import string
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import SplitResult, parse_qsl, urlsplit

import httpx

DEFAULT_API_KEY = "emulator-key"
API_PREFIX = "/v1"

_log = logging.getLogger(__name__)
_ID_ALPHABET = string.ascii_letters + string.digits
_METHODS = ("GET", "POST", "DELETE")
_ROUTES = {"/v1/datasets": _METHODS, "/_emulator/rows": ("GET",), "/_emulator/health": ("GET",)}
# A dash-shaped date first, so that a numeric string such as "20240101" stays a string.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_API_KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s'\"]*", re.IGNORECASE)

Row = dict[str, Any]
Reply = tuple[int, dict[str, str], bytes]
Fields = list[tuple[str, str]]


@dataclass(eq=False)  # eq=False keeps the exception hashable
class _RequestError(Exception):
    """A refused request: the HTTP status and the JSON body to answer with."""

    status: int
    body: dict[str, Any]


def _error(status: int, message: str) -> _RequestError:
    return _RequestError(status, {"status": "error", "message": message})


@dataclass
class _Dataset:
    name: str
    fields: Fields = field(default_factory=list)  # empty until the first rows arrive
    rows: list[Row] = field(default_factory=list)


class Emulator:
    """The state and the rules of a fake Akkio account; ``handle`` is one HTTP exchange."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, data_file: Path | None = None) -> None:
        self.api_key = api_key
        self.data_file = data_file
        self._lock = threading.Lock()
        self._datasets: dict[str, _Dataset] = {}
        self._requests = 0
        if data_file is not None:
            data_file.parent.mkdir(parents=True, exist_ok=True)
            if data_file.exists():
                self._replay(data_file)

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """One HTTP exchange; `target` is the path plus optional '?query'.

        Returns (status, headers, body): every refusal is an answer, only a bug raises.
        """
        url = urlsplit(target)
        if url.path.startswith(API_PREFIX + "/"):
            with self._lock:
                self._requests += 1
        try:
            return self._route(method.upper(), url, headers, body)
        except _RequestError as refused:
            return _reply(refused.status, refused.body)
        except OSError:
            _log.exception("the emulator could not write its journal")
            return _reply(500, {"status": "error", "message": "could not persist the change"})

    def transport(self) -> httpx.MockTransport:
        """An httpx transport that answers from this emulator, without any socket."""

        def exchange(request: httpx.Request) -> httpx.Response:
            target = request.url.raw_path.decode("ascii")
            reply = self.handle(request.method, target, request.headers, request.read())
            return httpx.Response(reply[0], headers=reply[1], content=reply[2])

        return httpx.MockTransport(exchange)

    def rows(self, dataset_id: str) -> list[dict[str, Any]]:
        """A copy of the rows stored in a dataset, in order (KeyError if unknown)."""
        with self._lock:
            return [dict(row) for row in self._datasets[dataset_id].rows]

    def dataset_ids(self) -> list[str]:
        """The ids of the existing datasets, oldest first."""
        with self._lock:
            return list(self._datasets)

    def request_count(self) -> int:
        """How many ``/v1`` requests were handled, whatever their outcome."""
        with self._lock:
            return self._requests

    def _route(
        self, method: str, url: SplitResult, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        path = url.path.rstrip("/")
        allowed = _ROUTES.get(path, ())
        if method not in _METHODS or (allowed and method not in allowed):
            return _reply(405, {"status": "error", "message": "method not allowed"}, allowed)
        if not allowed:
            raise _error(404, "not found")
        if path == "/_emulator/health":
            return _reply(200, {"status": "success"})
        params = _params(url.query, headers, body)
        key = params.get("api_key")
        if not isinstance(key, str) or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise _RequestError(401, {"status": "missing or invalid API key"})
        return _reply(200, self._act(method, path, params))

    def _act(self, method: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """Carry out an authorised request: the fields present pick the action."""
        dataset_id, name = _optional_str(params, "id"), _optional_str(params, "name")
        ok: dict[str, Any] = {"status": "success"}
        if method == "POST" and dataset_id is None and name is not None:
            return self._create(name)
        if method == "POST" and dataset_id is not None and "rows" in params:
            self._add_rows(dataset_id, _decode_rows(params["rows"]))
            return ok
        with self._lock:
            if method == "GET" and dataset_id is None and path == f"{API_PREFIX}/datasets":
                listed = [{"id": key, "name": ds.name} for key, ds in self._datasets.items()]
                return {"status": "success", "datasets": listed}
            if dataset_id is None:
                raise _error(400, "an id is required (or a name, to create a dataset)")
            ds = self._get(dataset_id)
            if path == "/_emulator/rows":
                return {"status": "success", "rows": [dict(row) for row in ds.rows]}
            if method == "GET":
                fields = [{"name": f, "type": t} for f, t in ds.fields]
                return {
                    "status": "success",
                    "name": ds.name,
                    "rows": len(ds.rows),
                    "fields": fields,
                }
            if method == "DELETE":
                self._journal({"op": "delete", "id": dataset_id})
                del self._datasets[dataset_id]
                return ok
            if params.get("parse_fields") in (True, 1, "true", "True", "1"):
                return ok  # the first rows already fixed the fields: nothing left to parse
        raise _error(400, "POST with an id needs rows or parse_fields")

    def _create(self, name: str) -> dict[str, Any]:
        with self._lock:
            dataset_id = _new_id()
            while dataset_id in self._datasets:
                dataset_id = _new_id()
            self._journal({"op": "create", "id": dataset_id, "name": name})
            self._datasets[dataset_id] = _Dataset(name)
        return {"status": "success", "dataset_id": dataset_id, "dataset_name": name}

    def _add_rows(self, dataset_id: str, rows: list[Row]) -> None:
        """Check every row first and journal the batch before storing it: all or nothing."""
        with self._lock:
            ds = self._get(dataset_id)
            fields = _check_rows(ds.fields, rows)
            if not rows:
                return
            entry: dict[str, Any] = {"op": "add", "id": dataset_id, "rows": rows}
            if not ds.fields:
                entry["fields"] = fields
            self._journal(entry)
            ds.fields = fields
            ds.rows.extend(rows)

    def _get(self, dataset_id: str) -> _Dataset:
        try:
            return self._datasets[dataset_id]
        except KeyError:
            raise _error(404, "dataset not found") from None

    # -- persistence -----------------------------------------------------------------------

    def _journal(self, entry: dict[str, Any]) -> None:
        """Append one entry durably; on failure cut the file back, leaving no torn line inside."""
        if self.data_file is None:
            return
        created = not self.data_file.exists()
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        with self.data_file.open("ab") as journal:
            start = journal.seek(0, os.SEEK_END)
            try:
                journal.write(line)
                journal.flush()
                os.fsync(journal.fileno())
            except OSError:
                journal.truncate(start)
                raise
        if created:  # a new file's directory entry must be durable too
            directory = os.open(self.data_file.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def _replay(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # the bytes after the last newline: b"" or a write cut short
        kept = 0
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except ValueError as exc:
                if number == len(lines) and not tail:
                    break  # a torn last line that happens to end in a newline
                raise ValueError(f"{path}:{number}: corrupt emulator journal") from exc
            self._apply(entry)
            kept += len(line) + 1
        if kept < len(data):
            _log.warning("dropping a torn last line from %s", path)
            with path.open("r+b") as journal:  # later appends must start on a clean line
                journal.truncate(kept)

    def _apply(self, entry: dict[str, Any]) -> None:
        op = entry["op"]
        if op == "create":
            self._datasets[entry["id"]] = _Dataset(entry["name"])
        elif op == "add":
            ds = self._datasets[entry["id"]]
            if "fields" in entry:
                ds.fields = [(name, kind) for name, kind in entry["fields"]]
            ds.rows.extend(entry["rows"])
        elif op == "delete":
            del self._datasets[entry["id"]]
        else:
            raise ValueError(f"unknown emulator journal entry {op!r}")


def _reply(status: int, body: dict[str, Any], allow: tuple[str, ...] = ()) -> Reply:
    headers = {"Content-Type": "application/json"}
    if status == 405:
        headers["Allow"] = ", ".join(allow or _METHODS)
    return status, headers, json.dumps(body).encode()


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def _params(query: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """Merge the query string with a JSON or form body; the body wins."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    text = body.decode(errors="replace").strip()
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "").lower()
    # Sniff when the type is neither: cURL's -d sends a form unless told otherwise.
    if not text or not ("json" in ctype or ("form" not in ctype and text.startswith("{"))):
        return params | dict(parse_qsl(text, keep_blank_values=True))
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _error(400, f"malformed JSON body: {exc}") from None
    if not isinstance(decoded, dict):
        raise _error(400, "the JSON body must be an object")
    return params | decoded


def _optional_str(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _error(400, f"{key} must be a string")
    return value


def _decode_rows(raw: Any) -> list[Row]:
    """`rows` as sent: an array of objects, or a JSON-encoded string of one."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _error(400, f"rows is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise _error(400, "rows must be an array of objects")
    for index, row in enumerate(raw):
        if not isinstance(row, dict):
            raise _error(400, f"row {index} is not an object")
        nested = sorted(key for key, value in row.items() if isinstance(value, list | dict))
        if nested:
            raise _error(400, f"row {index}: arrays and objects are not values: {nested}")
    return cast(list[Row], raw)


def _check_rows(fields: Fields, rows: list[Row]) -> Fields:
    """The dataset's fields once `rows` are added; raises if any row's keys differ from them."""
    if rows and not fields:
        if not rows[0]:
            raise _error(400, "row 0 has no fields")
        fields = [(name, _infer_type(rows, name)) for name in rows[0]]
    expected = {name for name, _ in fields}
    for index, row in enumerate(rows):
        if row.keys() != expected:
            unexpected, missing = sorted(row.keys() - expected), sorted(expected - row.keys())
            raise _error(
                400,
                f"row {index} does not match the dataset's fields: "
                f"unexpected keys {unexpected}, missing keys {missing}",
            )
    return fields


def _infer_type(rows: list[Row], name: str) -> str:
    value = next((row[name] for row in rows if row.get(name) is not None), None)
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "category"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return "string"
        return "date"
    return "string"


# -- the loopback HTTP server ------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's idle keep-alive connection must not block shutdown

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; route them through logging instead.
        _log.exception("the emulator failed while serving a connection")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so that a client's connection pool is exercised
    server_version = "akkio-emulator"
    timeout = 60  # an abandoned connection frees its thread eventually
    disable_nagle_algorithm = True  # headers and body go out in two writes: don't wait on ACKs

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>; route every method, HEAD included, to one place so
        # that Emulator.handle answers 405 rather than http.server's 501.
        if name.startswith("do_"):
            return self._exchange
        raise AttributeError(name)

    def _exchange(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or "Transfer-Encoding" in self.headers:
            self.send_error(411, "send a Content-Length")  # chunked bodies are not supported
            return
        body = self.rfile.read(int(length))
        headers = {key: str(value) for key, value in self.headers.items()}
        emulator = cast(_Server, self.server).emulator
        status, reply_headers, payload = emulator.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in reply_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The default logs the request line, whose query string may carry the api key.
        path = urlsplit(getattr(self, "path", "")).path  # unset when the request line was bad
        _log.debug("%s %s -> %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s", _API_KEY_IN_TEXT.sub(r"\1***", format % args))


class EmulatorServer:
    """A running loopback emulator: ``url`` is its API base. Close it, or use it with ``with``."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self._server = _Server((host, port), emulator)
        self.url = f"http://{host}:{self._server.server_port}{API_PREFIX}"
        # A short poll interval makes close() quick: shutdown() waits for the loop to notice.
        serve_loop = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve_loop, name="akkio-emulator", daemon=True)
        self._thread.start()
        self._closed = False

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> EmulatorServer:
    """Serve `emulator` on a background thread; port 0 picks a free port."""
    return EmulatorServer(emulator, host, port)


def serve_forever(emulator: Emulator, host: str, port: int) -> None:
    """Serve `emulator` in this thread until interrupted (the ``akkiosync emulator`` command)."""
    with _Server((host, port), emulator) as server:
        _log.info(
            "Akkio emulator on http://%s:%d%s (Ctrl-C to stop)",
            host,
            server.server_port,
            API_PREFIX,
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            return
