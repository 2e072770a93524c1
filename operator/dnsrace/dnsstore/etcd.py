"""``RecordStore`` on the DNS etcd that CoreDNS's etcd plugin reads.

Used by the enactors (writes), the repair command and the tests. Reads take the records and the
marker in one transaction, so they come from one revision; ``apply`` turns a ``Change`` into one
etcd transaction whose compares carry the change-batch checks (each deleted record must hold the
expected value) and, with fencing, the marker's modification revision.

The client is aetcd (asyncio over etcd's gRPC API, with transactions); see docs/dependencies.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import aetcd

from dnsrace.core import records, stores


def _range_end(prefix: bytes) -> bytes:
    """etcd's prefix range end: the prefix with its last byte incremented."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One change as an etcd transaction, ready to commit."""

    change: stores.Change
    compare: list[Any]
    ops: list[Any]


class EtcdRecordStore(stores.RecordStore):
    def __init__(self, host: str, port: int, timeout: float = 5.0,
                 scope: str = records.DEFAULT_SCOPE) -> None:
        self.client = aetcd.Client(host=host, port=port, timeout=timeout)
        self.scope = scope

    @classmethod
    def from_endpoint(cls, endpoint: str, timeout: float = 5.0,
                      scope: str = records.DEFAULT_SCOPE) -> EtcdRecordStore:
        host, port = endpoint.removeprefix("http://").rsplit(":", 1)
        return cls(host, int(port), timeout, scope)

    async def read(self, name: str) -> stores.EndpointState:
        prefix = records.record_prefix(name).encode()
        akey = records.active_key(name, self.scope).encode()
        tx = self.client.transactions
        _, responses = await self.client.transaction(
            compare=[],
            success=[tx.get(prefix, _range_end(prefix)), tx.get(akey)],
            failure=[],
        )
        recs = {
            kv.key.decode()[len(prefix):]: records.Record.decode(value)
            for value, kv in responses[0]
        }
        marker_rows: list[Any] = responses[1]
        marker = stores.ActiveMarker.decode(marker_rows[0][0]) if marker_rows else None
        revision = marker_rows[0][1].mod_revision if marker_rows else 0
        return stores.EndpointState(
            name=name, records=recs, marker=marker, marker_revision=revision
        )

    async def apply(self, change: stores.Change) -> None:
        await self.commit(await self.prepare(change))

    async def prepare(self, change: stores.Change) -> Prepared:
        """The transaction for ``change``: its compares and operations. Only a ``delete_all``
        reads the store here (the keys to delete); ``commit`` refuses it if any moved since."""
        tx = self.client.transactions
        akey = records.active_key(change.name, self.scope).encode()
        compare = []
        if change.fence_revision is not None:
            compare.append(tx.mod(akey) == change.fence_revision)
        put_keys = {records.record_key(change.name, leaf).encode(): rec
                    for leaf, rec in change.put.items()}
        delete_keys: set[bytes] = set()
        if change.delete_all:
            # etcd refuses a range delete that overlaps a put in one txn, so delete the keys
            # one by one, and refuse the change if any key under the name moved since the read.
            prefix = records.record_prefix(change.name).encode()
            current = await self.client.get_prefix(prefix, keys_only=True)
            delete_keys = {kv.key for kv in current}
            compare.append(tx.mod(prefix, _range_end(prefix)) < current.header.revision + 1)
        else:
            for leaf, rec in change.delete.items():
                key = records.record_key(change.name, leaf).encode()
                compare.append(tx.value(key) == rec.encode())
                delete_keys.add(key)
        ops = [tx.delete(key) for key in sorted(delete_keys - put_keys.keys())]
        ops += [tx.put(key, rec.encode()) for key, rec in put_keys.items()]
        if change.marker is not None:
            ops.append(tx.put(akey, change.marker.encode()))
        return Prepared(change, compare, ops)

    async def commit(self, prepared: Prepared) -> None:
        """Run the transaction; ChangeRejected (nothing written) when a compare fails."""
        change = prepared.change
        succeeded, _ = await self.client.transaction(
            compare=prepared.compare, success=prepared.ops, failure=[])
        if not succeeded:
            raise stores.ChangeRejected(
                f"{change.name}: the endpoint no longer holds what the change expected "
                f"({len(change.delete)} records to delete"
                + (f", marker revision {change.fence_revision}" if change.fence_revision else "")
                + (", keys moved since the full reconcile read them" if change.delete_all
                   else "")
                + ")"
            )

    async def markers(self) -> dict[str, tuple[stores.ActiveMarker, int]]:
        prefix = records.active_prefix(self.scope).encode()
        result = await self.client.get_prefix(prefix)
        return {
            kv.key.decode()[len(prefix):]: (stores.ActiveMarker.decode(kv.value), kv.mod_revision)
            for kv in result
        }

    async def put_raw(self, key: str, value: bytes) -> None:
        """Write one key as is (tests and repair tooling)."""
        await self.client.put(key.encode(), value)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many were deleted."""
        raw = prefix.encode()
        tx = self.client.transactions
        _, responses = await self.client.transaction(
            compare=[], success=[tx.delete(raw, _range_end(raw))], failure=[]
        )
        return int(responses[0].response_delete_range.deleted)

    async def close(self) -> None:
        await self.client.close()
