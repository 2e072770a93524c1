"""The documented metric names, found by a live scrape: a real enactor and a real prober run as
processes against the cluster, the lab's Prometheus (Debian's package, ``localplane.prometheus``)
scrapes them with the config ``core.scrape`` renders, and its HTTP API must hold every name
docs/metrics.md gives those components, with ``up == 1`` for each target.

The enactor is given work so that its labelled series exist: a DnsPlan of two endpoints of the
test's own (names under a random tag, so nothing of the lab's zone is touched) and a delay Fault
on its endpoint writes (for ``dnsrace_fault_injections_total``). On the local plane CoreDNS's own
metrics are scraped too. A missing Prometheus fails: ``make test`` installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client

from dnsrace.core import plans, scrape
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import processes, prometheus
from tests import metrics_support
from tests.conftest import Cluster

ENACTOR_PORT = 18280
PROBER_PORT = 18285
PROMETHEUS_PORT = 19093
SERIAL = 7

PROBER_NEEDS_DATA = {"dnsrace_prober_serial"}
"""Set only once an endpoint answers a ``serial=`` TXT record; the prober probes the lab's own
endpoint names, which this test does not write (another run may hold them, or nobody)."""


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                s.get(url) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def test_documented_names_are_scraped_through_prometheus(
    cluster: Cluster, api: client.ApiClient, dns_store: etcd_store.EtcdRecordStore,
    namespace: str, tmp_path: Path,
) -> None:
    if prometheus.locate() is None:
        pytest.fail("prometheus is not installed: run `make setup-prometheus`")
    cfg = cluster.cfg
    procs = processes.Processes(tmp_path)
    env = dict(os.environ, DNSRACE_KUBECONFIG=str(cluster.kubeconfig),
               DNSRACE_NAMESPACE=namespace, DNSRACE_DNS_SERVER=cfg.dns.server,
               DNSRACE_DNS_ETCD=cfg.dns.etcd_endpoint, PYTHONUNBUFFERED="1")
    co = client.CustomObjectsApi(api)
    await co.create_namespaced_custom_object("dnsrace.io", "v1alpha1", namespace, "faults", {
        "apiVersion": "dnsrace.io/v1alpha1", "kind": "Fault",
        "metadata": {"name": "slow-writes"},
        "spec": {"target": "enactor-a", "action": "delay", "step": "endpoint-write",
                 "delaySeconds": 0.01}})
    procs.start("enactor-a", [sys.executable, "-m", "dnsrace", "enactor", "--name", "enactor-a"],
                env=env | {"DNSRACE_HTTP_PORT": str(ENACTOR_PORT)}, cwd=tmp_path)
    procs.start("prober", [sys.executable, "-m", "dnsrace", "prober", "--out",
                           str(tmp_path / "prober.jsonl"), "--rate", "2"],
                env=env | {"DNSRACE_HTTP_PORT": str(PROBER_PORT)}, cwd=tmp_path)
    tag = uuid.uuid4().hex[:6]
    endpoints = [f"{tag}-a.{cfg.dns.zone}", f"{tag}-b.{cfg.dns.zone}"]
    plan_name = f"plan-{SERIAL:010d}"

    targets = [scrape.Target("enactor", "enactor-a", f"127.0.0.1:{ENACTOR_PORT}"),
               scrape.Target("prober", "prober", f"127.0.0.1:{PROBER_PORT}")]
    if cluster.plane is not None:  # the local plane's CoreDNS, its prometheus plugin
        targets.append(scrape.Target(
            "coredns", "coredns", f"{cfg.local.host}:{cfg.local.coredns_metrics_port}"))

    def logs() -> str:
        return "\n".join(f"--- {n}\n{procs.log_path(n).read_text()[-3000:]}"
                         for n in ("enactor-a", "prober") if procs.log_path(n).exists())

    handle: prometheus.Handle | None = None
    try:
        handle = await prometheus.start(cfg, tmp_path, targets, port=PROMETHEUS_PORT,
                                        interval=0.5)
        try:
            up = await handle.wait_scraped(timeout=90)
        except prometheus.QueryError as exc:
            pytest.fail(f"{exc}\n{logs()}")
        assert {s["metric"]["job"]: s["value"][1] for s in up} == {
            t.job: "1" for t in targets}, up

        async def enactor_ready() -> bool:  # kopf's watches up: it has listed the Fault
            return await healthy(f"http://127.0.0.1:{ENACTOR_PORT}/healthz")

        await poll(enactor_ready, 60, f"enactor-a ready\n{logs()}")
        await asyncio.sleep(1.0)
        await co.create_namespaced_custom_object(
            plans.GROUP, plans.VERSION, namespace, plans.PLURAL, {
                "apiVersion": "dnsrace.io/v1alpha1", "kind": "DnsPlan",
                "metadata": {"name": plan_name},
                "spec": {"serial": SERIAL, "endpoints": [
                    {"name": n, "targets": [{"address": "127.0.10.1", "weight": 1}]}
                    for n in endpoints]}})

        async def applied() -> bool:
            got = await handle.query(
                f'dnsrace_enactor_last_applied_serial{{process="enactor-a"}} == {SERIAL}')
            return bool(got)

        await poll(applied, 90, f"enactor-a applying plan {SERIAL}, seen through Prometheus\n"
                                f"{logs()}")
        assert (await dns_store.read(endpoints[0])).records, "the plan reached the DNS etcd"

        wanted = {"enactor": metrics_support.expected_series("enactor"),
                  "prober": metrics_support.expected_series("prober") - PROBER_NEEDS_DATA}
        assert "dnsrace_enactor_reconcile_time_seconds_bucket" in wanted["enactor"]
        assert "dnsrace_fault_injections_total" in wanted["enactor"]
        missing: dict[str, set[str]] = {}

        async def all_names() -> bool:
            missing.clear()
            for job, names in wanted.items():
                gap = names - await handle.metric_names(f'{{job="{job}"}}')
                if gap:
                    missing[job] = gap
            return not missing

        await poll(all_names, 30, f"documented names scraped; missing {missing}")

        success = await handle.query(
            'dnsrace_enactor_reconcile_total{process="enactor-a", result="success"}')
        assert float(success[0]["value"][1]) >= 1
        delays = await handle.query('sum(dnsrace_fault_injections_total{job="enactor", '
                                    'action="delay", step="endpoint-write"})')
        assert float(delays[0]["value"][1]) >= len(endpoints)
        rounds = await handle.query('dnsrace_prober_rounds_total{job="prober"}')
        assert float(rounds[0]["value"][1]) >= 1
        if cluster.plane is not None:
            coredns = await handle.metric_names('{job="coredns"}')
            assert {"coredns_dns_requests_total", "coredns_dns_responses_total"} <= coredns
        assert (tmp_path / "prometheus.yml").is_file()
    finally:
        if handle is not None:
            await handle.stop()
        # Deleted while the enactor runs, so its finalizer comes off and the namespace can go.
        try:
            with contextlib.suppress(client.ApiException):  # 404: the test ended before it
                await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                         plans.PLURAL, plan_name)
            for _ in range(40):
                items = (await co.list_namespaced_custom_object(
                    plans.GROUP, plans.VERSION, namespace, plans.PLURAL))["items"]
                if not items:
                    break
                await asyncio.sleep(0.25)
        finally:
            procs.stop("prober")
            procs.stop("enactor-a")
    assert not handle.alive()  # stopped, its storage kept under tmp_path
