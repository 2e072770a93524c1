"""The enactor's plan cache on the real API server: a plan deleted during a watch gap is not
kept as a ghost, and what the cache keeps per plan does not grow with every plan ever seen."""

from __future__ import annotations

import uuid
from typing import Any

from kubernetes_asyncio import client

from dnsrace.core import plans
from dnsrace.kube import plans as kube_plans
from tests.conftest import Cluster


def body(serial: int, zone: str) -> dict[str, Any]:
    return {"apiVersion": "dnsrace.io/v1alpha1", "kind": "DnsPlan",
            "metadata": {"name": plans.object_name(serial)},
            "spec": {"serial": serial, "endpoints": [
                {"name": f"{uuid.uuid4().hex[:8]}.cache.{zone}", "ttl": 1,
                 "targets": [{"address": "127.0.10.9", "weight": 1}]}]}}


async def test_a_plan_deleted_during_a_watch_gap_is_reported_gone_after_the_relist(
        cluster: Cluster, api: client.ApiClient, namespace: str) -> None:
    zone = cluster.cfg.dns.zone
    co = client.CustomObjectsApi(api)
    store = kube_plans.KubePlanStore(api, namespace, zone)
    for serial in (7, 8):
        await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                 plans.PLURAL, body(serial, zone))
    await store.relist()
    assert await store.serials() == [7, 8]

    # The watch misses the DELETED event of plan 7: the cache still calls it live...
    await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plans.object_name(7))
    assert await store.get(7) is not None, "a ghost until the relist"

    # ...while a plan the watch sees after the list is sent is not lost to the older list.
    mark = store.begin_relist()
    listed = (await co.list_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                     plans.PLURAL))["items"]
    created = await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                       plans.PLURAL, body(9, zone))
    store.observe("ADDED", created)
    dropped = store.replace(listed, mark)

    assert dropped == [plans.object_name(7)]
    assert await store.get(7) is None
    assert await store.serials() == [8, 9]
    assert {uid for uid, _ in store._parsed} == {p.plan.uid for p in store.cache.values()}
