"""The script a user writes with the official client (``pip install akkio``, 1.0.5).

Read the whole table, make its values JSON-able the quick way (``str()`` for dates and
decimals), create a dataset, post 5,000 rows at a time. No checkpoint, retry, or exactly-once.
The official client is module-level ``requests.post`` calls: a new connection per request.

The benchmark (``throughput.py``) runs it with its settings in the environment: BENCH_DB_URL,
BENCH_TABLE, BENCH_API_KEY, BENCH_PORT (the sink on 127.0.0.1), BENCH_DATASET (the name) and
BENCH_BATCH_SIZE. It prints the new dataset's id.
"""

from __future__ import annotations

import datetime
import decimal
import os
import sys

import akkio
import sqlalchemy as sa

akkio.api_key = os.environ["BENCH_API_KEY"]
akkio.protocol = "http"
akkio.url = "127.0.0.1"
akkio.port = os.environ["BENCH_PORT"]


def json_able(value: object) -> object:
    """What gets past ``TypeError: Object of type Decimal is not JSON serializable``."""
    if isinstance(value, datetime.date | decimal.Decimal):
        return str(value)
    return value


def main() -> None:
    """Read everything, then post it in batches."""
    table, batch_size = os.environ["BENCH_TABLE"], int(os.environ["BENCH_BATCH_SIZE"])
    engine = sa.create_engine(os.environ["BENCH_DB_URL"])
    with engine.connect() as conn:
        result = conn.execute(sa.text(f"SELECT * FROM {table}"))  # noqa: S608 - our own table
        fetched = result.mappings().fetchall()
    rows = [{key: json_able(value) for key, value in row.items()} for row in fetched]

    dataset_id = akkio.create_dataset(os.environ["BENCH_DATASET"])["dataset_id"]
    for start in range(0, len(rows), batch_size):
        answer = akkio.add_rows_to_dataset(dataset_id, rows[start : start + batch_size])
        if answer.get("status") != "success":
            sys.exit(f"add_rows_to_dataset answered {answer}")
    print(dataset_id)


if __name__ == "__main__":
    main()
