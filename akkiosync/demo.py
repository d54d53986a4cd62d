"""``akkiosync demo``: the whole path on embedded defaults, with no configuration or network.

A generated shop database (SQLite) with customers and orders, the Akkio emulator on a free
loopback port, and two job files written exactly as a user would write them. It syncs, adds
and updates rows, syncs again to show the increment (with one answer lost after Akkio stored
the rows, to show that nothing is sent twice), and prints what landed.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from akkiosync.akkio import AkkioClient
from akkiosync.config import load_jobs
from akkiosync.emulator import Emulator, FaultPlan, serve
from akkiosync.results import RunResult
from akkiosync.runner import Runner
from akkiosync.state import Store

DEMO_API_KEY = "demo-key"
CUSTOMERS_JOB = """\
# The customers table: an update bumps updated_at, so changed customers are sent again.
schedule: 5m
source:
  url: ${DEMO_DB_URL}
  table: customers
  watermark: updated_at
  key: id
target:
  dataset: Demo customers
batch_size: 500
"""
ORDERS_JOB = """\
# Orders are append-only; many share one created_at second, which the key keeps exact.
schedule: "*/5 * * * *"
source:
  url: ${DEMO_DB_URL}
  table: orders
  watermark: created_at
  key: id
target:
  dataset: Demo orders
batch_size: 1000
columns:
  exclude: [internal_note]
  rename: {amount: amount_usd}
"""

_metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("vip", sa.Boolean, nullable=False),
    sa.Column("signed_up", sa.Date, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
)
orders = sa.Table(
    "orders",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer_id", sa.Integer, nullable=False),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("internal_note", sa.String(200)),
    sa.Column("created_at", sa.DateTime, nullable=False, index=True),
)
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances", "Tim", "Radia", "Linus")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Allen", "Berners-Lee")
_COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "NG")
_STATUSES = ("placed", "paid", "shipped", "delivered", "returned")
_START = dt.datetime(2026, 1, 1, 9, 0, 0)  # noqa: DTZ001 - naive on purpose: a DATETIME column


def _customers(rng: random.Random, ids: range, when: dt.datetime) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "country": rng.choice(_COUNTRIES),
            "vip": rng.random() < 0.1,
            "signed_up": (when - dt.timedelta(days=rng.randint(0, 900))).date(),
            "updated_at": when + dt.timedelta(seconds=i // 7),  # ties: 7 customers per second
        }
        for i in ids
    ]


def _orders(
    rng: random.Random, ids: range, customer_count: int, when: dt.datetime
) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "customer_id": rng.randint(1, customer_count),
            "amount": Decimal(rng.randint(199, 99_999)) / 100,
            "quantity": rng.randint(1, 5),
            "status": rng.choice(_STATUSES),
            "internal_note": "do not export",
            # Several orders per second, with microseconds on some: ties and precision both.
            "created_at": when + dt.timedelta(seconds=i // 5, microseconds=(i % 2) * 250_000),
        }
        for i in ids
    ]


def run_demo(order_count: int, echo: Callable[[str], None] = print) -> None:
    """Run the demo end to end, printing what happens."""
    rng = random.Random(20261128)  # noqa: S311 - sample data, not cryptography
    customer_count = max(order_count // 4, 5)
    with tempfile.TemporaryDirectory(prefix="akkiosync-demo-") as tmp:
        root = Path(tmp)
        db_url = f"sqlite:///{root / 'shop.db'}"
        engine = sa.create_engine(db_url)
        _metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(customers.insert(), _customers(rng, range(1, customer_count + 1), _START))
            conn.execute(
                orders.insert(), _orders(rng, range(1, order_count + 1), customer_count, _START)
            )
        echo(
            f"sample database {root / 'shop.db'}: {customer_count} customers, {order_count} orders"
        )

        (root / "config" / "jobs").mkdir(parents=True)
        (root / "config" / "jobs" / "customers.yaml").write_text(CUSTOMERS_JOB)
        (root / "config" / "jobs" / "orders.yaml").write_text(ORDERS_JOB)
        jobs = load_jobs(root / "config", env={"DEMO_DB_URL": db_url})

        emu = Emulator(api_key=DEMO_API_KEY)
        with serve(emu) as server, AkkioClient(DEMO_API_KEY, server.url) as client:
            echo(f"Akkio emulator on {server.url}")
            store = Store.open(root / "state" / "akkiosync.db")
            try:
                runner = Runner(store, client)
                echo("\nfirst sync (creates the datasets):")
                for job in jobs:
                    result = runner.run(job)
                    echo(f"  {job.name}: {_summary(result)}")

                later = _START + dt.timedelta(days=1)
                new_orders = range(order_count + 1, order_count + 1 + order_count // 10)
                changed = rng.sample(range(1, customer_count + 1), k=min(25, customer_count))
                with engine.begin() as conn:
                    conn.execute(orders.insert(), _orders(rng, new_orders, customer_count, later))
                    conn.execute(
                        customers.update()
                        .where(customers.c.id.in_(changed))
                        .values(vip=True, updated_at=later)
                    )
                echo(f"\nadded {len(new_orders)} orders and updated {len(changed)} customers")
                echo("second sync (only what is new):")
                # Rehearse the failure every other tool turns into duplicates: Akkio stores a
                # batch but the answer never arrives.
                emu.set_faults(FaultPlan(script=["drop_after"], only="add"))
                for job in jobs:
                    result = runner.run(job)
                    echo(f"  {job.name}: {_summary(result)}")
                if emu.fault_counts()["drop_after"]:
                    echo(
                        "  (the emulator lost the answer to one batch after storing it; the row "
                        "count showed it had landed, so nothing was sent twice)"
                    )
            finally:
                store.close()
                engine.dispose()

            echo("\nwhat landed in Akkio:")
            for ref in client.list_datasets():
                info = client.get_dataset(ref.id)
                fields = ", ".join(f"{f.name}:{f.type}" for f in info.fields)
                echo(f"  {info.name} ({info.id}): {info.rows} rows; fields {fields}")
                echo(f"    first row: {emu.rows(ref.id)[0]}")


def _summary(result: RunResult) -> str:
    text = f"{result.status}, {result.rows_sent} rows in {result.batches} batches"
    return f"{text}: {result.error}" if result.error else text
