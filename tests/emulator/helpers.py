"""Requests the emulator tests make again and again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from akkiosync.emulator import DEFAULT_API_KEY

KEY = DEFAULT_API_KEY


def create(client: httpx.Client, name: str = "orders") -> str:
    """Create a dataset; its id."""
    response = client.post("/datasets", json={"api_key": KEY, "name": name})
    assert response.status_code == 200, response.text
    dataset_id: str = response.json()["dataset_id"]
    return dataset_id


def add(client: httpx.Client, dataset_id: str, rows: Any) -> httpx.Response:
    """Add rows to a dataset; the raw answer."""
    return client.post("/datasets", json={"api_key": KEY, "id": dataset_id, "rows": rows})


def until(what: str, check: Callable[[], Any], deadline: float = 10.0) -> Any:
    """Poll ``check`` until it returns something true; fail after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)
