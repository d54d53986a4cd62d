"""The datasets of a fake Akkio account, their schema rules, and the journal that keeps them."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)
_ID_ALPHABET = string.ascii_letters + string.digits
# A dash-shaped date first, so that a numeric string such as "20240101" stays a string.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPS = ("create", "add", "delete")  # the journal's entries, as _apply knows them

Row = dict[str, Any]
Fields = list[tuple[str, str]]


@dataclass(eq=False)  # eq=False keeps the exception hashable
class RequestError(Exception):
    """A refused request: the HTTP status and the JSON body to answer with."""

    status: int
    body: dict[str, Any]


def error(status: int, message: str) -> RequestError:
    """A refusal with Akkio's error body."""
    return RequestError(status, {"status": "error", "message": message})


@dataclass
class Dataset:
    """One dataset: its name, its fields (empty until the first rows arrive) and its rows."""

    name: str
    fields: Fields = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


class Store:
    """Datasets by id, oldest first; with a ``data_file`` each change is journalled first.

    A change either lands whole, journal line included, or raises and leaves nothing. With
    ``keep_only``, a row is checked whole but only that field of it is stored (and journalled):
    the counts stay exact while memory stays small. Not thread-safe: the emulator holds its
    lock around every call.
    """

    def __init__(self, data_file: Path | None, keep_only: str | None = None) -> None:
        self.data_file = data_file
        self.keep_only = keep_only
        self.datasets: dict[str, Dataset] = {}
        if data_file is not None:
            data_file.parent.mkdir(parents=True, exist_ok=True)
            if data_file.exists():
                self._replay(data_file)

    def get(self, dataset_id: str) -> Dataset:
        """The dataset, or a 404 refusal."""
        try:
            return self.datasets[dataset_id]
        except KeyError:
            raise error(404, "dataset not found") from None

    def create(self, name: str) -> str:
        """A new empty dataset; returns its fresh id."""
        dataset_id = _new_id()
        while dataset_id in self.datasets:
            dataset_id = _new_id()
        self._journal({"op": "create", "id": dataset_id, "name": name})
        self.datasets[dataset_id] = Dataset(name)
        return dataset_id

    def add_rows(self, dataset_id: str, rows: list[Row]) -> None:
        """Check every row first and journal the batch before storing it: all or nothing."""
        ds = self.get(dataset_id)
        fields = check_rows(ds.fields, rows)
        if not rows:
            return
        if self.keep_only is not None:
            rows = _only(rows, self.keep_only)
        entry: dict[str, Any] = {"op": "add", "id": dataset_id, "rows": rows}
        if not ds.fields:
            entry["fields"] = fields
        self._journal(entry)
        ds.fields = fields
        ds.rows.extend(rows)

    def delete(self, dataset_id: str) -> None:
        """Remove a dataset and its rows."""
        self.get(dataset_id)
        self._journal({"op": "delete", "id": dataset_id})
        del self.datasets[dataset_id]

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
        if data and not _looks_like_journal(data):  # replaying would cut it back to nothing
            raise ValueError(
                f"{path} is not an emulator journal (its first line is no journal entry); "
                "left as it is: pass a new or empty file with --data"
            )
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
            self.datasets[entry["id"]] = Dataset(entry["name"])
        elif op == "add":
            ds = self.datasets[entry["id"]]
            if "fields" in entry:
                ds.fields = [(name, kind) for name, kind in entry["fields"]]
            ds.rows.extend(entry["rows"])
        elif op == "delete":
            del self.datasets[entry["id"]]
        else:
            raise ValueError(f"unknown emulator journal entry {op!r}")


def _looks_like_journal(data: bytes) -> bool:
    """Whether the file's first line is a journal entry (or the first one, cut short)."""
    first, _, rest = data.partition(b"\n")
    if not rest.strip() and first.startswith(b'{"op":'):  # how _journal writes every entry
        return True
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and entry.get("op") in _OPS


def _only(rows: list[Row], name: str) -> list[Row]:
    """Each row cut down to its field `name` (to nothing, if the dataset has no such field)."""
    if name not in rows[0]:  # every row has the same keys: check_rows saw to it
        return [{} for _ in rows]
    return [{name: row[name]} for row in rows]


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def check_rows(fields: Fields, rows: list[Row]) -> Fields:
    """The dataset's fields once `rows` are added; raises if any row's keys differ from them."""
    if rows and not fields:
        if not rows[0]:
            raise error(400, "row 0 has no fields")
        fields = [(name, _infer_type(rows, name)) for name in rows[0]]
    expected = dict.fromkeys(name for name, _ in fields).keys()
    # A batch has thousands of rows: compare them all in one C loop, walk them only to report.
    if all(map(expected.__eq__, map(dict.keys, rows))):
        return fields
    for index, row in enumerate(rows):
        if row.keys() != expected:
            unexpected, missing = sorted(row.keys() - expected), sorted(expected - row.keys())
            raise error(
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
