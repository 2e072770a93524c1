"""core.dwfm on a virtual clock: leases held in steady state, the congestive collapse after a
long store outage emerging from the queue and its deadlines, metastability (a short outage heals
by itself), and recovery with ``dwfm-throttle`` and ``restart``.

The fleet is ``DwfmParams()``'s: 300 droplets, state checks every 5 s, 12 s leases, 4 workers
of 1 s per item (4 leases/s), 12 s deadlines (docs/cascade.md)."""

from __future__ import annotations

import copy
import random

import pytest

from dnsrace.core import dwfm

P = dwfm.DwfmParams()
TH = dwfm.Throttle()
OUTAGE = (60.0, 660.0)
"""The store unreachable for 10 minutes, one minute in."""
BACK = OUTAGE[1]


def _fleet(outages: list[tuple[float, float]], *, throttle: dwfm.Throttle | None = None,
           seed: int = 1, params: dwfm.DwfmParams = P) -> tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore]:
    store = dwfm.MemoryLeaseStore(outages)
    fleet = dwfm.Dwfm(params, store, random.Random(seed), start=0.0, throttle=throttle)
    assert fleet.provision(0.0) == params.droplets
    return fleet, store


def _run(fleet: dwfm.Dwfm, until: float, step: float = 1.0) -> list[dwfm.Figures]:
    out = []
    t = fleet.now
    while t < until - 1e-9:
        t = min(until, t + step)
        fleet.advance(t)
        out.append(fleet.figures(t))
    return out


@pytest.fixture(scope="module")
def collapsed() -> tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore, list[dwfm.Figures]]:
    """The fleet without the throttle, 5 minutes after the store came back (t = 960)."""
    fleet, store = _fleet([OUTAGE])
    _run(fleet, BACK, step=5.0)
    return fleet, store, _run(fleet, BACK + 300.0)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match=r"lease_ttl \(5.0 s\) must be longer than "
                                         r"check_interval"):
        dwfm.DwfmParams(lease_ttl=5.0, check_interval=5.0)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        dwfm.DwfmParams(workers=0)
    with pytest.raises(ValueError, match="service_time must be more than 0"):
        dwfm.DwfmParams(service_time=0)
    with pytest.raises(ValueError, match="max_queue must be at least 1"):
        dwfm.Throttle(max_queue=0)
    assert P.capacity == 4.0
    assert P.useful_queue == 44


def test_steady_state_renews_every_lease_without_queueing() -> None:
    fleet, store = _fleet([])
    figures = _run(fleet, 60.0)
    assert all(f.leases_valid == 300 for f in figures)
    last = figures[-1]
    assert (last.admitted, last.queue_depth, last.renewals_failed) == (0, 0, 0)
    assert last.renewals == pytest.approx(300 * 60 / 5, abs=300)
    assert store.errors == 0


@pytest.mark.parametrize(("outage", "heals"), [(6.0, True), (8.0, False)])
def test_metastable_short_outage_heals_long_one_does_not(outage: float, heals: bool) -> None:
    """A 6 s outage expires about 60 leases: their items fit in their deadlines and the fleet
    heals. An 8 s one expires about 180: the queue outgrows its deadlines and stays that way,
    though the store is back and nothing else is wrong."""
    fleet, _ = _fleet([(60.0, 60.0 + outage)])
    figures = _run(fleet, 400.0)
    lowest = min(f.leases_valid for f in figures)
    assert lowest < 300, "some leases expired"
    last = figures[-1]
    if heals:
        assert last.leases_valid == 300
        assert last.wasted < last.useful / 2
    else:
        assert 300 - lowest > P.useful_queue
        assert last.leases_valid < 200
        assert last.goodput == 0.0
        assert last.queue_age > P.deadline
        tail = [f for f in figures if f.t >= 300.0]
        assert max(f.leases_valid for f in tail) == min(f.leases_valid for f in tail), \
            "stuck: no lease gained for 100 s"


def test_long_outage_collapses_without_the_throttle(
        collapsed: tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore, list[dwfm.Figures]]) -> None:
    _, _, figures = collapsed
    at_back = figures[0]
    last = figures[-1]
    useful = last.useful - at_back.useful
    assert useful < 0.10 * P.capacity * 300, "goodput over 5 minutes is under 10 % of capacity"
    assert max(f.leases_valid for f in figures) < 0.10 * 300
    assert last.wasted - at_back.wasted > 0.9 * P.capacity * 300, "the workers were busy"
    assert all(f.goodput < 0.2 for f in figures if f.t >= BACK + 15.0), \
        "metastable by moonpool's yardstick: goodput share under 0.2 from 15 s after recovery"
    assert all(f.queue_age > P.deadline for f in figures)
    assert last.queue_depth > 250


