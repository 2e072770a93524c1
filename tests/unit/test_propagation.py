"""core.propagation on a virtual clock: reachability only after propagation, a burst's backlog
and the growing age of its oldest item, and ``propagation-throttle`` bounding both; then the
whole chain DWFM -> launcher -> Network Manager after a store outage."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from dnsrace.core import dwfm, launching, propagation

RATE = propagation.PropagationParams()  # 2 states per second


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="rate must be more than 0 states per second"):
        propagation.PropagationParams(rate=0)
    with pytest.raises(ValueError, match="max_backlog must be at least 1"):
        propagation.PropagationThrottle(max_backlog=0)
    manager = propagation.NetworkManager(RATE, start=0.0)
    with pytest.raises(ValueError, match="kind must be launch or terminate"):
        manager.enqueue("i-1", 0.0, "reboot")


def test_reachable_only_once_propagated_in_order() -> None:
    manager = propagation.NetworkManager(RATE, start=0.0)
    for i in range(4):
        manager.enqueue(f"i-{i}", 0.0)
    assert manager.advance(0.4) == []
    assert not manager.reachable("i-0")
    done = manager.advance(2.0)
    assert [(p.instance, p.t) for p in done] == [("i-0", 0.5), ("i-1", 1.0), ("i-2", 1.5),
                                                 ("i-3", 2.0)]
    assert manager.reachable("i-3")
    manager.enqueue("i-0", 5.0, propagation.TERMINATE)
    manager.advance(5.4)
    assert manager.reachable("i-0")
    assert [p.t for p in manager.advance(6.0)] == [5.5]
    assert not manager.reachable("i-0")


def test_a_burst_builds_a_backlog_whose_oldest_age_grows() -> None:
    """100 launches in 10 s against 2 propagations a second."""
    manager = propagation.NetworkManager(RATE, start=0.0)
    ages, backlogs = [], []
    t = 0.0
    while t < 70.0:
        t = round(t + 0.1, 6)
        if t <= 10.0:
            manager.enqueue(f"i-{round(t * 10)}", t)
        manager.advance(t)
        ages.append(manager.oldest_age(t))
        backlogs.append(manager.backlog)
    assert max(backlogs) == pytest.approx(80, abs=2)
    growing = ages[:100]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(growing))
    assert max(ages) == pytest.approx(40.0, abs=1.0), "the last of 100 waits 100/2 - 10 s"
    assert manager.propagated == 100
    assert manager.backlog == 0
    assert manager.last_wait == pytest.approx(40.0, abs=0.6)


def test_throttle_bounds_the_backlog_and_its_age() -> None:
    throttle = propagation.PropagationThrottle(max_backlog=20)
    manager = propagation.NetworkManager(RATE, start=0.0, throttle=throttle)
    admitted = refused = 0
    worst_backlog, worst_age = 0, 0.0
    t = 0.0
    while t < 70.0:
        t = round(t + 0.1, 6)
        if t <= 10.0:
            if manager.admit(t):
                manager.enqueue(f"i-{round(t * 10)}", t)
                admitted += 1
            else:
                refused += 1
        manager.advance(t)
        worst_backlog = max(worst_backlog, manager.backlog)
        worst_age = max(worst_age, manager.oldest_age(t))
    assert worst_backlog <= throttle.max_backlog
    assert worst_age <= throttle.max_backlog / RATE.rate + 1.0
    assert refused > 50
    assert admitted == manager.propagated == manager.admitted


class Snapshots:
    """DWFM's lease view recorded once a second, replayed to each launcher (the lease timeline
    does not depend on what happens downstream)."""

    def __init__(self, views: dict[int, list[str]]) -> None:
        self.views = views

    def valid(self, now: float) -> list[str]:
        return self.views[math.ceil(now)]


@pytest.fixture(scope="module")
def leases() -> tuple[Snapshots, list[str]]:
    """DWFM (throttled, so it recovers) through a 5-minute store outage from t = 60 s."""
    fleet = dwfm.Dwfm(dwfm.DwfmParams(), dwfm.MemoryLeaseStore([(60.0, 360.0)]),
                      random.Random(1), start=0.0, throttle=dwfm.Throttle())
    fleet.provision(0.0)
    views = {}
    for t in range(1, 721):
        fleet.advance(float(t))
        views[t] = fleet.valid(float(t))
    return Snapshots(views), list(fleet.droplets)


def _cascade(leases: tuple[Snapshots, list[str]],
             throttle: propagation.PropagationThrottle | None) -> dict[str, float]:
    """The launcher at 1/s retrying every ~10 s, the Network Manager at 2/s: the burst after
    DWFM recovers."""
    view, droplets = leases
    launcher = launching.Launcher(launching.LauncherParams(), launching.spread(droplets),
                                  random.Random(2), start=0.0)
    manager = propagation.NetworkManager(RATE, start=0.0, throttle=throttle)
    launched_at: dict[str, float] = {}
    unreachable_for: list[float] = []
    worst_backlog, worst_age = 0, 0.0
    t = 0.0
    while t < 720.0:
        t += 1.0
        for attempt in launcher.advance(t, view, manager):
            if attempt.instance is not None:
                manager.enqueue(attempt.instance, attempt.t)
                launched_at[attempt.instance] = attempt.t
        for done in manager.advance(t):
            unreachable_for.append(done.t - launched_at[done.instance])
        worst_backlog = max(worst_backlog, manager.backlog)
        worst_age = max(worst_age, manager.oldest_age(t))
    return {"backlog": worst_backlog, "age": worst_age, "unreachable": max(unreachable_for),
            "limited": launcher.failures[launching.REQUEST_LIMIT_EXCEEDED],
            "pending": launcher.figures(t).pending, "backlog_end": manager.backlog}


def test_the_burst_after_recovery_without_and_with_the_throttle(
        leases: tuple[Snapshots, list[str]]) -> None:
    off = _cascade(leases, None)
    assert off["backlog"] > 200, "about 290 requests waited out the outage"
    assert off["age"] > 100.0
    assert off["unreachable"] > 100.0, "instances running without connectivity for minutes"
    assert off["limited"] == 0
    on = _cascade(leases, propagation.PropagationThrottle(max_backlog=20))
    assert on["backlog"] <= 20
    assert on["age"] <= 20 / RATE.rate + 1.0
    assert on["unreachable"] <= 20 / RATE.rate + 1.0
    assert on["limited"] > 100, "the wait moved to the API: RequestLimitExceeded"
    assert off["pending"] == on["pending"] == 0
    assert off["backlog_end"] <= 1
    assert on["backlog_end"] <= 1
