"""The emulator on a real socket: a threaded loopback HTTP server, in the background or not."""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import orjson

from akkiosync.emulator._app import API_PREFIX, Emulator

_log = logging.getLogger(__name__)
_API_KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s'\"]*", re.IGNORECASE)
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # bytes: a request body past it is refused unread


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a client's idle keep-alive connection must not block shutdown

    def __init__(self, address: tuple[str, int], emulator: Emulator, max_body: int) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self.max_body = max_body

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints tracebacks to stderr; route them through logging instead. A
        # client that went away mid-request (killed, timed out) is normal, not a failure.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            _log.debug("a client went away mid-request", exc_info=True)
            return
        _log.exception("the emulator failed while serving a connection")


class ListenError(OSError):
    """The emulator cannot listen where it was asked to; the message says what to do."""


def _bind(host: str, port: int, emulator: Emulator, max_body: int) -> _Server:
    """The server listening on ``host:port``, or a ``ListenError`` saying what is in the way."""
    try:
        return _Server((host, port), emulator, max_body)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(
            f"emulator: cannot listen on {host}:{port}: {reason}; stop what uses that port, "
            "or pick another with --port"
        ) from None


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
        server = cast(_Server, self.server)
        if int(length) > server.max_body:  # refused unread: memory stays bounded
            self._too_large(int(length), server.max_body)
            return
        body = self.rfile.read(int(length))
        headers = {key: str(value) for key, value in self.headers.items()}
        emulator = server.emulator
        try:
            status, reply_headers, payload = emulator.handle(self.command, self.path, headers, body)
        except httpx.RemoteProtocolError:
            # A drop fault: nothing is written, and the connection closes once this returns.
            _log.debug("%s %s -> dropped without an answer", self.command, urlsplit(self.path).path)
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in reply_headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _too_large(self, length: int, limit: int) -> None:
        message = f"request body of {length} bytes is over the emulator's limit of {limit}"
        payload = orjson.dumps({"status": "error", "message": message})
        self.close_connection = True  # the unread body must not be taken for a next request
        self.send_response(413)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The default logs the request line, whose query string may carry the api key.
        path = urlsplit(getattr(self, "path", "")).path  # unset when the request line was bad
        _log.debug("%s %s -> %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s", _API_KEY_IN_TEXT.sub(r"\1***", format % args))


class EmulatorServer:
    """A running loopback emulator: ``url`` is its API base. Close it, or use it with ``with``."""

    def __init__(
        self,
        emulator: Emulator,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.emulator = emulator
        self._server = _bind(host, port, emulator, max_body)
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


def serve(
    emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *, max_body: int = DEFAULT_MAX_BODY
) -> EmulatorServer:
    """Serve `emulator` on a background thread; port 0 picks a free port; a request body over
    ``max_body`` bytes is answered 413 without being read."""
    return EmulatorServer(emulator, host, port, max_body=max_body)


def serve_forever(
    emulator: Emulator, host: str, port: int, *, max_body: int = DEFAULT_MAX_BODY
) -> None:
    """Serve `emulator` in this thread until interrupted (the ``akkiosync emulator`` command)."""
    with _bind(host, port, emulator, max_body) as server:
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
