"""``dnsrace status --once -o json`` against the real API server, DNS etcd and CoreDNS: it
agrees with ``kubectl get dnsplans`` and with a direct DNS query (issue 12's acceptance).

Two cases, each in a namespace of its own with endpoints of its own (fresh names, so CoreDNS
has cached nothing about them):
- the incident's end state set up by hand: plan N applied on one endpoint; the other endpoint's
  marker on a deleted plan and no records (NXDOMAIN), and enactor-a's report on plan N saying
  Blocked / ActivePlanMissing, written as the enactor writes it;
- one real enactor process applying a plan: idle, its serial, its /metrics read.

The command runs as a subprocess with the environment the lab gives its components
(``DNSRACE_KUBECONFIG``, ``DNSRACE_NAMESPACE``, ``DNSRACE_DNS_SERVER``, ``DNSRACE_DNS_ETCD``).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from kubernetes_asyncio import client

from dnsrace.components import prober
from dnsrace.core import observations, plans, records, stores
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import reporting
from dnsrace.localplane import processes
from tests.conftest import Cluster

METRICS_BASE = 18270
"""``--metrics-base`` of the second case: enactor-a serves /metrics at base + 1."""


def plan_body(serial: int, endpoints: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": f"{plans.GROUP}/{plans.VERSION}", "kind": plans.KIND,
            "metadata": {"name": plans.object_name(serial)},
            "spec": {"serial": serial, "endpoints": [
                {"name": name, "ttl": 1, "targets": [{"address": address, "weight": 1}]}
                for name, address in endpoints.items()]}}


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.25)):
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


async def direct_dns(cluster: Cluster, name: str) -> tuple[str, list[str], int | None]:
    """CoreDNS's answer, asked directly: (NOERROR/NODATA/NXDOMAIN/..., addresses, TXT serial)."""
    server = prober.server_address(cluster.cfg.dns.server_host)
    port = cluster.cfg.dns.server_port

    async def ask(rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        try:
            return await dns.asyncquery.udp(dns.message.make_query(name + ".", rdtype),
                                            server, port=port, timeout=2.0)
        except dns.exception.Timeout:
            return None

    a, txt = await ask(dns.rdatatype.A), await ask(dns.rdatatype.TXT)
    if a is None:
        return "TIMEOUT", [], None
    addresses = sorted(rr.to_text() for rrset in a.answer for rr in rrset
                       if rrset.rdtype == dns.rdatatype.A)
    rcode = dns.rcode.to_text(a.rcode())
    kind = "NODATA" if rcode == "NOERROR" and not addresses else rcode
    texts = [b"".join(rr.strings).decode() for rrset in (txt.answer if txt else [])
             for rr in rrset if rrset.rdtype == dns.rdatatype.TXT]
    return kind, addresses, observations.parse_serial(texts)


def status_env(cluster: Cluster, namespace: str) -> dict[str, str]:
    return dict(os.environ, DNSRACE_KUBECONFIG=str(cluster.kubeconfig),
                DNSRACE_NAMESPACE=namespace, DNSRACE_DNS_SERVER=cluster.cfg.dns.server,
                DNSRACE_DNS_ETCD=cluster.cfg.dns.etcd_endpoint)


async def run_status(cluster: Cluster, namespace: str, *args: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "dnsrace", "status", "--once", "-o", "json", *args]
    done = await asyncio.to_thread(subprocess.run, argv, env=status_env(cluster, namespace),
                                   capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"dnsrace status failed: {done.stderr}"
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def kubectl_plans(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    got = cluster.kubectl("-n", namespace, "get", "dnsplans", "-o", "json")
    assert got.returncode == 0, got.stderr
    items: list[dict[str, Any]] = json.loads(got.stdout)["items"]
    return items


async def assert_endpoints_agree_with_dns(cluster: Cluster, snap: dict[str, Any],
                                          names: list[str]) -> None:
    shown = {e["name"]: e for e in snap["endpoints"]}
    for name in names:
        kind, addresses, serial = await direct_dns(cluster, name)
        assert (shown[name]["dns"], shown[name]["dns_addresses"], shown[name]["dns_serial"]) \
            == (kind, addresses, serial), name


@pytest.fixture
async def store(cluster: Cluster, namespace: str) -> AsyncIterator[etcd_store.EtcdRecordStore]:
    """The DNS etcd, markers in the namespace's scope (where its enactors write them)."""
    st = etcd_store.EtcdRecordStore.from_endpoint(cluster.cfg.dns.etcd_endpoint,
                                                  scope=namespace)
    try:
        yield st
    finally:
        await st.delete_prefix(records.active_prefix(namespace))
        await st.close()


@pytest.fixture
async def endpoints(cluster: Cluster, store: etcd_store.EtcdRecordStore
                    ) -> AsyncIterator[list[str]]:
    """Two fresh endpoint names; their records are removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = [f"{tag}-{i}.status.{cluster.cfg.dns.zone}" for i in range(2)]
    try:
        yield names
    finally:
        for name in names:
            await store.delete_prefix(records.record_prefix(name))


async def test_status_shows_a_blocked_enactor_and_an_nxdomain_endpoint_as_kubectl_and_dns_do(
    cluster: Cluster, api: client.ApiClient, namespace: str,
    store: etcd_store.EtcdRecordStore, endpoints: list[str],
) -> None:
    ok_name, empty_name = endpoints
    co = client.CustomObjectsApi(api)
    targets = {ok_name: "127.0.10.1", empty_name: "127.0.10.2"}
    for serial in (7, 8):
        await co.create_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                 plans.PLURAL, plan_body(serial, targets))
    plan8 = plans.Plan.from_body(await co.get_namespaced_custom_object(
        plans.GROUP, plans.VERSION, namespace, plans.PLURAL, plans.object_name(8)),
        cluster.cfg.dns.zone)
    # Plan 8 on the first endpoint, records and marker in one transaction, as an enactor does.
    endpoint = plan8.endpoint(ok_name)
    assert endpoint is not None
    await store.apply(stores.Change(name=ok_name, put=endpoint.records(8),
                                    marker=stores.ActiveMarker(8, "enactor-b", plan8.uid)))
    # The second endpoint's active plan is 7, then 7 is deleted and its records are gone:
    # the marker stays (the incident's state).
    await store.apply(stores.Change(name=empty_name, put={},
                                    marker=stores.ActiveMarker(7, "enactor-a")))
    await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                             plans.PLURAL, plans.object_name(7))
    why = (f"endpoint {empty_name}: its active plan 7 no longer exists, so the change against "
           "it cannot be computed")
    await reporting.apply_status(api, namespace, plans.PLURAL, plans.KIND, plans.object_name(8),
                                 "enactor-a", {
                                     "enactors": [{"name": "enactor-a", "phase": "Blocked",
                                                   "appliedEndpoints": 1, "message": why,
                                                   "updatedAt": reporting.now()}],
                                     "conditions": [reporting.condition(
                                         "enactor-a.dnsrace.io/Applied", False,
                                         "ActivePlanMissing", why)]})

    async def plan7_gone() -> bool:
        return all(int(p["spec"]["serial"]) != 7 for p in kubectl_plans(cluster, namespace))

    await until(plan7_gone, "plan 7 to be deleted")

    snap = await run_status(cluster, namespace, "--metrics-base", "0")
    items = kubectl_plans(cluster, namespace)

    # Agrees with kubectl get dnsplans: the newest serial, the live plans, each report.
    live = [int(p["spec"]["serial"]) for p in items
            if not p["metadata"].get("deletionTimestamp")]
    assert snap["plans"]["newest_serial"] == max(live) == 8
    assert snap["plans"]["live"] == len(live)
    assert snap["sources"] == {"api": "ok", "dns-etcd": "ok", "dns": "ok"}
    shown = {e["name"]: e for e in snap["enactors"]}
    for item in items:
        for entry in item.get("status", {}).get("enactors", []):
            assert shown[entry["name"]]["last"]["serial"] == item["spec"]["serial"]
            assert shown[entry["name"]]["last"]["phase"] == entry["phase"]
            assert shown[entry["name"]]["last"]["message"] == entry["message"]
    a = shown["enactor-a"]
    assert a["state"] == "blocked"
    assert a["why"].startswith("ActivePlanMissing: ")

    # Agrees with the DNS etcd and with CoreDNS asked directly.
    by_name = {e["name"]: e for e in snap["endpoints"]}
    assert (by_name[ok_name]["store_serial"], by_name[ok_name]["store_enactor"]) == (
        8, "enactor-b")
    assert by_name[ok_name]["store_addresses"] == ["127.0.10.1"]
    assert (by_name[empty_name]["store_serial"], by_name[empty_name]["store_addresses"]) == (
        7, [])
    assert by_name[empty_name]["active_plan_exists"] is False
    await assert_endpoints_agree_with_dns(cluster, snap, endpoints)
    assert by_name[ok_name]["dns"] == "NOERROR"
    assert by_name[ok_name]["dns_serial"] == 8
    assert by_name[empty_name]["dns"] == "NXDOMAIN"
    assert {"empty-in-dns", "active-plan-missing"} <= set(by_name[empty_name]["flags"])


@pytest.fixture
async def enactor(cluster: Cluster, namespace: str, tmp_path: Path
                  ) -> AsyncIterator[processes.Processes]:
    procs = processes.Processes(tmp_path)
    env = dict(status_env(cluster, namespace), DNSRACE_HTTP_PORT=str(METRICS_BASE + 1),
               DNSRACE_SAFEGUARDS="off", DNSRACE_RESYNC_SECONDS="2")
    procs.start("enactor-a", [sys.executable, "-m", "dnsrace", "enactor", "--name",
                              "enactor-a"], env=env, cwd=tmp_path)
    try:
        yield procs
    finally:
        procs.stop("enactor-a")


async def test_status_follows_a_real_enactor_applying_a_plan(
    cluster: Cluster, api: client.ApiClient, namespace: str,
    store: etcd_store.EtcdRecordStore, endpoints: list[str], enactor: processes.Processes,
) -> None:
    co = client.CustomObjectsApi(api)
    await co.create_namespaced_custom_object(
        plans.GROUP, plans.VERSION, namespace, plans.PLURAL,
        plan_body(3, {endpoints[0]: "127.0.10.3", endpoints[1]: "127.0.10.4"}))

    async def reported() -> bool:
        for item in kubectl_plans(cluster, namespace):
            for entry in item.get("status", {}).get("enactors", []):
                if entry["name"] == "enactor-a" and entry.get("phase") == "Applied":
                    return True
        return False

    await until(reported, "enactor-a to report plan 3 Applied", timeout=60)
    snap = await run_status(cluster, namespace, "--metrics-base", str(METRICS_BASE))

    items = kubectl_plans(cluster, namespace)
    assert snap["plans"]["newest_serial"] == max(int(p["spec"]["serial"]) for p in items) == 3
    a = next(e for e in snap["enactors"] if e["name"] == "enactor-a")
    assert a["state"] == "idle", a
    assert a["applied_serial"] == 3
    assert a["behind"] == 0
    assert a["metrics"] == "ok"
    assert a["cycles"].get("applied", 0) >= 1
    assert a["heartbeat_valid"] is True
    assert a["endpoints_marked"] == 2
    markers = await store.markers()
    for name in endpoints:
        shown = next(e for e in snap["endpoints"] if e["name"] == name)
        assert shown["store_serial"] == markers[name][0].serial == 3
        assert shown["flags"] == [], shown
    await assert_endpoints_agree_with_dns(cluster, snap, endpoints)
    assert [next(e for e in snap["endpoints"] if e["name"] == n)["dns_addresses"]
            for n in endpoints] == [["127.0.10.3"], ["127.0.10.4"]]


async def test_status_names_the_sources_it_could_not_reach_and_shows_the_rest(
        cluster: Cluster, namespace: str) -> None:
    """The real API server, with the DNS etcd and CoreDNS at a closed port: the plans are
    shown, the unreachable sources are named in ``sources``, and the command still succeeds."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    body = plan_body(61, {f"st-{uuid.uuid4().hex[:6]}.{cluster.cfg.dns.zone}": "127.0.10.9"})
    cluster.kubectl("-n", namespace, "create", "-f", "-", stdin=json.dumps(body))
    env = dict(status_env(cluster, namespace), DNSRACE_DNS_ETCD=f"127.0.0.1:{closed}",
               DNSRACE_DNS_SERVER=f"127.0.0.1:{closed}")
    argv = [sys.executable, "-m", "dnsrace", "status", "--once", "-o", "json",
            "--metrics-base", "0", "--timeout", "1"]
    done = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True,
                                   text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    assert snap["sources"]["api"] == "ok"
    assert snap["sources"]["dns-etcd"] != "ok"
    assert snap["sources"]["dns"] != "ok"
    assert snap["plans"]["newest_serial"] == 61

