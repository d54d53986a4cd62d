"""The lookback ledger: re-read a window behind the checkpoint, send only what is new.

A transaction that commits late can make rows appear *behind* the checkpoint. With
``lookback``, every run re-reads the rows whose watermark lies within the window behind the
checkpoint and sends only those whose identity, ``(watermark, key)``, is not in the ledger of
rows already sent. An updated row has a new watermark, so it is a new identity and is sent.
The ledger keeps only the entries inside the window, so its size is bounded by the number of
rows whose watermarks fall within one lookback window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from akkiosync.cursor import Cursor, encode_cursor, position

Back = dt.timedelta | int


def span(back: Back) -> float:
    """The window's length on the same axis as ``position``."""
    return back.total_seconds() if isinstance(back, dt.timedelta) else float(back)


class Ledger:
    """The rows a lookback job sent within its window; what a batch adds to it."""

    def __init__(self, back: Back, sent: set[str]) -> None:
        self.back = back
        self._sent = sent

    @staticmethod
    def since(cursor: Cursor | None, back: Back) -> float | None:
        """The position from which ledger entries matter for a read at ``cursor``."""
        return None if cursor is None else _window_start(cursor, back)

    def fresh(
        self, rows: Sequence[Sequence[Any]], width: int
    ) -> tuple[list[Sequence[Any]], list[tuple[str, float]]]:
        """The rows not sent before, and their ledger entries; ``width`` is where each row's
        cursor columns (watermark, then key) begin."""
        rows_out: list[Sequence[Any]] = []
        entries: list[tuple[str, float]] = []
        for row in rows:
            identity = encode_cursor(Cursor(row[width], tuple(row[width + 1 :])))
            if identity in self._sent:
                continue
            self._sent.add(identity)
            rows_out.append(row)
            entries.append((identity, position(row[width])))
        return rows_out, entries

    def prune_below(self, cursor: Cursor) -> float:
        """Entries positioned below this can no longer fall inside a window."""
        return _window_start(cursor, self.back)


# Float positions can round: keep a unit more than the window so a boundary row is never
# forgotten while the database still counts it inside.
_SLACK = 1.0


def _window_start(cursor: Cursor, back: Back) -> float:
    return position(cursor.watermark) - span(back) - _SLACK


def later(a: Cursor | None, b: Cursor) -> Cursor:
    """The cursor further along by watermark (a lookback read may end behind the checkpoint)."""
    if a is None or position(b.watermark) >= position(a.watermark):
        return b
    return a
