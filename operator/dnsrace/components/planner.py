"""The DNS Planner as a kopf controller: ``dnsrace planner``.

It watches the EndpointSlices of the ``dynamodb-lb`` Service (filled by the endpointslice
controller from ready pods in kind, by the LB node processes locally), asks each ready node for
its capacity, and on every interval or slice change creates the next immutable DnsPlan covering
all of the lab's endpoints (``core.planning``). Serials come from a ConfigMap counter bumped with
optimistic concurrency before each create, so they never repeat, also across restarts; the plan's
object name carries the serial, so a repeat would also be refused by the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes_asyncio import client
from prometheus_client import Counter, Gauge, Histogram

from dnsrace import settings as settings_mod
from dnsrace.components import faults, kopfing, lbnode, outages
from dnsrace.core import planning, plans
from dnsrace.kube import client as kube_client
from dnsrace.kube import plans as kube_plans

log = logging.getLogger(__name__)

COUNTER_NAME = "dnsrace-planner"
CREATED = Counter("dnsrace_planner_plans_created_total", "DnsPlans created")
SERIAL = Gauge("dnsrace_planner_last_serial", "Serial of the last plan created")
NODES = Gauge("dnsrace_planner_usable_nodes", "LB nodes with capacity in the last plan")
# In the style of controller-runtime's controller_runtime_reconcile_total/_time_seconds: one
# reconcile is one planning pass (an interval elapsed or the LB pool changed).
RECONCILE_RESULTS = ("success", "skipped", "error")
RECONCILES = Counter(
    "dnsrace_planner_reconcile_total",
    "Planning passes, by result: success (a plan created), skipped (no LB node with capacity: "
    "no plan), error (raised; retried with back-off)", ["result"])
RECONCILE_TIME = Histogram(
    "dnsrace_planner_reconcile_time_seconds",
    "Length of one planning pass (capacity queries, serial reservation, create)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))


async def next_serial(api: client.ApiClient, namespace: str) -> int:
    """Reserve the next serial: read-modify-write of the counter, retried on conflict."""
    core = client.CoreV1Api(api)
    while True:
        try:
            cm = await core.read_namespaced_config_map(COUNTER_NAME, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=COUNTER_NAME),
                                      data={"lastSerial": "1"})
            try:
                await core.create_namespaced_config_map(namespace, body)
                return 1
            except client.ApiException as create_exc:
                if create_exc.status == 409:
                    continue
                raise
        serial = int((cm.data or {}).get("lastSerial", "0")) + 1
        cm.data = {"lastSerial": str(serial)}
        try:
            await core.replace_namespaced_config_map(COUNTER_NAME, namespace, cm)
            return serial
        except client.ApiException as exc:
            if exc.status != 409:  # someone else bumped it: read again
                raise


class Planner:
    def __init__(self, cfg: settings_mod.Settings, api: client.ApiClient) -> None:
        self.cfg = cfg
        self.api = api
        self.ns = cfg.kube.namespace
        self.store = kube_plans.KubePlanStore(api, self.ns, cfg.dns.zone)
        self.endpoints = planning.lab_endpoints(cfg.dns.zone, cfg.lab.accounts)
        self.changed = asyncio.Event()
        self.faults = faults.FaultTable("planner", api, self.ns)

    def register(self, reg: kopf.OperatorRegistry) -> None:
        self.faults.register(reg)

        @kopf.on.event("discovery.k8s.io", "v1", "endpointslices", registry=reg,
                       labels={"kubernetes.io/service-name": lbnode.SERVICE})
        async def slice_event(body: Mapping[str, Any], **_: Any) -> None:
            self.changed.set()

    async def nodes(self) -> list[planning.Node]:
        ready = await lbnode.ready_nodes(self.api, self.ns)
        capacities = await asyncio.gather(
            *(lbnode.node_capacity(address) for _, address in ready)
        )
        return [planning.Node(name, address, cap or 0)
                for (name, address), cap in zip(ready, capacities, strict=True)]

    async def plan_once(self) -> plans.Plan | None:
        nodes = await self.nodes()
        NODES.set(sum(1 for n in nodes if n.capacity > 0))
        if not any(n.capacity > 0 for n in nodes):
            log.warning("no LB node has capacity: no plan (an empty plan is never written)")
            return None
        await self.faults.hook("plan-create", None)
        for _ in range(5):
            serial = await next_serial(self.api, self.ns)
            plan = planning.make_plan(serial, self.endpoints, nodes,
                                      ttl=self.cfg.dns.record_ttl)
            assert plan is not None  # some node has capacity, checked above
            try:
                await self.store.create(plan, labels={"app.kubernetes.io/managed-by":
                                                      "dnsrace-planner"})
            except client.ApiException as exc:
                if kube_client.status_of(exc) == 409:
                    continue  # serial taken (the counter was reset): take the next
                raise
            CREATED.inc()
            SERIAL.set(serial)
            return plan
        raise RuntimeError("could not reserve a fresh serial after 5 tries")

    async def work(self, stop: asyncio.Event) -> None:
        interval = self.cfg.lab.planner_interval
        backoff = outages.Backoff(base=interval)
        for result in RECONCILE_RESULTS:  # every series from the start, at 0
            RECONCILES.labels(result)
        while not stop.is_set():
            started = time.monotonic()
            wait = interval
            try:
                plan = await self.plan_once()
                RECONCILES.labels("success" if plan is not None else "skipped").inc()
                if plan is not None:
                    log.debug("plan %s created", plan.serial)
                backoff.reset()
            except Exception as exc:
                RECONCILES.labels("error").inc()
                wait = backoff.next()
                what = outages.describe(exc)
                if what is None:
                    log.exception("planning failed; retrying in %.1fs", wait)
                else:
                    log.warning("planning failed, %s; retrying in %.1fs", what, wait)
            RECONCILE_TIME.observe(time.monotonic() - started)
            self.changed.clear()
            remaining = max(0.0, wait - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=remaining)
            if self.changed.is_set():  # coalesce a burst of slice updates
                await asyncio.sleep(min(0.05, interval))


async def run(cfg: settings_mod.Settings, stop: asyncio.Event) -> None:
    api = await kube_client.api_client(cfg.api_kubeconfig)
    planner = Planner(cfg, api)
    reg = kopfing.registry(cfg.api_kubeconfig)
    planner.register(reg)
    try:
        await kopfing.run(reg, "planner", planner.ns, stop, planner.work, cfg.lab.http_port)
    finally:
        await api.close()
