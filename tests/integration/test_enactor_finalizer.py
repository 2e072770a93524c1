"""Each enactor's own DnsPlan finalizer, on the real API server, DNS etcd and CoreDNS.

Two enactor processes each put their finalizer on a new plan (server-side apply, one field
manager each, so neither overwrites the other's). Deleting the plan runs both: the plan's
records leave the endpoint where it is active (the marker stays, as in the incident), CoreDNS
answers NXDOMAIN, and the object goes. With protect-active the finalizer holds the plan while it
is active and lets it go once a newer plan replaced it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from dnsrace.components import scenario
from dnsrace.core import plans
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import processes
from tests.conftest import Cluster

ENACTORS = ("enactor-a", "enactor-b")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"dnsrace-fin-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", ns).returncode == 0
    yield ns
    # The enactors are stopped by now: take their finalizers off what is left, so the
    # namespace can go.
    names = cluster.kubectl("-n", ns, "get", "dnsplans", "-o", "name").stdout.split()
    for name in names:
        cluster.kubectl("-n", ns, "patch", name, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}')
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def plan_body(serial: int, endpoint: str, address: str) -> dict[str, Any]:
    return {"apiVersion": "dnsrace.io/v1alpha1", "kind": "DnsPlan",
            "metadata": {"name": plans.object_name(serial)},
            "spec": {"serial": serial, "endpoints": [
                {"name": endpoint, "ttl": 1, "targets": [{"address": address, "weight": 1}]}]}}


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def enactors(cluster: Cluster, namespace: str, tmp_path: Path,
                   request: pytest.FixtureRequest) -> AsyncIterator[processes.Processes]:
    procs = processes.Processes(tmp_path)
    for i, name in enumerate(ENACTORS):
        env = dict(os.environ, DNSRACE_KUBECONFIG=str(cluster.kubeconfig),
                   DNSRACE_NAMESPACE=namespace, DNSRACE_DNS_ETCD=cluster.cfg.dns.etcd_endpoint,
                   DNSRACE_HTTP_PORT=str(18293 + i), DNSRACE_SAFEGUARDS=request.param)
        procs.start(name, [sys.executable, "-m", "dnsrace", "enactor", "--name", name],
                    env=env, cwd=tmp_path)
    try:
        yield procs
    finally:
        for name in ENACTORS:
            procs.stop(name)


async def fresh_serial(dns_store: etcd_store.EtcdRecordStore) -> int:
    """A serial above every applied one: the one-time check compares against all markers in
    the DNS etcd, which other tests and runs share."""
    markers = await dns_store.markers()
    return max((m.serial for m, _ in markers.values()), default=0) + 1000


async def get_plan(api: client.ApiClient, namespace: str, serial: int) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            plans.GROUP, plans.VERSION, namespace, plans.PLURAL, plans.object_name(serial))
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return obj


@pytest.mark.parametrize("enactors", ["off"], indirect=True)
async def test_deleting_an_active_plan_removes_its_records_through_each_finalizer(
    cluster: Cluster, api: client.ApiClient, dns_store: etcd_store.EtcdRecordStore,
    namespace: str, enactors: processes.Processes,
) -> None:
    endpoint = f"{uuid.uuid4().hex[:8]}.fin.{cluster.cfg.dns.zone}"
    co = client.CustomObjectsApi(api)
    s7 = await fresh_serial(dns_store)
    await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plan_body(s7, endpoint, "127.0.10.7"))

    async def claimed_and_applied() -> bool:
        obj = await get_plan(api, namespace, s7)
        fins = set((obj or {}).get("metadata", {}).get("finalizers") or [])
        state = await dns_store.read(endpoint)
        return fins == {f"{n}.dnsrace.io/finalizer" for n in ENACTORS} and bool(
            state.marker and state.marker.serial == s7)

    await until(claimed_and_applied, "both finalizers and the plan applied")
    assert await scenario.dns_query(cluster.cfg, endpoint) == ("NOERROR", ["127.0.10.7"])

    await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plans.object_name(s7))

    async def gone() -> bool:
        return await get_plan(api, namespace, s7) is None

    await until(gone, "the plan to go once both finalizers ran")
    state = await dns_store.read(endpoint)
    assert state.records == {}, "the deleted plan's records were removed"
    assert state.marker is not None
    assert state.marker.serial == s7, "the marker stays"

    async def nxdomain() -> bool:
        return (await scenario.dns_query(cluster.cfg, endpoint))[0] == "NXDOMAIN"

    await until(nxdomain, "CoreDNS to answer NXDOMAIN", timeout=10)


@pytest.mark.parametrize("enactors", ["protect-active"], indirect=True)
async def test_protect_active_holds_the_plan_until_a_newer_one_replaced_it(
    cluster: Cluster, api: client.ApiClient, dns_store: etcd_store.EtcdRecordStore,
    namespace: str, enactors: processes.Processes,
) -> None:
    endpoint = f"{uuid.uuid4().hex[:8]}.fin.{cluster.cfg.dns.zone}"
    co = client.CustomObjectsApi(api)
    s7 = await fresh_serial(dns_store)
    await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plan_body(s7, endpoint, "127.0.10.7"))

    async def applied(serial: int) -> bool:
        state = await dns_store.read(endpoint)
        return bool(state.marker and state.marker.serial == serial)

    await until(lambda: applied(s7), "the first plan applied")
    obj = await get_plan(api, namespace, s7)
    assert obj is not None
    await until(lambda: _has_finalizers(api, namespace, s7), "both finalizers on the plan")
    await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plans.object_name(s7))
    await asyncio.sleep(3)
    held = await get_plan(api, namespace, s7)
    assert held is not None, "protect-active keeps an active plan"
    assert held["metadata"].get("deletionTimestamp"), "terminating"
    assert (await dns_store.read(endpoint)).records, "its records are still served"

    newer = plan_body(s7 + 1, endpoint, "127.0.10.8")
    await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, newer)
    await until(lambda: applied(s7 + 1), "the newer plan applied")

    async def gone() -> bool:
        return await get_plan(api, namespace, s7) is None

    await until(gone, "the first plan to go once the newer one is active")
    assert await scenario.dns_query(cluster.cfg, endpoint) == ("NOERROR", ["127.0.10.8"])


async def _has_finalizers(api: client.ApiClient, namespace: str, serial: int) -> bool:
    obj = await get_plan(api, namespace, serial)
    fins = set((obj or {}).get("metadata", {}).get("finalizers") or [])
    return fins == {f"{n}.dnsrace.io/finalizer" for n in ENACTORS}

