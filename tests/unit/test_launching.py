"""core.launching on a virtual clock: placement on leased droplets only, InsufficientCapacity
while DWFM's leases are expired, the retried requests' burst once they return, and the gate's
RequestLimitExceeded."""

from __future__ import annotations

import collections
import random
from collections.abc import Sequence

import pytest

from dnsrace.core import dwfm, launching


class Leased:
    """A fixed lease view."""

    def __init__(self, droplets: Sequence[str]) -> None:
        self.droplets = list(droplets)

    def valid(self, now: float) -> Sequence[str]:
        return self.droplets


class Shut:
    """A gate that refuses until ``opens``."""

    def __init__(self, opens: float) -> None:
        self.opens = opens

    def admit(self, now: float) -> bool:
        return now >= self.opens


FLEET = dwfm.droplet_names(6)
PLACEMENT = launching.spread(FLEET)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="rate must be more than 0"):
        launching.LauncherParams(rate=0)
    with pytest.raises(ValueError, match="slots must be at least 1"):
        launching.LauncherParams(slots=0)
    with pytest.raises(ValueError, match="azs must name at least one"):
        launching.spread(FLEET, ())


def test_placement_respects_leases_azs_and_slots() -> None:
    leased = Leased([d for d in FLEET if d != "droplet-000"])  # one droplet of 1a has no lease
    launcher = launching.Launcher(launching.LauncherParams(rate=1.0, slots=2), PLACEMENT,
                                  random.Random(1), start=0.0)
    attempts = launcher.advance(30.0, leased)
    assert [a.t for a in attempts[:3]] == [1.0, 2.0, 3.0]
    launched = [a for a in attempts if a.outcome == launching.LAUNCHED]
    assert len(launched) == 10, "1a has 1 leased droplet, 1b and 1c 2 each: 5 x 2 slots"
    per_droplet = collections.Counter(a.droplet for a in launched)
    assert max(per_droplet.values()) == 2
    assert "droplet-000" not in per_droplet
    assert all(PLACEMENT[str(a.droplet)] == a.az for a in launched)
    failed = [a for a in attempts if a.outcome == launching.FAILED]
    assert failed
    assert {a.reason for a in failed} == {launching.INSUFFICIENT_CAPACITY}
    freed = launcher.terminate(str(launched[0].instance))
    assert freed is not None
    retry = launcher.advance(60.0, leased)
    assert any(a.outcome == launching.LAUNCHED and a.droplet == freed.droplet for a in retry)


def test_refused_launches_are_retried_and_jittered() -> None:
    launcher = launching.Launcher(launching.LauncherParams(rate=1.0, retry_after=10.0, slots=20),
                                  PLACEMENT, random.Random(2), start=0.0)
    attempts = launcher.advance(25.0, Leased(FLEET), Shut(opens=20.0))
    early = [a for a in attempts if a.t < 20.0]
    assert {(a.outcome, a.reason) for a in early} == \
        {(launching.FAILED, launching.REQUEST_LIMIT_EXCEEDED)}
    retried = [a for a in attempts if a.attempt == 2]
    assert retried
    assert all(5.0 <= a.waited <= 15.0 for a in retried)
    assert len({round(a.waited, 6) for a in retried}) == len(retried)
    late = launcher.advance(60.0, Leased(FLEET), Shut(opens=20.0))
    assert all(a.outcome == launching.LAUNCHED for a in late)
    assert launcher.figures(60.0).pending == 0


def test_patience_gives_up() -> None:
    launcher = launching.Launcher(
        launching.LauncherParams(rate=1.0, retry_after=10.0, patience=30.0), PLACEMENT,
        random.Random(3), start=0.0)
    attempts = launcher.advance(120.0, Leased([]))
    gave_up = [a for a in attempts if a.outcome == launching.GAVE_UP]
    assert gave_up
    assert all(a.waited <= 30.0 for a in gave_up)
    assert launcher.figures(120.0).pending < 40


