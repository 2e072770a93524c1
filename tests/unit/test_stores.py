"""The change-batch semantics of the record store, on the in-memory implementation."""

from __future__ import annotations

import pytest

from dnsrace.core import records, stores

NAME = "dynamodb.us-east-1.sim.internal"
R1 = {"p1-0": records.Record(ttl=5, host="127.0.10.1")}
R2 = {"p2-0": records.Record(ttl=5, host="127.0.10.2")}


async def test_change_replaces_records_and_marker_atomically() -> None:
    store = stores.MemoryRecordStore()
    await store.apply(stores.Change(NAME, put=R1, marker=stores.ActiveMarker(1, "a")))
    await store.apply(stores.Change(NAME, delete=R1, put=R2, marker=stores.ActiveMarker(2, "b")))
    state = await store.read(NAME)
    assert state.records == R2
    assert state.marker == stores.ActiveMarker(2, "b")
    assert state.marker_revision == store.revision


async def test_deleting_missing_records_rejects_the_whole_change() -> None:
    store = stores.MemoryRecordStore()
    await store.apply(stores.Change(NAME, put=R2, marker=stores.ActiveMarker(2, "b")))
    with pytest.raises(stores.ChangeRejected):
        await store.apply(stores.Change(NAME, delete=R1, put={"x": R1["p1-0"]},
                                        marker=stores.ActiveMarker(3, "a")))
    state = await store.read(NAME)
    assert state.records == R2
    assert state.marker == stores.ActiveMarker(2, "b")


async def test_fence_rejects_a_change_after_the_marker_moved() -> None:
    store = stores.MemoryRecordStore()
    await store.apply(stores.Change(NAME, put=R1, marker=stores.ActiveMarker(1, "a")))
    seen = (await store.read(NAME)).marker_revision
    await store.apply(stores.Change(NAME, delete=R1, put=R2, marker=stores.ActiveMarker(2, "b")))
    with pytest.raises(stores.ChangeRejected, match="marker revision"):
        await store.apply(stores.Change(NAME, delete_all=True, put=R1,
                                        marker=stores.ActiveMarker(1, "a"), fence_revision=seen))


async def test_state_without_addresses_is_empty() -> None:
    store = stores.MemoryRecordStore()
    await store.apply(stores.Change(NAME, put={"t": records.Record(ttl=5, text="serial=1")}))
    assert (await store.read(NAME)).empty
    assert (await store.markers()) == {}
