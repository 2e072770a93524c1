"""The record store interface the enactors write through, and an in-memory implementation.

An endpoint's state is its SkyDNS records plus its active-plan marker; every change to it is one
``Change`` applied atomically, like a Route 53 change batch: records it deletes must be there
exactly as expected, or the whole change is refused. Optional fencing compares the marker's
revision too. ``dnsstore.etcd.EtcdRecordStore`` implements this on etcd transactions for CoreDNS;
``MemoryRecordStore`` implements it on a dict for unit tests and the deterministic scheduler.
"""

from __future__ import annotations

import abc
import dataclasses
import json

from dnsrace.core import records


@dataclasses.dataclass(frozen=True)
class ActiveMarker:
    """Which plan is active on an endpoint, and which enactor put it there."""

    serial: int
    enactor: str
    uid: str = ""
    """The DnsPlan object's UID: a serial alone names a plan only within one namespace and one
    life of it, so removing a deleted plan's records matches the UID too."""

    def encode(self) -> bytes:
        body: dict[str, object] = {"serial": self.serial, "enactor": self.enactor}
        if self.uid:
            body["uid"] = self.uid
        return json.dumps(body).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ActiveMarker:
        body = json.loads(raw)
        return cls(serial=int(body["serial"]), enactor=str(body["enactor"]),
                   uid=str(body.get("uid", "")))


@dataclasses.dataclass(frozen=True)
class EndpointState:
    """An endpoint as read at one revision of the store."""

    name: str
    records: dict[str, records.Record]
    """Record leaf -> record."""
    marker: ActiveMarker | None
    marker_revision: int
    """Modification revision of the marker; 0 when there is none (used for fencing)."""

    @property
    def empty(self) -> bool:
        return not any(r.host for r in self.records.values())


@dataclasses.dataclass(frozen=True)
class Change:
    """One atomic change to one endpoint."""

    name: str
    delete: dict[str, records.Record] = dataclasses.field(default_factory=dict)
    """Records to delete; each must exist with exactly this value or the change is refused."""
    put: dict[str, records.Record] = dataclasses.field(default_factory=dict)
    marker: ActiveMarker | None = None
    """New marker; None leaves the marker as it is."""
    delete_all: bool = False
    """Delete every record of the name whatever it holds (a full reconcile); skips checks."""
    fence_revision: int | None = None
    """When set, the change applies only if the marker's revision is still this one."""


class ChangeRejected(Exception):
    """The store's state did not match what the change expected; nothing was written."""


class RecordStore(abc.ABC):
    """Read endpoints and apply changes to them atomically.

    A store is bound to one marker scope (the lab's namespace, ``records.active_prefix``):
    ``markers`` lists that scope's markers only, and changes move that scope's markers.
    """

    scope: str = records.DEFAULT_SCOPE

    @abc.abstractmethod
    async def read(self, name: str) -> EndpointState: ...

    @abc.abstractmethod
    async def apply(self, change: Change) -> None:
        """Apply ``change`` in one transaction, or raise ChangeRejected and write nothing."""

    @abc.abstractmethod
    async def markers(self) -> dict[str, tuple[ActiveMarker, int]]:
        """Every endpoint's marker and its revision."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryRecordStore(RecordStore):
    """A dict with etcd's revision semantics; one ``apply`` is atomic by construction."""

    def __init__(self, scope: str = records.DEFAULT_SCOPE,
                 kv: dict[str, tuple[bytes, int]] | None = None) -> None:
        self.scope = scope
        self.kv: dict[str, tuple[bytes, int]] = {} if kv is None else kv
        """Pass another store's ``kv`` to share one keyspace between scopes (two labs)."""
        self.revision = max((rev for _, rev in self.kv.values()), default=0)

    async def read(self, name: str) -> EndpointState:
        prefix = records.record_prefix(name)
        recs = {
            key[len(prefix):]: records.Record.decode(value)
            for key, (value, _) in self.kv.items()
            if key.startswith(prefix)
        }
        raw = self.kv.get(records.active_key(name, self.scope))
        return EndpointState(
            name=name,
            records=recs,
            marker=ActiveMarker.decode(raw[0]) if raw else None,
            marker_revision=raw[1] if raw else 0,
        )

    async def apply(self, change: Change) -> None:
        akey = records.active_key(change.name, self.scope)
        if change.fence_revision is not None:
            current = self.kv.get(akey, (b"", 0))[1]
            if current != change.fence_revision:
                raise ChangeRejected(
                    f"{change.name}: marker revision {current} != {change.fence_revision}"
                )
        if not change.delete_all:
            for leaf, rec in change.delete.items():
                key = records.record_key(change.name, leaf)
                if self.kv.get(key, (b"", 0))[0] != rec.encode():
                    raise ChangeRejected(f"{change.name}: record {leaf} is not {rec}")
        # Shared keyspaces share one revision counter, as one etcd does.
        self.revision = max((rev for _, rev in self.kv.values()), default=self.revision) + 1
        if change.delete_all:
            prefix = records.record_prefix(change.name)
            for key in [k for k in self.kv if k.startswith(prefix)]:
                del self.kv[key]
        for leaf in change.delete:
            self.kv.pop(records.record_key(change.name, leaf), None)
        for leaf, rec in change.put.items():
            self.kv[records.record_key(change.name, leaf)] = (rec.encode(), self.revision)
        if change.marker is not None:
            self.kv[akey] = (change.marker.encode(), self.revision)

    async def markers(self) -> dict[str, tuple[ActiveMarker, int]]:
        prefix = records.active_prefix(self.scope)
        return {
            key[len(prefix):]: (ActiveMarker.decode(value), rev)
            for key, (value, rev) in self.kv.items()
            if key.startswith(prefix)
        }
