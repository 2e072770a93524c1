"""core.propagation on a virtual clock: reachability only after propagation, a burst's backlog
and the growing age of its oldest item, and ``propagation-throttle`` bounding both; then the
whole chain DWFM -> launcher -> Network Manager after a store outage."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from dnsrace.core import dwfm, launching, nlb, propagation

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


def _chain(leases: tuple[Snapshots, list[str]], safeguards: bool) -> dict[str, float]:
    """DWFM's lease timeline -> launcher (1/s, retried every ~10 s) -> Network Manager (2/s)
    -> one NLB whose targets are every launched instance, with propagation-throttle and
    velocity-control both off or both on."""
    view, droplets = leases
    launcher = launching.Launcher(launching.LauncherParams(), launching.spread(droplets),
                                  random.Random(2), start=0.0)
    manager = propagation.NetworkManager(
        RATE, start=0.0, throttle=propagation.PropagationThrottle() if safeguards else None)
    velocity = nlb.VelocityControl() if safeguards else None
    lb = nlb.Nlb(nlb.NlbParams(), random.Random(3), start=0.0, velocity=velocity)
    launched_at: dict[str, float] = {}
    unreachable_for: list[float] = []
    worst_backlog, worst_age = 0, 0.0
    before: dict[str, float] = {}
    lowest_share = 1.0
    all_out = some_out = 0
    worst_window = 0.0
    t = 0.0
    while t < 720.0:
        t += 1.0
        for attempt in launcher.advance(t, view, manager):
            if attempt.instance is not None:
                manager.enqueue(attempt.instance, attempt.t)
                launched_at[attempt.instance] = attempt.t
                lb.register(attempt.instance, attempt.az, attempt.t)
        for done in manager.advance(t):
            unreachable_for.append(done.t - launched_at[done.instance])
        worst_backlog = max(worst_backlog, manager.backlog)
        worst_age = max(worst_age, manager.oldest_age(t))
        published = lb.check(t, lambda name, _t: manager.reachable(name))
        if t == 60.0:
            before = dict(published.capacity)
        if t > 60.0:
            lowest_share = min(lowest_share,
                               *(published.capacity[az] / before[az] for az in before))
        all_out += published.fail_open
        some_out += bool(published.failed_over) and not published.fail_open
        worst_window = max(worst_window, lb.removed_in_window(t))
    return {"backlog": worst_backlog, "age": worst_age, "unreachable": max(unreachable_for),
            "limited": launcher.failures[launching.REQUEST_LIMIT_EXCEEDED],
            "pending": launcher.figures(t).pending, "backlog_end": manager.backlog,
            "lowest_share": lowest_share, "fail_open_s": all_out, "az_out_s": some_out,
            "failovers": lb.az_failovers, "removed_healthy": lb.removed_healthy,
            "worst_window": worst_window, "flips": lb.flips}


@pytest.fixture(scope="module")
def chains(leases: tuple[Snapshots, list[str]]) -> dict[bool, dict[str, float]]:
    return {on: _chain(leases, on) for on in (False, True)}


def test_the_burst_after_recovery_without_and_with_the_throttle(
        chains: dict[bool, dict[str, float]]) -> None:
    off, on = chains[False], chains[True]
    assert off["backlog"] > 200, "about 290 requests waited out the outage"
    assert off["age"] > 100.0
    assert off["unreachable"] > 100.0, "instances running without connectivity for minutes"
    assert off["limited"] == 0
    assert on["backlog"] <= 20
    assert on["age"] <= 20 / RATE.rate + 1.0
    assert on["unreachable"] <= 20 / RATE.rate + 1.0
    assert on["limited"] > 100, "the wait moved to the API: RequestLimitExceeded"
    assert off["pending"] == on["pending"] == 0
    assert off["backlog_end"] <= 1
    assert on["backlog_end"] <= 1


def test_the_chain_to_the_nlb_without_and_with_the_safeguards(
        chains: dict[bool, dict[str, float]]) -> None:
    """Instances launched in the burst come into service unreachable: without the safeguards
    their AZs fail over (all at once, which fails open, then some, which removes the capacity
    the instances from before the outage were serving); with them the backlog stays short and
    no AZ ever serves less than it did before the outage."""
    off, on = chains[False], chains[True]
    assert off["failovers"] >= 3
    assert off["fail_open_s"] > 0
    assert off["az_out_s"] > 0
    assert off["lowest_share"] == 0.0
    assert off["removed_healthy"] > 100
    assert on["lowest_share"] >= 1.0
    assert on["worst_window"] <= nlb.VelocityControl().max_removed
    assert on["fail_open_s"] == on["az_out_s"] == 0
    assert on["flips"] > 0, "new targets still fail their first checks, briefly"
