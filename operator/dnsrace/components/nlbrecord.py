"""The NLB's record in the lab's DNS: what it holds and how it gets written.

Who calls it: ``components.nlbctl`` (its ``Runner`` publishes, ``Writer`` writes), the CLI
(``etcd_store``, through ``nlbctl``) and the tests (``record_set``). Why the NLB writes its own
name: it is the only writer of it, so there is no plan and no marker; one etcd transaction puts
one A record per distinct published host and removes the name's other records. The record
outlives the controller (it is left as it is on the way out).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping

from dnsrace import settings as settings_mod
from dnsrace.components import nlboutage, retrying
from dnsrace.components.nlbfigures import RECORD_WRITES
from dnsrace.components.nlbtargets import split_endpoint
from dnsrace.core import records, stores

# The NLB's lines keep the name they always had: operators filter its log on it.
log = logging.getLogger("dnsrace.components.nlbctl")


def record_leaf(host: str) -> str:
    """The record's leaf under the NLB's name: the address, dots and colons as dashes."""
    return "nlb-" + host.replace(".", "-").replace(":", "-")


def record_set(published: Iterable[str], endpoints: Mapping[str, str],
               ttl: int) -> dict[str, records.Record]:
    """The NLB's records for the published targets: one A (or AAAA) record per distinct host
    of their endpoints. Several targets on one host (``port``-style endpoints) give one record:
    DNS carries no port, and a client reaching the host reaches whichever of them serves.
    A target whose host is not an IP address is left out (DNS can carry no name here)."""
    out: dict[str, records.Record] = {}
    for target in sorted(published):
        endpoint = endpoints.get(target)
        if endpoint is None:
            continue
        try:
            host, _ = split_endpoint(endpoint)
            ipaddress.ip_address(host)
        except ValueError:
            continue
        out[record_leaf(host)] = records.Record(ttl=ttl, host=host)
    return out


def etcd_store(cfg: settings_mod.Settings, timeout: float = 2.0) -> stores.RecordStore:
    """The DNS etcd CoreDNS serves, as a record store."""
    from dnsrace.dnsstore import etcd  # aetcd only when the NLB runs

    return etcd.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint, timeout=timeout)


class Writer:
    """The record as desired (``want``) and as last written; ``loop`` writes it whenever the
    two differ, and reads it back every ``resync`` s in case someone else changed it."""

    def __init__(self, store: stores.RecordStore | None, name: str, *, tick: float,
                 resync: float) -> None:
        self.store = store
        self.name = name
        self.tick = tick
        self.resync_every = resync
        self.desired: dict[str, records.Record] | None = None
        self.written: dict[str, records.Record] | None = None
        self.writes = self.write_failures = 0
        self._dirty = asyncio.Event()

    def want(self, desired: dict[str, records.Record]) -> None:
        """The records to publish now; the loop writes them if they changed."""
        self.desired = desired
        if self.desired != self.written:
            self._dirty.set()

    async def write(self) -> bool:
        """Write the desired records if they differ from what was last written; True when
        something was written."""
        desired = self.desired
        if self.store is None or desired is None or desired == self.written:
            return False
        await self.store.apply(stores.Change(self.name, put=dict(desired), delete_all=True))
        self.written = desired
        self.writes += 1
        RECORD_WRITES.labels("ok").inc()
        log.info("%s: %d addresses published", self.name, len(desired))
        return True

    async def resync(self) -> None:
        """Read the record back; forget what was written when it differs, so it is rewritten."""
        if self.store is None or self.written is None:
            return
        state = await self.store.read(self.name)
        if state.records != self.written:
            log.warning("%s: the DNS etcd holds %d records, not the %d written: rewriting",
                        self.name, len(state.records), len(self.written))
            self.written = None
            self._dirty.set()

    async def loop(self, stop: asyncio.Event) -> None:
        """Write the record whenever it changed; on an outage, back off and write the newest
        record once the DNS etcd answers again."""
        outage = nlboutage.Outage("DNS etcd")
        RECORD_WRITES.labels("ok")
        RECORD_WRITES.labels("failed")
        next_resync = time.monotonic() + self.resync_every
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.tick)
            if stop.is_set():
                break
            self._dirty.clear()
            try:
                if time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + self.resync_every
                    await self.resync()
                await self.write()
            except asyncio.CancelledError:
                raise
            except stores.ChangeRejected as exc:  # the name moved between read and write
                log.info("record write refused, writing again: %s", exc)
                await retrying.pause(stop, self.tick)
                self._dirty.set()
            except Exception as exc:
                self.write_failures += 1
                RECORD_WRITES.labels("failed").inc()
                await retrying.pause(stop, outage.failed(exc, f"writing {self.name}"))
                self._dirty.set()
            else:
                outage.ok()
