"""``dnsrace repair``: the operators' manual intervention after the race.

Loads the plans from the API, puts every endpoint of the newest plan on it in the DNS etcd
(``core.enacting.repair``), which clears the "active plan is gone" inconsistency, and records
an Event saying what changed.
"""

from __future__ import annotations

from dnsrace import settings as settings_mod
from dnsrace.core import enacting, plans
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import client as kube_client
from dnsrace.kube import plans as kube_plans
from dnsrace.kube import reporting


async def repair(cfg: settings_mod.Settings) -> list[tuple[str, int | None, int]]:
    api = await kube_client.api_client(cfg.api_kubeconfig)
    records = etcd_store.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint,
                                                       scope=cfg.kube.namespace)
    try:
        store = kube_plans.KubePlanStore(api, cfg.kube.namespace, cfg.dns.zone)
        await store.load()
        changed = await enacting.repair(records, store)
        newest = await store.newest()
        if changed and newest is not None:
            await reporting.post_event(
                api, cfg.kube.namespace, kind=plans.KIND, name=plans.object_name(newest.serial),
                uid=None, type_="Normal", reason="Repaired", component="repair",
                message="; ".join(f"{n}: {old} -> {new}" for n, old, new in changed),
            )
        return changed
    finally:
        await records.close()
        await api.close()
