"""A hand-tuned single stream from a table to an Akkio dataset: the fastest simple way we know.

- the driver's own streaming cursor: psycopg 3's server-side (named) cursor on PostgreSQL,
  PyMySQL's ``SSCursor`` on MariaDB/MySQL, ``fetchmany(batch)``; no SQLAlchemy in between;
- rows to dicts, one ``orjson.dumps`` per request body (``Decimal`` as a float; dates and
  times as ISO text, orjson's own);
- one keep-alive ``httpx.Client``;
- a reader thread reads and encodes the next batch while the previous POST is in flight
  (a queue of 2 bodies keeps memory flat).

No checkpoint, retry or exactly-once: it is the yardstick for speed, not a way to sync.
Settings come from the environment, as for ``official_script.py``: BENCH_DB_URL (a
SQLAlchemy URL), BENCH_TABLE, BENCH_API_KEY, BENCH_PORT, BENCH_DATASET, BENCH_BATCH_SIZE.
It prints the new dataset's id.
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

DONE = object()  # the reader's last item


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def postgres_batches(url: sa.URL, table: str, size: int) -> Iterator[list[dict[str, Any]]]:
    """The table in batches of `size` rows, through a psycopg server-side cursor."""
    import psycopg  # noqa: PLC0415 - only the database in use needs its driver

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn, conn.cursor(name="hand_tuned") as cur:
        cur.itersize = size
        cur.execute(f"SELECT * FROM {table}")  # noqa: S608 - our own table
        names = [column.name for column in cur.description or ()]
        while rows := cur.fetchmany(size):
            yield [dict(zip(names, row, strict=True)) for row in rows]


def mysql_batches(url: sa.URL, table: str, size: int) -> Iterator[list[dict[str, Any]]]:
    """The table in batches of `size` rows, through PyMySQL's unbuffered cursor."""
    import pymysql  # noqa: PLC0415 - only the database in use needs its driver
    import pymysql.cursors  # noqa: PLC0415

    conn = pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        cursorclass=pymysql.cursors.SSCursor,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}")  # noqa: S608 - our own table
            names = [column[0] for column in cur.description or ()]
            while rows := cur.fetchmany(size):
                yield [dict(zip(names, row, strict=True)) for row in rows]
    finally:
        conn.close()


def read_ahead(bodies: Iterator[bytes], depth: int = 2) -> Iterator[bytes]:
    """`bodies`, produced on a thread up to `depth` ahead of the consumer."""
    ready: queue.Queue[object] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for body in bodies:
                ready.put(body)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            ready.put(exc)
        else:
            ready.put(DONE)

    threading.Thread(target=produce, name="reader", daemon=True).start()
    while (item := ready.get()) is not DONE:
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, bytes)  # noqa: S101 - what produce() puts
        yield item


def main() -> None:
    """Create the dataset, then stream the table into it."""
    gc.freeze()  # what is loaded by now lives for ever: no collection need look at it
    url = sa.make_url(os.environ["BENCH_DB_URL"])
    table, size = os.environ["BENCH_TABLE"], int(os.environ["BENCH_BATCH_SIZE"])
    api_key, name = os.environ["BENCH_API_KEY"], os.environ["BENCH_DATASET"]
    endpoint = f"http://127.0.0.1:{os.environ['BENCH_PORT']}/v1/datasets"
    batches: Callable[[sa.URL, str, int], Iterator[list[dict[str, Any]]]]
    batches = postgres_batches if url.get_backend_name() == "postgresql" else mysql_batches
    json_header = {"Content-Type": "application/json"}

    with httpx.Client(timeout=60, trust_env=False) as http:
        created = http.post(endpoint, json={"api_key": api_key, "name": name})
        created.raise_for_status()
        dataset_id = created.json()["dataset_id"]
        # A generator: reading and encoding both happen on the reader thread.
        bodies = (
            orjson.dumps({"api_key": api_key, "id": dataset_id, "rows": rows}, default=_default)
            for rows in batches(url, table, size)
        )
        for body in read_ahead(bodies):
            answer = http.post(endpoint, content=body, headers=json_header)
            if answer.status_code != 200 or answer.json().get("status") != "success":
                sys.exit(f"add rows answered {answer.status_code}: {answer.text[:200]}")
            # httpx leaves each request (its body too) in a reference cycle that only a full
            # collection frees, and those come rarely: without this, memory grows with the
            # table. Cheap, since gc.freeze() below keeps the modules out of it.
            del body, answer
            gc.collect()
    print(dataset_id)


if __name__ == "__main__":
    main()
