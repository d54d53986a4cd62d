"""Requests the emulator tests make again and again."""

from __future__ import annotations

from typing import Any

import httpx

from akkiosync.emulator import DEFAULT_API_KEY
from tests.conftest import until

__all__ = ["add", "create", "until"]

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
