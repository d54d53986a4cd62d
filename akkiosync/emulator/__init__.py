"""An Akkio-compatible fake of ``/v1/datasets`` (see akkio-api.md), in-process or on a port.

One URL whose fields pick the action, taken from the query string, a JSON or a form body (the
body wins). The first rows fix a dataset's fields; every later row must carry the same keys; a
request is all or nothing. With ``data_file``, every change is an fsync'd line of an append-only
JSON-lines journal that is replayed on start; a file that is not one is refused, untouched. On a
port, a request body over ``max_body`` bytes is answered 413 without being read. ``latency``
delays each add-rows answer, as a far API would; ``keep_only`` stores one field of each row.

A ``FaultPlan`` injects failures into ``/v1`` requests so that clients can rehearse them: 429,
500, 503, ``slow`` (the backend takes ``delay``; past the client's read timeout its rows land
after the client gave up), ``drop_before`` (hang up, nothing stored), ``drop_after`` (rows
stored, answer lost), ``late`` (504 at once, rows stored ``delay`` later), ``error_after`` (rows
stored, 200 with an error body) and ``408_after`` (rows stored, 408). ``Emulator.settle`` waits
for rows still to land. ``/_emulator/health``, ``/_emulator/rows`` and ``/_emulator/faults`` are
our own additions and never fail on purpose.

Modules: ``_store`` (datasets, schema rules, journal), ``_request`` (reading a request's fields),
``_faults`` (plans, their answers and the seeded draw), ``_pending`` (requests in flight and late
changes), ``_app`` (``Emulator``: routing to an answer) and ``_server`` (the loopback HTTP
server). Nothing here imports the rest of ``akkiosync``: it stays an independent referee.
"""

from akkiosync.emulator._app import API_PREFIX, DEFAULT_API_KEY, Emulator
from akkiosync.emulator._faults import FAULT_KINDS, FaultPlan
from akkiosync.emulator._server import (
    DEFAULT_MAX_BODY,
    EmulatorServer,
    ListenError,
    serve,
    serve_forever,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "DEFAULT_MAX_BODY",
    "FAULT_KINDS",
    "Emulator",
    "EmulatorServer",
    "FaultPlan",
    "ListenError",
    "serve",
    "serve_forever",
]
