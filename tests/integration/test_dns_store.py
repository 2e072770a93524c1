"""The record store's guarantees on the real DNS etcd: fencing and change-batch refusals, marker
scopes with colliding serials, and the store recorder seeing what CoreDNS's cache hides.

The in-memory store's refusals are tested in tests/unit/test_stores.py; these show the etcd
transactions refuse the same things, leaving the endpoint as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from dnsrace.core import enacting, plans, records, stores
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.dnsstore import recorder
from tests.conftest import Cluster


def endpoint(cluster: Cluster, label: str, address: str) -> plans.Endpoint:
    name = f"{uuid.uuid4().hex[:8]}.{label}.{cluster.cfg.dns.zone}"
    return plans.Endpoint(name=name, targets=(plans.Target(address, 1),), ttl=1)


@pytest.fixture
async def scoped(cluster: Cluster) -> object:
    """Two stores on the one DNS etcd, scoped like two labs' namespaces."""
    a = etcd_store.EtcdRecordStore.from_endpoint(cluster.cfg.dns.etcd_endpoint,
                                                 scope=f"lab-a-{uuid.uuid4().hex[:6]}")
    b = etcd_store.EtcdRecordStore.from_endpoint(cluster.cfg.dns.etcd_endpoint,
                                                 scope=f"lab-b-{uuid.uuid4().hex[:6]}")
    yield a, b
    for store in (a, b):
        await store.delete_prefix(records.active_prefix(store.scope))
        await store.close()


async def test_a_stale_fence_is_refused_and_nothing_is_written(
        cluster: Cluster, dns_store: etcd_store.EtcdRecordStore) -> None:
    ep = endpoint(cluster, "fence", "127.0.10.51")
    r5, r6, r4 = ep.records(5), ep.records(6), ep.records(4)
    await dns_store.apply(stores.Change(ep.name, put=r5, marker=stores.ActiveMarker(5, "a")))
    seen = (await dns_store.read(ep.name)).marker_revision
    await dns_store.apply(stores.Change(ep.name, delete=r5, put=r6,
                                        marker=stores.ActiveMarker(6, "b"), fence_revision=seen))
    with pytest.raises(stores.ChangeRejected, match="marker revision"):
        # enactor-a's write, fenced on what it read before enactor-b moved the marker
        await dns_store.apply(stores.Change(ep.name, delete=r5, put=r4,
                                            marker=stores.ActiveMarker(4, "a"),
                                            fence_revision=seen))
    state = await dns_store.read(ep.name)
    assert state.marker == stores.ActiveMarker(6, "b")
    assert state.records == r6
    await dns_store.delete_prefix(records.record_prefix(ep.name))


async def test_a_delete_of_records_that_are_not_there_is_refused(
        cluster: Cluster, dns_store: etcd_store.EtcdRecordStore) -> None:
    ep = endpoint(cluster, "fence", "127.0.10.52")
    await dns_store.apply(stores.Change(ep.name, put=ep.records(6),
                                        marker=stores.ActiveMarker(6, "b")))
    with pytest.raises(stores.ChangeRejected, match="2 records to delete"):
        await dns_store.apply(stores.Change(ep.name, delete=ep.records(5), put=ep.records(7),
                                            marker=stores.ActiveMarker(7, "a")))
    state = await dns_store.read(ep.name)
    assert state.marker == stores.ActiveMarker(6, "b")
    assert state.records == ep.records(6)
    await dns_store.delete_prefix(records.record_prefix(ep.name))


async def test_a_full_reconcile_is_refused_when_a_key_moved_after_its_read(
        cluster: Cluster, dns_store: etcd_store.EtcdRecordStore) -> None:
    ep = endpoint(cluster, "fence", "127.0.10.53")
    await dns_store.apply(stores.Change(ep.name, put=ep.records(6),
                                        marker=stores.ActiveMarker(6, "b")))
    heal = stores.Change(ep.name, delete_all=True, put=ep.records(9),
                         marker=stores.ActiveMarker(9, "a"))
    prepared = await dns_store.prepare(heal)
    # Another enactor writes under the name between the reconcile's read and its commit.
    late = {"p8-0": records.Record(ttl=1, host="127.0.10.58")}
    await dns_store.apply(stores.Change(ep.name, put=late))
    with pytest.raises(stores.ChangeRejected, match="moved since"):
        await dns_store.commit(prepared)
    state = await dns_store.read(ep.name)
    assert state.marker == stores.ActiveMarker(6, "b")
    assert state.records == ep.records(6) | late
    await dns_store.commit(await dns_store.prepare(heal))  # read again, it goes through
    assert (await dns_store.read(ep.name)).records == ep.records(9)
    await dns_store.delete_prefix(records.record_prefix(ep.name))


