"""LB nodes and the DNS prober against the real API server, DNS etcd and CoreDNS.

LB nodes: two nodes run in-process, register EndpointSlices that ``ready_nodes`` (the planner's
view) finds, answer ``/health`` with a capacity in range, and remove their slices on stop.
They run in a throwaway namespace so a lab planner running in ``dnsrace`` never plans onto them.

Prober: records written to the DNS etcd are seen through CoreDNS, their deletion shows as an
empty window with NXDOMAIN (after CoreDNS's cache lets go), and an older plan's records coming
back show as a stale regression; the analysis of the prober's own file must say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import dns.rdatatype
import prometheus_client
import pytest
from kubernetes_asyncio import client

from dnsrace.components import lbnode, prober, serving
from dnsrace.core import observations, plans, records, stores
from dnsrace.dnsstore import etcd as etcd_store
from tests.conftest import Cluster

RATE = 10.0


@pytest.fixture
async def scratch_namespace(api: client.ApiClient) -> AsyncIterator[str]:
    name = f"dnsrace-it-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        await core.delete_namespace(name)


def free_port(address: str) -> int:
    """A port free on ``address`` (the lab's components may hold 8080 on the wildcard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


async def eventually(check: Any, timeout: float, what: str) -> Any:
    """Await ``check()`` until it returns something truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.2)


# --- LB nodes ---------------------------------------------------------------------------------


def test_capacity_is_deterministic_in_range_and_drifts() -> None:
    t0 = 1_761_000_000.0
    for index in (0, 1, 5, 40):
        values = [lbnode.capacity_at(index, t0 + s) for s in range(0, 60)]
        assert all(lbnode.CAPACITY_LOW <= v <= lbnode.CAPACITY_HIGH for v in values)
        assert len(set(values)) > 10, "capacity moves over a minute"
        assert max(abs(a - b) for a, b in itertools.pairwise(values)) <= 10, \
            "capacity drifts slowly"
        assert values == [lbnode.capacity_at(index, t0 + s) for s in range(0, 60)]
    assert lbnode.capacity_at(0, t0) != lbnode.capacity_at(1, t0), "phases differ per node"
    assert lbnode.address_for(0) == "127.0.10.1"
    assert lbnode.address_for(41) == "127.0.10.42"
    assert lbnode.index_from_name("lbnode-41") == 41
    with pytest.raises(ValueError, match="-<index>"):
        lbnode.index_from_name("lbnode")
    with pytest.raises(ValueError, match=r"0\.\.253"):
        lbnode.address_for(254)
    assert lbnode.slice_body("n-1", "10.244.0.7").address_type == "IPv4"  # a pod IP
    assert lbnode.slice_body("n-1", "fd00::7").address_type == "IPv6"
    assert lbnode.slice_body("n-1", "127.0.10.2").address_type == "FQDN"


async def test_lbnodes_register_answer_and_deregister(
    cluster: Cluster, api: client.ApiClient, scratch_namespace: str
) -> None:
    ns = scratch_namespace
    nodes = {f"lbnode-{i}": (i, lbnode.address_for(i), free_port(lbnode.address_for(i)))
             for i in (40, 41)}
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(lbnode.run(name, index, cluster.kubeconfig, ns, stop, port,
                                       resync=0.5))
        for name, (index, _, port) in nodes.items()
    ]
    discovery = client.DiscoveryV1Api(api)
    try:
        expected = sorted((name, address) for name, (_, address, _) in nodes.items())

        async def both_ready() -> bool:
            for task in tasks:
                if task.done():
                    task.result()  # a node that failed to start: raise its error here
            return await lbnode.ready_nodes(api, ns) == expected

        await eventually(both_ready, 20, "both LB nodes in ready_nodes")

        for name, (_, address, port) in nodes.items():
            es = await discovery.read_namespaced_endpoint_slice(lbnode.slice_name(name), ns)
            assert es.metadata.labels[lbnode.SERVICE_NAME_LABEL] == lbnode.SERVICE
            assert es.metadata.labels[lbnode.MANAGED_BY_LABEL] == lbnode.MANAGED_BY
            assert not es.metadata.owner_references
            assert es.address_type == "FQDN", "the API server refuses loopback IPv4 endpoints"
            assert [e.addresses for e in es.endpoints] == [[address]]
            assert es.endpoints[0].conditions.ready is True
            assert [(p.name, p.port) for p in es.ports] == [("http", port)]

            capacity = await lbnode.node_capacity(address, port)
            assert capacity is not None
            assert lbnode.CAPACITY_LOW <= capacity <= lbnode.CAPACITY_HIGH
            async with aiohttp.ClientSession() as session, \
                    session.get(f"http://{address}:{port}/health") as resp:
                body = await resp.json()
            assert body["name"] == name
            assert body["address"] == address

        svc = await client.CoreV1Api(api).read_namespaced_service(lbnode.SERVICE, ns)
        assert not svc.spec.selector, "selectorless: the nodes register their own endpoints"
        assert [p.port for p in svc.spec.ports] == [lbnode.PORT]

        # A slice deleted under a live node comes back (the node re-registers on resync).
        victim = lbnode.slice_name("lbnode-40")
        await discovery.delete_namespaced_endpoint_slice(victim, ns)

        async def recreated() -> bool:
            try:
                await discovery.read_namespaced_endpoint_slice(victim, ns)
            except client.ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        await eventually(recreated, 10, "the deleted slice to be recreated")
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)

    for name in nodes:
        with pytest.raises(client.ApiException) as exc_info:
            await discovery.read_namespaced_endpoint_slice(lbnode.slice_name(name), ns)
        assert exc_info.value.status == 404
    assert await lbnode.ready_nodes(api, ns) == []
    for _, address, port in nodes.values():
        assert await lbnode.node_capacity(address, port) is None, "stopped node is unreachable"


async def test_node_capacity_of_nothing_is_none() -> None:
    address = lbnode.address_for(42)
    started = time.monotonic()
    assert await lbnode.node_capacity(address, free_port(address)) is None
    assert time.monotonic() - started < 2


# --- prober -----------------------------------------------------------------------------------


def _metric(name: str, **labels: str) -> float | None:
    return prometheus_client.REGISTRY.get_sample_value(name, labels)


async def test_prober_sees_answers_empty_window_and_stale_regression(
    cluster: Cluster, dns_store: etcd_store.EtcdRecordStore, tmp_path: Path
) -> None:
    dnscfg = cluster.cfg.dns
    name = f"{uuid.uuid4().hex[:8]}.probe.{dnscfg.zone}"
    endpoint = plans.Endpoint(name=name, targets=(plans.Target("127.0.10.41", 1),
                                                  plans.Target("127.0.10.42", 2)), ttl=1)
    newer, older = endpoint.records(5), endpoint.records(3)
    out = tmp_path / "probe.jsonl"

    def seen() -> list[observations.Observation]:
        return observations.load(out) if out.exists() else []

    stop = asyncio.Event()
    await dns_store.apply(stores.Change(name, put=newer, marker=stores.ActiveMarker(5, "it")))
    started = time.monotonic()
    task = asyncio.create_task(
        prober.run([name], dnscfg.server_host, dnscfg.server_port, out, RATE, stop))
    try:
        await asyncio.sleep(2.0)
        assert any(o.serial == 5 and o.has_addresses for o in seen()), seen()[-3:]

        deleted_at = time.time()
        await dns_store.apply(stores.Change(name, delete=newer))

        async def nxdomain_seen() -> bool:
            return any(o.t > deleted_at and o.rcode == observations.NXDOMAIN for o in seen())

        await eventually(nxdomain_seen, 15, "NXDOMAIN after the delete (CoreDNS cache)")
        assert _metric("dnsrace_prober_empty", endpoint=name) == 1.0

        await dns_store.apply(stores.Change(name, put=older, marker=stores.ActiveMarker(3, "it")))

        async def older_seen() -> bool:
            return any(o.serial == 3 and o.has_addresses for o in seen())

        await eventually(older_seen, 15, "the older plan's records (negative cache)")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        elapsed = time.monotonic() - started
        await dns_store.delete_prefix(records.record_prefix(name))
        await dns_store.delete_prefix(records.active_key(name))

    found = observations.load(out)
    summary = observations.analyze(found)
    ep = summary.endpoints[name]
    assert ep.answers == len(found)
    assert ep.with_addresses > 0
    assert ep.rcodes.get(observations.NXDOMAIN, 0) > 0

    (window,) = ep.windows
    assert observations.NXDOMAIN in window.rcodes
    assert window.closed
    assert window.start > deleted_at
    assert 0 < window.duration < 15
    assert not ep.empty_at_end
    assert ep.first_empty == window.start

    assert ep.regression_pairs == [(5, 3)]
    assert ep.last_serial == 3
    assert ep.max_serial == 5
    assert {o.addresses for o in found if o.has_addresses} == {("127.0.10.41", "127.0.10.42")}

    # Rounds start on a fixed grid from the first one: about elapsed * rate of them.
    expected = elapsed * RATE
    assert 0.5 * expected <= len(found) <= 1.1 * expected + 1, (len(found), expected)
    spacing = [b.t - a.t for a, b in itertools.pairwise(found)]
    assert min(spacing) > 0.5 / RATE, "no two rounds bunched up"

    assert _metric("dnsrace_prober_serial", endpoint=name) == 3.0
    assert _metric("dnsrace_prober_empty", endpoint=name) == 0.0
    assert (_metric("dnsrace_prober_answers_total", endpoint=name, rcode="NXDOMAIN") or 0) > 0
    assert (_metric("dnsrace_prober_query_duration_seconds_count", type="TXT") or 0) > 0


async def test_prober_records_timeout_when_nothing_answers(tmp_path: Path) -> None:
    """An unreachable DNS server is no answer: TIMEOUT, within the query timeout."""
    port = free_port("127.0.0.1")
    started = time.monotonic()
    rcode, response = await prober.query("x.sim.internal", dns.rdatatype.A,
                                         "127.0.0.1", port, query_timeout=0.5)
    assert (rcode, response) == (observations.TIMEOUT, None)
    assert time.monotonic() - started < 1.5


async def test_prober_skips_missed_ticks_instead_of_drifting(tmp_path: Path) -> None:
    """Every query times out (0.35 s) at 10 rounds/s: rounds run ~every 0.4 s, ticks are
    skipped and counted, and the file still closes cleanly on stop."""
    port = free_port("127.0.0.1")
    out = tmp_path / "slow.jsonl"
    p = prober.Prober(["slow.probe.sim.internal"], "203.0.113.1", port, out, rate=RATE,
                      timeout=0.35)
    missed_before = _metric("dnsrace_prober_missed_rounds_total") or 0.0
    stop = asyncio.Event()
    task = asyncio.create_task(p.run(stop))
    await asyncio.sleep(2.0)
    stop.set()
    stats = await asyncio.wait_for(task, timeout=5)
    found = observations.load(out)
    assert len(found) == stats.rounds
    assert 3 <= stats.rounds <= 7
    assert stats.missed >= 2 * stats.rounds - 2
    assert (_metric("dnsrace_prober_missed_rounds_total") or 0.0) - missed_before == stats.missed
    assert {o.rcode for o in found} == {observations.TIMEOUT}
    # Rounds still start on the 0.1 s grid.
    for a, b in itertools.pairwise(found):
        gap = (b.t - a.t) / (1 / RATE)
        assert abs(gap - round(gap)) < 0.3, gap
    assert p.health()[0]


async def test_serving_healthz_and_metrics() -> None:
    state = {"ok": True}
    runner = await serving.serve("127.0.0.1", 0,
                                 lambda: (state["ok"], "ok" if state["ok"] else "stalled"))
    url = serving.bound_url(runner)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok")
            state["ok"] = False
            async with session.get(url + "/healthz") as resp:
                assert (resp.status, await resp.text()) == (503, "stalled")
            async with session.get(url + "/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == prometheus_client.CONTENT_TYPE_LATEST
                assert "dnsrace_prober_missed_rounds_total" in await resp.text()
    finally:
        await runner.cleanup()
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
            pytest.fail(f"still serving after cleanup: {resp.status}")


async def test_endpoints_from_plans_takes_the_highest_serial(
    api: client.ApiClient, scratch_namespace: str
) -> None:
    ns = scratch_namespace
    assert await prober.endpoints_from_plans(api, ns) == []
    custom = client.CustomObjectsApi(api)
    zone = "sim.internal"
    for serial, names in ((7, ["a", "b", "c"]), (12, ["a", "b"]), (9, ["z"])):
        plan = plans.Plan(serial=serial, endpoints=tuple(
            plans.Endpoint(f"{n}.probe.{zone}", (plans.Target("127.0.10.1", 1),))
            for n in names))
        await custom.create_namespaced_custom_object(
            plans.GROUP, plans.VERSION, ns, plans.PLURAL,
            {"apiVersion": f"{plans.GROUP}/{plans.VERSION}", "kind": plans.KIND,
             "metadata": {"name": plans.object_name(serial)}, "spec": plan.to_spec()})
    assert await prober.endpoints_from_plans(api, ns) == [f"a.probe.{zone}", f"b.probe.{zone}"]
