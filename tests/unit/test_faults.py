"""Delay faults: which steps they match, and their jitter."""

from __future__ import annotations

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
