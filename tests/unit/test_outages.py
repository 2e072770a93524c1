"""Which errors a component treats as an outage to wait out (one line) and which as a bug."""

from __future__ import annotations

import aiohttp
from aetcd import exceptions as aetcd_exceptions
from kubernetes_asyncio import client

from dnsrace.components import outages


def test_transport_errors_and_5xx_are_outages() -> None:
    assert outages.describe(ConnectionRefusedError(111, "refused")) is not None
    assert outages.describe(aiohttp.ClientConnectionError("gone")) is not None
    assert outages.describe(TimeoutError()) is not None
    assert outages.describe(aetcd_exceptions.ConnectionFailedError()) is not None
    assert "503" in (outages.describe(client.ApiException(status=503, reason="x")) or "")
    assert outages.describe(client.ApiException(status=429, reason="slow down")) is not None


def test_client_errors_and_bugs_are_not() -> None:
    assert outages.describe(client.ApiException(status=422, reason="Invalid")) is None
    assert outages.describe(KeyError("serial")) is None
    assert outages.describe(ValueError("bad")) is None


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    b = outages.Backoff(base=0.5, cap=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
