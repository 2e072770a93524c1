"""The enactor protocol on in-memory stores: the published interleaving, step by step.

A takes an old plan and stalls; B applies a much newer plan; A then writes its old plan on the
regional endpoint; B's clean-up deletes A's plan, whose finalizer removes its records. With the
safeguards off the regional endpoint ends empty and later plans are blocked; with them on, the
same interleaving is harmless.
"""

from __future__ import annotations

from dnsrace.core import enacting, plans, stores
from dnsrace.core.safeguards import Safeguards

REGIONAL = "dynamodb.us-east-1.sim.internal"
FIPS = "dynamodb-fips.us-east-1.sim.internal"


def plan(serial: int) -> plans.Plan:
    return plans.Plan(serial=serial, name=plans.object_name(serial), endpoints=tuple(
        plans.Endpoint(name=n, targets=(plans.Target(f"127.0.10.{1 + serial % 5}", 10),))
        for n in (FIPS, REGIONAL)))  # regional last, as the planner orders it


async def interleave(sg: Safeguards) -> tuple[stores.MemoryRecordStore, enacting.Enactor,
                                              enacting.MemoryPlanStore]:
    rec = stores.MemoryRecordStore()
    pls = enacting.MemoryPlanStore()
    a = enacting.Enactor("enactor-a", rec, pls, sg, keep=5)
    b = enacting.Enactor("enactor-b", rec, pls, sg, keep=5)
    pls.on_delete = b.remove_plan_records  # the finalizer

    pls.add(plan(1))
    taken = await a.take()
    assert taken is not None
    assert await a.newer_than_applied(taken)  # the one-time check passes, then A stalls

    for serial in range(2, 21):
        pls.add(plan(serial))
    newest = await b.take()  # B applies plan 20 to every endpoint, step by step...
    assert newest is not None
    assert newest.serial == 20
    assert await b.newer_than_applied(newest)
    for endpoint in newest.endpoints:
        assert (await b.apply_endpoint(newest, endpoint)).result is enacting.Result.APPLIED

    await a.apply_endpoint(taken, taken.endpoints[-1])  # A's stale write of plan 1
    await b.cleanup(newest)  # ...then B's clean-up: plan 1 is "many generations older"
    return rec, b, pls


async def test_safeguards_off_the_regional_endpoint_ends_empty_and_blocked() -> None:
    rec, _, pls = await interleave(Safeguards())
    regional = await rec.read(REGIONAL)
    assert regional.empty
    assert regional.marker is not None
    assert regional.marker.serial == 1  # pointing at a deleted plan
    assert await pls.get(1) is None

    c = enacting.Enactor("enactor-c", rec, pls, Safeguards(), keep=5)
    pls.add(plan(21))
    report = await c.cycle()
    assert report is not None
    assert [o.reason for o in report.blocked] == ["ActivePlanMissing"]
    assert report.cleaned == []  # a blocked enactor does not clean up

    changed = await enacting.repair(rec, pls)
    assert (REGIONAL, 1, 21) in changed
    assert not (await rec.read(REGIONAL)).empty


async def test_safeguards_on_the_same_interleaving_is_harmless() -> None:
    rec, _, _ = await interleave(Safeguards.parse("on"))
    regional = await rec.read(REGIONAL)
    assert not regional.empty
    assert regional.marker is not None
    assert regional.marker.serial == 20  # fencing refused the backwards write


async def test_fencing_alone_stops_the_stale_write() -> None:
    rec, _, _ = await interleave(Safeguards(fencing=True))
    assert (await rec.read(REGIONAL)).marker == stores.ActiveMarker(20, "enactor-b")


async def test_self_heal_rebuilds_from_the_newest_plan() -> None:
    rec, _, pls = await interleave(Safeguards(self_heal=True))
    assert (await rec.read(REGIONAL)).empty
    pls.add(plan(21))
    c = enacting.Enactor("enactor-c", rec, pls, Safeguards(self_heal=True), keep=5)
    report = await c.cycle()
    assert report is not None
    assert report.outcomes[-1].result is enacting.Result.HEALED
    assert (await rec.read(REGIONAL)).marker == stores.ActiveMarker(21, "enactor-c")


def test_unknown_safeguard_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown safeguard single-writr"):
        Safeguards.parse("fencing,single-writr")
    assert str(Safeguards.parse("on")) == ("fencing,protect-active,no-empty,self-heal,serve-stale,"
                                           "dwfm-throttle,propagation-throttle,velocity-control")


