"""``dnsrace demo``: the main job on the local control plane, ending in its report."""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import dns.resolver

from dnsrace import settings as settings_mod
from dnsrace.cli import console
from dnsrace.core import records, stores
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import binaries, controlplane


async def _smoke(cfg: settings_mod.Settings) -> list[list[str]]:
    store = etcd_store.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint)
    name = f"smoke.{cfg.dns.zone}"
    recs = {f"smoke-{i}": records.Record(ttl=cfg.dns.record_ttl, host=f"127.0.10.{i}")
            for i in (1, 2)}
    state = await store.read(name)
    await store.apply(stores.Change(name=name, delete_all=True, put=recs,
                                    marker=stores.ActiveMarker(serial=1, enactor="demo")))
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [cfg.dns.server_host]
    resolver.port = cfg.dns.server_port
    rows = []
    answer = await resolver.resolve(name + ".", "A")
    rows.append([name, "A", ", ".join(sorted(r.to_text() for r in answer)),
                 "records before: " + str(len(state.records))])
    await store.close()
    return rows


def demo() -> None:
    """Bring the local control plane up, write a record set to the DNS etcd, and resolve it
    through CoreDNS."""
    cfg = settings_mod.Settings.from_env()
    plane = controlplane.LocalPlane(cfg, report=console.progress)
    try:
        plane.up()
        rows = asyncio.run(_smoke(cfg))
    except (binaries.SetupError, controlplane.PlaneError, dns.resolver.NoAnswer) as exc:
        console.fail(str(exc))
    console.table("demo: records written to the DNS etcd, answered by CoreDNS",
                  ["name", "type", "answer", "note"], rows)
