"""Record every transaction on one lab's keys in the DNS etcd, as ``store.jsonl``.

The scenario runner starts a ``StoreRecorder`` beside the prober. Where the prober sees what a
DNS client sees (through CoreDNS's cache), the recorder sees the store itself: each revision's
puts and deletes on the lab's zone and its marker scope, grouped per revision so a change (its
deletes and puts in one transaction) is never mistaken for an empty endpoint. The format and
its analysis are in ``core.storelog``; ``state`` follows the run live with the same code.

One etcd watch over the whole keyspace, filtered here: the DNS etcd holds only lab keys, and a
single watch delivers one ordered stream of revisions, which two prefix watches would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import IO, Any

from dnsrace.core import records, storelog
from dnsrace.dnsstore import etcd as etcd_store

log = logging.getLogger(__name__)


class StoreRecorder:
    def __init__(self, store: etcd_store.EtcdRecordStore, zone: str, scope: str,
                 out: Path, names: list[str] | None = None) -> None:
        self.client = store.client
        self.zone_prefix = records.name_path(zone) + "/"
        self.marker_prefix = records.active_prefix(scope)
        self.out = out
        self.state = storelog.StoreState(zone, scope, names)
        self._fh: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[float, int, storelog.Op]] = asyncio.Queue()
        self.errors = 0
        """Watch streams that failed and were resumed (an etcd restart, say)."""

    def _ours(self, key: str) -> bool:
        if not (key.startswith(self.zone_prefix) or key.startswith(self.marker_prefix)):
            return False
        if self.state.names is None:
            return True
        rec, act = records.parse_record_key(key), records.parse_active_key(key)
        name = rec[0] if rec else act[1] if act else None
        return name in self.state.names

    def _write(self, rev: storelog.Revision) -> None:
        self.state.apply(rev)
        if self._fh is not None:
            self._fh.write(rev.to_json() + "\n")

    async def start(self) -> None:
        """Write the snapshot, then follow every later revision until ``stop``."""
        self._fh = self.out.open("a", encoding="utf-8")
        revision = await self._snapshot()
        self._task = asyncio.create_task(self._run(revision + 1))

    async def _snapshot(self) -> int:
        # One range read over the whole keyspace is one consistent revision; two prefix reads
        # would not be, and the watch must start right after the snapshot's revision.
        result = await self.client.get_range(b"/", b"\0")
        ops: list[storelog.Op] = [("put", kv.key.decode(), kv.value.decode())
                                  for kv in result if self._ours(kv.key.decode())]
        revision = int(result.header.revision)
        self._write(storelog.Revision(time.time(), revision, tuple(ops), snapshot=True))
        return revision

    async def _run(self, start_revision: int) -> None:
        pump = asyncio.create_task(self._pump(start_revision))
        pending: list[storelog.Op] = []
        pending_t, pending_rev = 0.0, 0
        try:
            while True:
                try:
                    t, rev, op = await asyncio.wait_for(self._queue.get(), timeout=0.2)
                except TimeoutError:
                    # A revision's events are queued together, so a quiet queue means the
                    # pending revision is complete.
                    if pending:
                        self._write(storelog.Revision(pending_t, pending_rev, tuple(pending)))
                        pending = []
                    continue
                if pending and rev != pending_rev:
                    self._write(storelog.Revision(pending_t, pending_rev, tuple(pending)))
                    pending = []
                if not pending:
                    pending_t, pending_rev = t, rev
                pending.append(op)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
            while not self._queue.empty():
                t, rev, op = self._queue.get_nowait()
                if pending and rev != pending_rev:
                    self._write(storelog.Revision(pending_t, pending_rev, tuple(pending)))
                    pending = []
                if not pending:
                    pending_t, pending_rev = t, rev
                pending.append(op)
            if pending:
                self._write(storelog.Revision(pending_t, pending_rev, tuple(pending)))

    async def _pump(self, start_revision: int) -> None:
        """Feed the queue from the watch; resume after the last revision seen if it fails."""
        next_revision = start_revision
        while True:
            events: Any = None
            try:
                events = await self.client.watch(b"/", range_end=b"\0",
                                                 start_revision=next_revision)
                async for event in events:
                    key = event.kv.key.decode()
                    rev = int(event.kv.mod_revision)
                    next_revision = max(next_revision, rev + 1)
                    if not self._ours(key):
                        continue
                    op: storelog.Op = (("put", key, event.kv.value.decode())
                                       if event.kind == "PUT" else ("del", key, None))
                    self._queue.put_nowait((time.time(), rev, op))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store restarted or the stream broke: resume
                self.errors += 1
                log.warning("DNS etcd watch failed (%s); resuming at revision %d",
                            exc, next_revision)
                await asyncio.sleep(0.5)
            finally:
                if events is not None:
                    with contextlib.suppress(Exception):
                        await events.cancel()

    async def stop(self) -> storelog.StoreSummary:
        if self._task is not None:
            # Let the last revision's events reach the queue before the pump goes.
            await asyncio.sleep(0.3)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        return self.state.summary()
