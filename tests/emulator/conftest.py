"""Fixtures for the emulator's own tests: one emulator, reached in-process and over a socket."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from akkiosync.emulator import DEFAULT_API_KEY, Emulator, EmulatorServer, serve

KEY = DEFAULT_API_KEY


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh emulator with the default key; nothing of it is left landing after the test."""
    emulator = Emulator()
    yield emulator
    assert emulator.settle(10), "a late change was still pending 10 s after the test"


@pytest.fixture
def local(emu: Emulator) -> Iterator[httpx.Client]:
    """An httpx client wired to `emu` in-process (conftest's `client` is the AkkioClient)."""
    with httpx.Client(transport=emu.transport(), base_url="http://emulator/v1") as c:
        yield c


@pytest.fixture
def server(emu: Emulator) -> Iterator[EmulatorServer]:
    """``emu`` on a loopback port."""
    with serve(emu) as running:
        yield running


@pytest.fixture
def http(server: EmulatorServer) -> Iterator[httpx.Client]:
    """An httpx client on ``server``."""
    # trust_env=False: a proxy from the environment must not intercept loopback traffic.
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as c:
        yield c


@pytest.fixture(params=["in-process", "loopback"])
def any_client(request: pytest.FixtureRequest) -> httpx.Client:
    """The same behaviour must hold through the MockTransport and over a real socket."""
    fixture = "local" if request.param == "in-process" else "http"
    c: httpx.Client = request.getfixturevalue(fixture)
    return c