async def test_two_labs_with_colliding_serials_keep_their_own_records(
        cluster: Cluster, scoped: tuple[etcd_store.EtcdRecordStore, ...]) -> None:
    store_a, store_b = scoped
    ep_a, ep_b = endpoint(cluster, "lab-a", "127.0.10.61"), endpoint(cluster, "lab-b",
                                                                      "127.0.10.62")
    plan_a = plans.Plan(serial=7, endpoints=(ep_a,), uid="uid-a-7")
    plan_b = plans.Plan(serial=7, endpoints=(ep_b,), uid="uid-b-7")
    enactors = []
    for store, plan in ((store_a, plan_a), (store_b, plan_b)):
        plan_store = enacting.MemoryPlanStore()
        plan_store.add(plan)
        enactor = enacting.Enactor("enactor-a", store, plan_store, Safeguards())
        assert (await enactor.cycle()) is not None
        enactors.append(enactor)
    assert set(await store_a.markers()) == {ep_a.name}
    assert set(await store_b.markers()) == {ep_b.name}

    # Lab B deletes its plan 7: lab A's plan 7, same serial, keeps its records.
    assert await enactors[1].remove_plan_records(plan_b) == [ep_b.name]
    assert (await store_a.read(ep_a.name)).records == ep_a.records(7)
    assert not (await store_b.read(ep_b.name)).records

    # A plan 7 of another life (another UID) in lab A does not remove the active one's records.
    assert await enactors[0].remove_plan_records(
        plans.Plan(serial=7, endpoints=(ep_a,), uid="uid-a-7-old")) == []
    assert (await store_a.read(ep_a.name)).records == ep_a.records(7)

    # Lab B far ahead does not make lab A's next plan look old to the one-time check.
    await store_b.apply(stores.Change(ep_b.name, marker=stores.ActiveMarker(900, "x")))
    assert await enactors[0].newer_than_applied(plans.Plan(serial=8, endpoints=(ep_a,)))
    for ep in (ep_a, ep_b):
        await store_a.delete_prefix(records.record_prefix(ep.name))


async def test_the_store_recorder_sees_a_regression_and_an_empty_the_cache_hides(
        cluster: Cluster, dns_store: etcd_store.EtcdRecordStore, tmp_path: Path) -> None:
    ep = endpoint(cluster, "rec", "127.0.10.71")
    rec = recorder.StoreRecorder(dns_store, cluster.cfg.dns.zone, dns_store.scope,
                                 tmp_path / "store.jsonl", [ep.name])
    await rec.start()
    try:
        await dns_store.apply(stores.Change(ep.name, put=ep.records(5),
                                            marker=stores.ActiveMarker(5, "b")))
        # The stale write: back to plan 3, in one transaction (never empty to a reader).
        await dns_store.apply(stores.Change(ep.name, delete=ep.records(5), put=ep.records(3),
                                            marker=stores.ActiveMarker(3, "a")))
        # Its removal, and a repair 0.2 s later: far shorter than CoreDNS's cache.
        await dns_store.apply(stores.Change(ep.name, delete=ep.records(3)))
        await asyncio.sleep(0.2)
        await dns_store.apply(stores.Change(ep.name, put=ep.records(9),
                                            marker=stores.ActiveMarker(9, "repair")))
    finally:
        summary = await rec.stop()
        await dns_store.delete_prefix(records.record_prefix(ep.name))
        await dns_store.delete_prefix(records.active_key(ep.name, dns_store.scope))
    assert [(r.from_serial, r.to_serial, r.enactor) for r in summary.regressions] == [
        (5, 3, "a")]
    assert [w.name for w in summary.windows] == [ep.name]
    window = summary.windows[0]
    assert window.end is not None
    assert 0.1 < window.end - window.start < 1.5
    assert [w.serial for w in summary.writes] == [5, 3, 9]
    assert (tmp_path / "store.jsonl").read_text().count("\n") == 5  # snapshot + 4 revisions
