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
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from dnsrace.components.scenarios.lab import dns_query
from dnsrace.core import plans, records
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import processes
from tests.conftest import Cluster, local_only

ENACTORS = ("enactor-a", "enactor-b")


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
                   DNSRACE_HTTP_PORT=str(18293 + i), DNSRACE_SAFEGUARDS=request.param,
                   DNSRACE_RESYNC_SECONDS="2")
        procs.start(name, [sys.executable, "-m", "dnsrace", "enactor", "--name", name],
                    env=env, cwd=tmp_path)
    try:
        yield procs
    finally:
        for name in ENACTORS:
            procs.stop(name)


class PlanProbe:
    """One fresh endpoint, the plans created for it in the test's namespace, and what the API
    server and the DNS etcd say about them."""

    def __init__(self, cluster: Cluster, api: client.ApiClient, namespace: str,
                 store: etcd_store.EtcdRecordStore) -> None:
        self.co = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.store = store
        self.endpoint = f"{uuid.uuid4().hex[:8]}.fin.{cluster.cfg.dns.zone}"

    async def fresh_serial(self) -> int:
        """A serial above every one applied in this namespace's scope (the one-time check
        compares against those markers)."""
        markers = await self.store.markers()
        return max((m.serial for m, _ in markers.values()), default=0) + 1000

    async def create(self, serial: int, address: str) -> None:
        await self.co.create_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL,
            plan_body(serial, self.endpoint, address))

    async def delete(self, serial: int) -> None:
        await self.co.delete_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL, plans.object_name(serial))

    async def get(self, serial: int) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.co.get_namespaced_custom_object(
                plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL,
                plans.object_name(serial))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def gone(self, serial: int) -> bool:
        return await self.get(serial) is None

    async def claimed(self, serial: int) -> bool:
        obj = await self.get(serial)
        fins = set((obj or {}).get("metadata", {}).get("finalizers") or [])
        return fins == {f"{n}.dnsrace.io/finalizer" for n in ENACTORS}

    async def applied(self, serial: int) -> bool:
        state = await self.store.read(self.endpoint)
        return bool(state.marker and state.marker.serial == serial)

    async def create_claimed(self, address: str) -> int:
        """A new plan, once both enactors put their finalizer on it and it is applied."""
        serial = await self.fresh_serial()
        await self.create(serial, address)

        async def claimed_and_applied() -> bool:
            return await self.claimed(serial) and await self.applied(serial)

        await until(claimed_and_applied, "both finalizers and the plan applied")
        return serial


@pytest.fixture
async def probe(cluster: Cluster, api: client.ApiClient,
                namespace: str) -> AsyncIterator[PlanProbe]:
    # Markers live in the namespace's scope, where the enactors of this namespace write them.
    store = etcd_store.EtcdRecordStore.from_endpoint(cluster.cfg.dns.etcd_endpoint,
                                                     scope=namespace)
    try:
        yield PlanProbe(cluster, api, namespace, store)
    finally:
        await store.delete_prefix(records.active_prefix(namespace))
        await store.close()


@pytest.mark.parametrize("enactors", ["off"], indirect=True)
async def test_deleting_an_active_plan_removes_its_records_through_each_finalizer(
    cluster: Cluster, probe: PlanProbe, enactors: processes.Processes,
) -> None:
    s7 = await probe.create_claimed("127.0.10.7")
    assert await dns_query(cluster.cfg, probe.endpoint) == ("NOERROR", ["127.0.10.7"])

    await probe.delete(s7)
    await until(lambda: probe.gone(s7), "the plan to go once both finalizers ran")
    state = await probe.store.read(probe.endpoint)
    assert state.records == {}, "the deleted plan's records were removed"
    assert state.marker is not None
    assert state.marker.serial == s7, "the marker stays"

    async def nxdomain() -> bool:
        return (await dns_query(cluster.cfg, probe.endpoint))[0] == "NXDOMAIN"

    await until(nxdomain, "CoreDNS to answer NXDOMAIN", timeout=10)


@pytest.mark.parametrize("enactors", ["protect-active"], indirect=True)
async def test_protect_active_holds_the_plan_until_a_newer_one_replaced_it(
    cluster: Cluster, probe: PlanProbe, enactors: processes.Processes,
) -> None:
    s7 = await probe.fresh_serial()
    await probe.create(s7, "127.0.10.7")
    await until(lambda: probe.applied(s7), "the first plan applied")
    assert await probe.get(s7) is not None
    await until(lambda: probe.claimed(s7), "both finalizers on the plan")
    await probe.delete(s7)
    await asyncio.sleep(3)
    held = await probe.get(s7)
    assert held is not None, "protect-active keeps an active plan"
    assert held["metadata"].get("deletionTimestamp"), "terminating"
    assert (await probe.store.read(probe.endpoint)).records, "its records are still served"

    await probe.create(s7 + 1, "127.0.10.8")
    await until(lambda: probe.applied(s7 + 1), "the newer plan applied")
    await until(lambda: probe.gone(s7), "the first plan to go once the newer one is active")
    assert await dns_query(cluster.cfg, probe.endpoint) == ("NOERROR", ["127.0.10.8"])


@local_only
@pytest.mark.parametrize("enactors", ["off"], indirect=True)
async def test_no_plan_stays_terminating_when_the_dns_etcd_refuses_the_first_attempts(
    cluster: Cluster, probe: PlanProbe, enactors: processes.Processes,
) -> None:
    assert cluster.plane is not None
    s7 = await probe.create_claimed("127.0.10.7")
    etcd = cluster.plane.procs.get("dns-etcd")
    assert etcd is not None
    # The DNS etcd stops answering (a paused process, as a hung disk or a partition looks):
    # every finalizer attempt times out until it is back.
    os.kill(etcd.pid, signal.SIGSTOP)
    try:
        await probe.delete(s7)
        await asyncio.sleep(8)
        held = await probe.get(s7)
        assert held is not None, "the finalizers cannot finish while the store is down"
        assert held["metadata"].get("deletionTimestamp")
    finally:
        os.kill(etcd.pid, signal.SIGCONT)
    await until(lambda: probe.gone(s7), "the plan to go once the store is back", timeout=60)
    assert (await probe.store.read(probe.endpoint)).records == {}
    logs = "".join(Path(enactors.log_path(n)).read_text() for n in ENACTORS)
    assert "finalizer of plan-" in logs, "the failures were logged"
    assert "retrying" in logs


@local_only
@pytest.mark.parametrize("enactors", ["off"], indirect=True)
async def test_an_enactor_gone_for_good_does_not_hold_plans_terminating(
    cluster: Cluster, probe: PlanProbe, enactors: processes.Processes,
) -> None:
    s7 = await probe.create_claimed("127.0.10.7")
    gone = enactors.get("enactor-b")
    assert gone is not None
    os.kill(gone.pid, signal.SIGKILL)  # scaled away, or dead for good: never comes back
    await probe.delete(s7)
    await asyncio.sleep(3)
    held = await probe.get(s7)
    assert held is not None, "enactor-b's finalizer holds it while its heartbeat is fresh"
    # Heartbeat 15 s, relist every 2 s: enactor-a finishes enactor-b's finalizer.
    await until(lambda: probe.gone(s7), "enactor-a to take over enactor-b's finalizer",
                timeout=45)
    assert (await probe.store.read(probe.endpoint)).records == {}
    log = Path(enactors.log_path("enactor-a")).read_text()
    assert "enactor-b's heartbeat expired; enactor-a finished its finalizer" in log