def test_throttle_recovers_every_lease_within_the_bound() -> None:
    fleet, _ = _fleet([OUTAGE], throttle=TH)
    _run(fleet, BACK, step=5.0)
    bound = dwfm.recovery_bound(P, TH)
    assert bound == pytest.approx(95.5)
    wasted = fleet.wasted
    figures = _run(fleet, BACK + bound, step=0.5)
    first_95 = next(f.t for f in figures if f.leases_valid >= 0.95 * 300)
    assert first_95 - BACK <= bound
    assert figures[-1].leases_valid == 300
    assert fleet.wasted == wasted == 0, "no admitted item missed its deadline"
    assert max(f.queue_depth for f in figures) <= TH.max_queue
    assert max(f.queue_age for f in figures) < P.deadline
    assert first_95 - BACK >= 0.95 * 300 / P.capacity - 1, "bounded by the workers, no faster"


def test_restart_alone_collapses_again(
        collapsed: tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore, list[dwfm.Figures]]) -> None:
    fleet = copy.deepcopy(collapsed[0])
    now = fleet.now
    assert fleet.restart(now) > 250
    assert not fleet.queue
    figures = _run(fleet, now + 200.0)
    assert figures[-1].leases_valid < 0.5 * 300
    assert figures[-1].goodput == 0.0


def test_restart_with_throttle_recovers_a_collapsed_fleet(
        collapsed: tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore, list[dwfm.Figures]]) -> None:
    fleet = copy.deepcopy(collapsed[0])
    now = fleet.now
    fleet.set_throttle(TH)
    fleet.restart(now)
    figures = _run(fleet, now + 120.0, step=0.5)
    first_95 = next(f.t for f in figures if f.leases_valid >= 0.95 * 300)
    assert first_95 - now <= dwfm.recovery_bound(P, TH)
    assert figures[-1].leases_valid == 300
    assert figures[-1].wasted == collapsed[0].wasted, "nothing wasted after the restart"


def test_throttle_alone_recovers_later_than_with_a_restart(
        collapsed: tuple[dwfm.Dwfm, dwfm.MemoryLeaseStore, list[dwfm.Figures]]) -> None:
    """Without the restart the stale queue is worked off (and wasted) first."""
    fleet = copy.deepcopy(collapsed[0])
    now = fleet.now
    fleet.set_throttle(TH)
    figures = _run(fleet, now + 200.0)
    first_95 = next(f.t for f in figures if f.leases_valid >= 0.95 * 300)
    assert first_95 - now > dwfm.recovery_bound(P, TH)
    assert first_95 - now <= dwfm.recovery_bound(P, TH) + 300 / P.capacity


def test_same_seed_same_run_whatever_the_step() -> None:
    outages = [(20.0, 40.0)]
    one, _ = _fleet(outages, throttle=TH, seed=7)
    many, _ = _fleet(outages, throttle=TH, seed=7)
    one.advance(120.0)
    _run(many, 120.0, step=0.037)
    assert one.figures(120.0) == many.figures(120.0)
    assert one.expires == many.expires


def test_condition_failure_sends_the_droplet_to_the_queue() -> None:
    """The store says the lease is gone (another writer, a lost item): DWFM re-establishes it."""
    fleet, store = _fleet([], params=dwfm.DwfmParams(droplets=3))
    store.expires.pop("droplet-001")
    fleet.advance(6.0)
    assert fleet.renewals_failed == 1
    assert fleet.admitted == 1
    fleet.advance(8.0)
    assert fleet.useful == 1
    assert sorted(fleet.valid(8.0)) == ["droplet-000", "droplet-001", "droplet-002"]


def test_unreachable_store_at_start_leaves_every_droplet_asking() -> None:
    store = dwfm.MemoryLeaseStore([(0.0, 1.0)])
    fleet = dwfm.Dwfm(dwfm.DwfmParams(droplets=4), store, random.Random(1), start=0.0)
    assert fleet.leases_valid(0.0) == 0
    fleet.advance(10.0)
    assert fleet.leases_valid(10.0) == 4


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(3)
    delays = [TH.backoff(n, rng) for n in range(1, 12) for _ in range(50)]
    assert max(delays) <= TH.backoff_cap
    assert len({round(d, 6) for d in delays}) == len(delays)
    assert max(TH.backoff(1, rng) for _ in range(100)) <= TH.backoff_base


def test_time_cannot_go_backwards() -> None:
    fleet, _ = _fleet([], params=dwfm.DwfmParams(droplets=2))
    fleet.advance(5.0)
    with pytest.raises(ValueError, match="time went backwards"):
        fleet.advance(4.0)
