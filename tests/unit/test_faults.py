"""Delay faults: which steps they match, their jitter, and how their status is written."""

from __future__ import annotations

import asyncio

import pytest

from dnsrace.components import faults


def fault(**kw: object) -> faults.ActiveFault:
    base: dict[str, object] = dict(name="f", action="delay", step="endpoint-write", delay=2.0,
                                   jitter=0.0, endpoints=frozenset(), count=None, duration=None)
    base.update(kw)
    return faults.ActiveFault(**base)  # type: ignore[arg-type]


def test_jitter_stays_within_bounds_and_never_negative() -> None:
    samples = [fault(jitter=0.5).sample() for _ in range(500)]
    assert min(samples) >= 1.5
    assert max(samples) <= 2.5
    assert max(samples) - min(samples) > 0.5, "samples spread across the range"
    assert all(fault(delay=0.1, jitter=1.0).sample() >= 0 for _ in range(200))
    assert fault().sample() == 2.0


def test_matching_by_step_endpoint_and_count() -> None:
    f = fault(endpoints=frozenset({"a.sim.internal"}), count=1)
    assert f.matches("endpoint-write", "a.sim.internal")
    assert not f.matches("endpoint-write", "b.sim.internal")
    assert not f.matches("clean-up", None)
    f.injected = 1
    assert not f.matches("endpoint-write", "a.sim.internal"), "count exhausted"


async def test_status_writes_are_coalesced_and_the_last_count_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(faults, "STATUS_INTERVAL", 0.05)
    table = faults.FaultTable("enactor-a", api=None, namespace="dnsrace")  # type: ignore[arg-type]
    written: list[tuple[int, str]] = []

    async def record(f: faults.ActiveFault, phase: str) -> bool:
        written.append((f.injected, phase))
        return True

    monkeypatch.setattr(table, "_write_status", record)
    table.faults["f"] = fault(delay=0.0)
    for _ in range(200):
        await table.hook("endpoint-write", "a.sim.internal")
    await asyncio.sleep(0.3)
    assert written[0] == (1, "Active"), "the first injection is reported at once"
    assert written[-1] == (200, "Active"), "the last count is always written"
    assert len(written) <= 3, written


async def test_a_status_write_that_failed_is_written_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(faults, "STATUS_INTERVAL", 0.02)
    table = faults.FaultTable("enactor-a", api=None, namespace="dnsrace")  # type: ignore[arg-type]
    attempts: list[int] = []

    async def unreachable_twice(f: faults.ActiveFault, phase: str) -> bool:
        attempts.append(f.injected)
        return len(attempts) > 2  # the API server is back on the third try

    monkeypatch.setattr(table, "_write_status", unreachable_twice)
    table.faults["f"] = fault(delay=0.0)
    await table.hook("endpoint-write", "a.sim.internal")
    await asyncio.sleep(0.2)
    assert attempts == [1, 1, 1], "retried until written, then no more"