def test_insufficient_capacity_while_leases_are_expired_then_a_burst() -> None:
    """DWFM (with its throttle, so it recovers) loses every lease in a 5-minute store outage:
    launches fail InsufficientCapacity from the moment leases run out, the requests pile up,
    and once leases return they are placed together."""
    store = dwfm.MemoryLeaseStore([(60.0, 360.0)])
    fleet = dwfm.Dwfm(dwfm.DwfmParams(), store, random.Random(1), start=0.0,
                      throttle=dwfm.Throttle())
    fleet.provision(0.0)
    launcher = launching.Launcher(launching.LauncherParams(), launching.spread(fleet.droplets),
                                  random.Random(2), start=0.0)
    attempts: list[launching.Attempt] = []
    leases: dict[float, int] = {}
    t = 0.0
    while t < 540.0:
        t += 1.0
        fleet.advance(t)
        leases[t] = fleet.leases_valid(t)
        attempts += launcher.advance(t, fleet)
    expired = min(x for x, n in leases.items() if n == 0)
    assert 60.0 < expired <= 60.0 + dwfm.DwfmParams().lease_ttl + 1
    before = [a for a in attempts if a.t < 60.0]
    assert before
    assert all(a.outcome == launching.LAUNCHED for a in before)
    during = [a for a in attempts if expired <= a.t <= 360.0]
    assert len(during) > 250
    assert all(a.reason == launching.INSUFFICIENT_CAPACITY for a in during)
    back = min(x for x, n in leases.items() if x > 360.0 and n == 300)
    burst = [a for a in attempts
             if a.outcome == launching.LAUNCHED and 360.0 < a.t <= 360.0 + 30.0]
    assert len(burst) > 10 * launcher.params.rate * 30.0 / 3, "the retried requests together"
    assert all(a.outcome == launching.LAUNCHED for a in attempts if a.t > back + 15.0)
    assert launcher.figures(t).pending == 0
    assert launcher.launched == 540


class Outage:
    """No lease valid from ``start`` until ``end``."""

    def __init__(self, droplets: Sequence[str], start: float, end: float) -> None:
        self.droplets, self.start, self.end = list(droplets), start, end

    def valid(self, now: float) -> Sequence[str]:
        return [] if self.start <= now < self.end else self.droplets


def test_lifetime_is_checked() -> None:
    with pytest.raises(ValueError, match="lifetime must be more than 0"):
        launching.LauncherParams(lifetime=0)


def test_with_a_lifetime_the_fleet_settles_whatever_the_run_length() -> None:
    params = launching.LauncherParams(rate=1.0, slots=50, lifetime=30.0)
    sizes = {}
    for length in (100.0, 400.0):
        launcher = launching.Launcher(params, PLACEMENT, random.Random(1), start=0.0)
        for t in range(1, int(length) + 1):
            launcher.advance(float(t), Leased(FLEET))
            launcher.expire(float(t))
        sizes[length] = len(launcher.instances)
        assert launcher.terminated == launcher.launched - len(launcher.instances)
        assert sum(launcher.used.values()) == len(launcher.instances), "slots freed"
    assert sizes[100.0] == sizes[400.0] == 30
    never = launching.Launcher(launching.LauncherParams(rate=1.0, slots=100), PLACEMENT,
                               random.Random(1), start=0.0)
    never.advance(400.0, Leased(FLEET))
    assert never.expire(400.0) == []
    assert len(never.instances) == 400, "without a lifetime the fleet only grows"


def test_a_lease_outage_longer_than_the_lifetime_leaves_only_the_burst() -> None:
    """Launches refused while the leases are gone, old instances ending meanwhile: once leases
    return, the retried requests come in together and make up the whole fleet."""
    params = launching.LauncherParams(rate=1.0, slots=50, lifetime=30.0, retry_after=10.0)
    launcher = launching.Launcher(params, PLACEMENT, random.Random(1), start=0.0)
    leases = Outage(FLEET, 60.0, 120.0)
    launched_at: list[float] = []
    for t in range(1, 151):
        attempts = launcher.advance(float(t), leases)
        launched_at += [a.t for a in attempts if a.outcome == launching.LAUNCHED]
        launcher.expire(float(t))
        if t == 119:
            assert launcher.instances == {}, "every old instance ended during the outage"
            assert len(launcher.pending) >= 55
    assert all(not 60.0 <= t < 120.0 for t in launched_at)
    burst = [t for t in launched_at if 120.0 <= t < 131.0]
    assert len(burst) >= 55, "the requests refused during the outage, placed together"
    assert all(i.launched >= 120.0 for i in launcher.instances.values())