async def test_single_writer_makes_the_others_wait_while_one_applies() -> None:
    rec = stores.MemoryRecordStore()
    pls = enacting.MemoryPlanStore()
    lock = enacting.MemoryWriterLock()
    sg = Safeguards(single_writer=True)
    b = enacting.Enactor("enactor-b", rec, pls, sg, lock=lock)
    pls.add(plan(1))
    assert await lock.acquire("enactor-a") is None  # a is mid-apply (stalled)
    report = await b.cycle()
    assert report is not None
    assert report.skipped == "the writer lease is held by enactor-a"
    assert (await rec.read(REGIONAL)).marker is None
    await lock.release("enactor-a")
    pls.add(plan(2))
    report = await b.cycle()
    assert report is not None
    assert report.complete
    assert lock.holder is None, "released after the cycle"


async def test_no_empty_refuses_to_write_an_endpoint_without_a_usable_target() -> None:
    # The CRD refuses such a plan at the API server; a plan built in code reaches the enactor's
    # own check, which must then leave the endpoint as it was.
    rec = stores.MemoryRecordStore()
    pls = enacting.MemoryPlanStore()
    pls.add(plan(1))
    enactor = enacting.Enactor("enactor-a", rec, pls, Safeguards(no_empty=True))
    assert (await enactor.cycle()) is not None
    drained = plans.Plan(serial=2, endpoints=(
        plans.Endpoint(name=FIPS, targets=(plans.Target("127.0.10.9", 0),)),
        plans.Endpoint(name=REGIONAL, targets=(plans.Target("127.0.10.9", 1),))))
    pls.add(drained)
    report = await enactor.cycle()
    assert report is not None
    assert [(o.endpoint, o.reason) for o in report.blocked] == [(FIPS, "WouldEmpty")]
    fips = await rec.read(FIPS)
    assert not fips.empty
    assert fips.marker is not None
    assert fips.marker.serial == 1
    assert (await rec.read(REGIONAL)).marker == stores.ActiveMarker(2, "enactor-a")


async def test_a_plan_fencing_skipped_everywhere_is_reported_skipped_not_applied() -> None:
    rec = stores.MemoryRecordStore()
    pls = enacting.MemoryPlanStore()
    a = enacting.Enactor("enactor-a", rec, pls, Safeguards(fencing=True))
    b = enacting.Enactor("enactor-b", rec, pls, Safeguards(fencing=True))
    pls.add(plan(1))
    assert await a.take() is not None  # a takes plan 1, then is paused...
    pls.add(plan(2))
    applied = await b.cycle()  # ...while b applies plan 2 everywhere
    assert applied is not None
    assert applied.verdict()[:2] == ("Applied", "Applied")
    report = enacting.CycleReport(serial=1)
    await a._apply(plans.Plan(serial=1, endpoints=plan(1).endpoints), report)
    assert report.skipped == "plan 1 is not newer than the applied plan"
    # Past the one-time check (taken before plan 2 landed), each write is skipped by fencing.
    walk = enacting.CycleReport(serial=1, outcomes=[
        await a.apply_endpoint(plan(1), e) for e in plan(1).endpoints])
    assert walk.complete
    phase, reason, message = walk.verdict()
    assert (phase, reason) == ("Skipped", "NewerPlanActive")
    assert "2 of 2 endpoints" in message


class RefuseOnce(stores.MemoryRecordStore):
    """Refuses the first full reconcile (another writer got there between read and write)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    async def apply(self, change: stores.Change) -> None:
        if change.delete_all and not self.refused:
            self.refused = True
            raise stores.ChangeRejected("moved since the read")
        await super().apply(change)


async def test_a_refused_heal_is_retried_not_raised_out_of_the_cycle() -> None:
    # Found by the checker's reading of apply_endpoint: the heal's fenced write ran outside
    # the retry, so its refusal failed the whole cycle and the plan was never applied again.
    rec = RefuseOnce()
    pls = enacting.MemoryPlanStore()
    pls.add(plan(1))
    enactor = enacting.Enactor("enactor-a", rec, pls, Safeguards(self_heal=True),
                               retry_backoff=0)
    assert (await enactor.cycle()) is not None
    del pls.plans[1]  # plan 1 gone while active: the inconsistent state of the incident
    pls.add(plan(2))
    report = await enactor.cycle()
    assert report is not None
    assert rec.refused
    assert all(o.result is enacting.Result.HEALED for o in report.outcomes), report.outcomes
    assert (await rec.read(REGIONAL)).marker == stores.ActiveMarker(2, "enactor-a")
