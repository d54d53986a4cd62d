"""The throughput benchmark's source tables: 10 mixed columns, generated inside the database.

Rows are computed from their id by the database itself (``generate_series`` on PostgreSQL,
the ``seq_1_to_N`` sequence table on MariaDB), so 800,000 rows take seconds to build instead
of minutes of INSERTs, and both databases hold the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

TIE = 7  # rows per updated_at value: batch boundaries fall inside ties
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

_COLUMNS = """\
    id INTEGER NOT NULL PRIMARY KEY,
    updated_at {timestamp} NOT NULL,
    amount NUMERIC(12, 2) NOT NULL,
    status VARCHAR(20) NOT NULL,
    note TEXT NOT NULL,
    active BOOLEAN NOT NULL,
    score {double} NOT NULL,
    ship_date DATE NOT NULL,
    quantity INTEGER NOT NULL,
    coupon VARCHAR(16)"""

# One SELECT per dialect; both compute the same values from i, the row's id.
_POSTGRES_ROWS = f"""\
SELECT i,
    TIMESTAMP '2026-01-01 09:00:00' + ((i - 1) / {TIE}) * INTERVAL '1 second',
    ((i::bigint * 7919) % 1000000) / 100.0,
    (ARRAY['placed', 'paid', 'shipped', 'delivered', 'returned', 'refunded'])[1 + i % 6],
    'order ' || i || ': please leave at the front door, fragile, handle with care',
    i % 3 = 0,
    ((i::bigint * 2654435761) % 1000003)::float8 / 1000003,
    DATE '2026-01-01' + i % 365,
    1 + i % 50,
    CASE WHEN i % 4 = 0 THEN 'SAVE' || (i % 100) END
FROM generate_series(1, :n) AS i"""  # noqa: S608 - constants only

_MYSQL_ROWS = f"""\
SELECT seq,
    TIMESTAMP '2026-01-01 09:00:00' + INTERVAL ((seq - 1) DIV {TIE}) SECOND,
    ((seq * 7919) % 1000000) / 100.0,
    ELT(1 + seq % 6, 'placed', 'paid', 'shipped', 'delivered', 'returned', 'refunded'),
    CONCAT('order ', seq, ': please leave at the front door, fragile, handle with care'),
    seq % 3 = 0,
    ((seq * 2654435761) % 1000003) / 1000003e0,
    DATE '2026-01-01' + INTERVAL (seq % 365) DAY,
    1 + seq % 50,
    CASE WHEN seq % 4 = 0 THEN CONCAT('SAVE', seq % 100) END
FROM seq_1_to_{{n}}"""  # noqa: S608 - constants; n formatted as an int


@dataclass(frozen=True, slots=True)
class Source:
    """A database to benchmark against: its URL and a short label."""

    label: str
    url: str

    def describe(self) -> str:
        """Dialect, server version and driver, as SQLAlchemy sees them."""
        engine = sa.create_engine(self.url)
        try:
            with engine.connect():
                info = engine.dialect.server_version_info or ()
            version = ".".join(map(str, info))
            return f"{engine.dialect.name} {version} ({engine.dialect.driver})"
        finally:
            engine.dispose()


def create_table(url: str, table: str, n: int) -> None:
    """Create `table` with rows 1..`n`, its (updated_at, id) index and fresh statistics."""
    engine = sa.create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    columns = _COLUMNS.format(
        timestamp="TIMESTAMP" if postgres else "DATETIME",
        double="DOUBLE PRECISION" if postgres else "DOUBLE",
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {table} (\n{columns}\n)"))
            if postgres:
                conn.execute(sa.text(f"INSERT INTO {table} {_POSTGRES_ROWS}"), {"n": n})
            else:  # the sequence engine's table names carry the bound
                conn.execute(sa.text(f"INSERT INTO {table} {_MYSQL_ROWS.format(n=int(n))}"))
            # the index akkiosync's README advises for a watermark + key job
            conn.execute(sa.text(f"CREATE INDEX {table}_cursor ON {table} (updated_at, id)"))
            conn.execute(sa.text(f"ANALYZE {table}" if postgres else f"ANALYZE TABLE {table}"))
    finally:
        engine.dispose()


def drop_table(url: str, table: str) -> None:
    """Drop `table` if it exists."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


def first_rows(url: str, table: str, n: int) -> list[dict[str, object]]:
    """The table's first `n` rows by id, as dicts of driver values."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT * FROM {table} ORDER BY id LIMIT {int(n)}")  # noqa: S608 - ours
            return [dict(row) for row in conn.execute(query).mappings()]
    finally:
        engine.dispose()
