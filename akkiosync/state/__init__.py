"""The checkpoint store: each job's dataset, schema, cursor and counters, intents, the
lookback ledger, full refreshes under way, and every run. ``_store`` is the store, ``_schema``
its tables and migrations, ``_records`` the values it returns."""

from __future__ import annotations

from akkiosync.state._records import (
    Creation,
    Intent,
    JobState,
    Refresh,
    RefreshPhase,
    RunCounts,
    RunRecord,
    RunStatus,
)
from akkiosync.state._store import Store

__all__ = [
    "Creation",
    "Intent",
    "JobState",
    "Refresh",
    "RefreshPhase",
    "RunCounts",
    "RunRecord",
    "RunStatus",
    "Store",
]
