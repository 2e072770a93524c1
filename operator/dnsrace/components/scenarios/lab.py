"""The lab every scenario runs in: its components started, supervised and stopped, and the
calls that watch them.

``Lab`` starts the components as processes of this machine (``python -m dnsrace ...``) against
the local control plane, with logs and pid files in the run folder, restarts one that dies (as
a Deployment would) and records it; on a cluster dnsrace did not start (kind) it scales the
chart's Deployments instead. Its calls to the API server and the DNS etcd wait out an outage
and record it. It records the DNS store's transactions (``store.jsonl``) and the plans'
lifetimes. Scenarios (``race``) use it and decide nothing here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
from kubernetes_asyncio import client, watch

from dnsrace import settings as settings_mod
from dnsrace.components import lbnode, outages, prober
from dnsrace.core import observations, planning, plans, records, supervision
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.dnsstore import recorder as store_recorder
from dnsrace.kube import client as kube_client
from dnsrace.localplane import dynamodb, processes
from dnsrace.report import write_report

Report = Callable[[str], None]
T = TypeVar("T")

OUTAGE_LIMIT = 120.0
"""Seconds the runner waits out an unreachable API server or DNS etcd before it gives up."""
OUTAGE_ERRORS = outages.ERRORS



@dataclasses.dataclass(frozen=True)
class LabParams:
    """What every scenario's components are started with."""

    safeguards: Safeguards = dataclasses.field(default_factory=Safeguards)
    planner_interval: float = 0.25
    keep: int = 6
    accounts: int = 8
    probe_rate: float = 10.0


async def dns_query(cfg: settings_mod.Settings, name: str) -> tuple[str, list[str]]:
    """One independent query through CoreDNS: (rcode or TIMEOUT, addresses)."""
    msg = dns.message.make_query(name + ".", dns.rdatatype.A)
    try:
        ans = await dns.asyncquery.udp(msg, prober.server_address(cfg.dns.server_host),
                                       port=cfg.dns.server_port,
                                       timeout=2.0)
    except dns.exception.Timeout:
        return "TIMEOUT", []
    addrs = sorted(rr.to_text() for rrset in ans.answer for rr in rrset
                   if rrset.rdtype == dns.rdatatype.A)
    return dns.rcode.to_text(ans.rcode()), addrs



class Lab:
    """The lab's components as local processes, and the API/etcd clients to watch them."""

    def __init__(self, cfg: settings_mod.Settings, params: LabParams, run_dir: Path,
                 report: Report) -> None:
        self.cfg = cfg
        self.params = params
        self.run_dir = run_dir
        self.report = report
        self.procs = processes.Processes(run_dir)
        self.endpoints = planning.lab_endpoints(cfg.dns.zone, params.accounts)
        self.regional = planning.regional_endpoint(cfg.dns.zone)
        self.ns = cfg.kube.namespace
        self.api: client.ApiClient
        self.store: etcd_store.EtcdRecordStore
        self.timeline: list[dict[str, Any]] = []
        self.cluster = cfg.external_cluster
        """On a cluster dnsrace did not start (kind), the components are the chart's
        Deployments: started and stopped by scaling, configured through their env; the prober
        runs inside this process, against the DNS address the environment names."""
        self.scaled: set[str] = set()
        self.started_at = 0.0
        self._prober: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self.lifecycle: dict[int, dict[str, float]] = {}
        """serial -> when the runner saw the plan appear and its deletion begin (unix times),
        from a watch."""
        self._watches: list[asyncio.Task[None]] = []
        self.recorder: store_recorder.StoreRecorder | None = None
        """Every transaction on the lab's keys in the DNS etcd (``store.jsonl``)."""
        self.attempts_at_empty: int | None = None
        """enactor-a's stalls served when the regional records were first removed."""
        self.stall_retunes: list[dict[str, float]] = []
        """When and how enactor-a's stall was measured again while the race had not yet hit."""
        self.backend: dynamodb.Backend | None = None
        """DynamoDB Local behind the LB nodes (local mode)."""
        self.outages: list[dict[str, Any]] = []
        """Calls that found the API server or the DNS etcd unreachable, and for how long."""
        self.supervisor = supervision.Supervisor()
        """Restarts local components that exit, as a Deployment's kubelet would."""
        self._specs: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._supervising: asyncio.Task[None] | None = None

    async def call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """``make()``, retried with back-off while the API server or the DNS etcd is
        unreachable (or answers 5xx/429), for up to ``OUTAGE_LIMIT`` s; each outage is
        recorded (``outages``, the timeline) so the verdict can state it."""
        delay, since = 0.25, None
        while True:
            try:
                result = await make()
            except OUTAGE_ERRORS as exc:
                if isinstance(exc, client.ApiException) and exc.status and (
                        exc.status < 500 and exc.status != 429):
                    raise
                now = time.time()
                if since is None:
                    since = now
                    self.mark("unreachable", call=what, error=type(exc).__name__)
                if now - since > OUTAGE_LIMIT:
                    raise RuntimeError(f"{what}: unreachable for {OUTAGE_LIMIT:.0f}s: "
                                       f"{exc!r}") from exc
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            if since is not None:
                self.outages.append({"call": what, "start": since, "end": time.time()})
                self.mark("reachable again", call=what, after=round(time.time() - since, 2))
            return result

    def mark(self, what: str, **extra: Any) -> float:
        now = time.time()
        self.timeline.append({"t": now, "event": what, **extra})
        self.report(what + (f" {extra}" if extra else ""))
        return now

    async def __aenter__(self) -> Lab:
        self.started_at = time.time()
        self.api = await kube_client.api_client(self.cfg.api_kubeconfig)
        self.store = etcd_store.EtcdRecordStore.from_endpoint(self.cfg.dns.etcd_endpoint,
                                                              scope=self.ns)
        if not self.cluster:
            self._supervising = asyncio.create_task(self._supervise())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._supervising is not None:
            self._supervising.cancel()
            await asyncio.gather(self._supervising, return_exceptions=True)
        self.write_restarts()
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        await self.stop_recorder()
        await self.stop("prober")
        for name in sorted(self.scaled):  # leave the planner of a cluster stopped
            if name == "planner":
                await self.stop(name)
        await asyncio.gather(*(asyncio.to_thread(self.procs.stop, m.name, 10)
                               for m in self.procs.all()))
        if self.backend is not None:
            await self.backend.stop()
        await self.store.close()
        await self.api.close()

    # -- processes ----------------------------------------------------------------------------

    def _env(self, port: int) -> dict[str, str]:
        p = self.params
        return dict(
            os.environ,
            DNSRACE_KUBECONFIG=str(self.cfg.kubeconfig),
            DNSRACE_DNS_SERVER=self.cfg.dns.server,
            DNSRACE_DNS_ETCD=self.cfg.dns.etcd_endpoint,
            DNSRACE_NAMESPACE=self.ns,
            DNSRACE_SAFEGUARDS=str(p.safeguards),
            DNSRACE_PLANNER_INTERVAL=str(p.planner_interval),
            DNSRACE_KEEP=str(p.keep),
            DNSRACE_ACCOUNTS=str(p.accounts),
            DNSRACE_HTTP_PORT=str(port),
            PYTHONUNBUFFERED="1",
        )

    async def start(self, name: str, *args: str, port: int) -> None:
        if self.cluster and name == "prober":
            stop = asyncio.Event()
            task = asyncio.create_task(prober.run(
                self.endpoints, self.cfg.dns.server_host, self.cfg.dns.server_port,
                self.run_dir / "prober.jsonl", self.params.probe_rate, stop))
            self._prober = (task, stop)
        elif self.cluster and name.startswith("lbnode"):
            return  # a StatefulSet behind the Service; Kubernetes fills its EndpointSlices
        elif self.cluster:
            await self._scale(name, 1, configure=True)
            self.scaled.add(name)
        else:
            argv = [sys.executable, "-m", "dnsrace", *args]
            env = self._env(port)
            self.procs.start(name, argv, env=env, cwd=self.run_dir)
            self._specs[name] = (argv, env)
            self.supervisor.started(name, time.time())

    async def start_components(self, port: int, front_door: list[str]) -> None:
        """The LB nodes (behind ``front_door``, the backend they forward to, if any), the
        enactors, the prober and the planner; component ``i`` serves metrics on ``port + i``."""
        cfg = self.cfg
        for i in range(cfg.lab.lb_nodes):
            await self.start(f"lbnode-{i}", "lbnode", "--name", f"lbnode-{i}", *front_door,
                             port=port + 10 + i)
        want = 1 if self.cluster else cfg.lab.lb_nodes

        async def registered() -> bool:
            return len(await lbnode.ready_nodes(self.api, self.ns)) >= want

        if not await wait_until(registered, 30):
            raise RuntimeError("LB nodes did not register; see logs in " + str(self.run_dir))
        for i, name in enumerate(cfg.lab.enactors):
            await self.start(name, "enactor", "--name", name, port=port + 1 + i)
        await self.start("prober", "prober", "--out", str(self.run_dir / "prober.jsonl"),
                         "--rate", str(self.params.probe_rate), port=port + 5)
        await self.start("planner", "planner", port=port)

    async def regional_answering(self, timeout: float = 60) -> None:
        """Wait until CoreDNS answers the regional endpoint with addresses (the warm-up)."""

        async def answers() -> bool:
            rcode, addrs = await dns_query(self.cfg, self.regional)
            return rcode == "NOERROR" and bool(addrs)

        if not await wait_until(answers, timeout):
            raise RuntimeError("the regional endpoint never answered during warm-up; "
                               f"see logs in {self.run_dir}/logs")

    async def slow_down(self, write_delay: float, cleanup_delay: float) -> None:
        """Every enactor's endpoint writes and clean-up get slow (delay Faults), as Route 53
        changes and a clean-up through many plans are."""
        for name in self.cfg.lab.enactors:
            await self.create_fault(f"{name}-slow-writes", name, write_delay)
            await self.create_fault(f"{name}-slow-cleanup", name, cleanup_delay,
                                    step="clean-up")

    async def _supervise(self) -> None:
        """Restart components that exit (a crash, a kill Fault, an outside kill -9)."""
        while True:
            await asyncio.sleep(0.5)
            for name in self.supervisor.supervised():
                managed = self.procs.get(name)
                alive = managed is not None and managed.alive()
                now = time.time()
                code = None if alive else await asyncio.to_thread(
                    self.procs.exit_status, name, 1.0)
                if self.supervisor.tick(name, alive, code, now):
                    last = self.supervisor.exits[-1]
                    self.mark("component restarted", component=name, how=last.how,
                              restarts=last.restarts + 1)
                    argv, env = self._specs[name]
                    self.procs.start(name, argv, env=env, cwd=self.run_dir)
                    self.supervisor.started(name, now)

    async def write_records(self, events: list[dict[str, Any]],
                            fault_status: list[dict[str, Any]]) -> None:
        """The run folder's records every scenario keeps: events, plans, faults, timeline and
        the plans' lifecycle (docs/run-format.md)."""
        def write(name: str, body: Any) -> None:
            (self.run_dir / name).write_text(json.dumps(body, indent=1))

        write("events.json", events)
        write("plans.json", [{"name": p["metadata"]["name"], "serial": p["spec"]["serial"],
                              "status": p.get("status", {})} for p in await self.plan_objects()])
        write("faults.json", fault_status)
        write("timeline.json", self.timeline)
        write("lifecycle.json", {"plans": {str(k): v for k, v in sorted(self.lifecycle.items())},
                                 "regional_writes": self.regional_writes})

    def write_restarts(self) -> list[dict[str, Any]]:
        exits = [dataclasses.asdict(e) | {"how": e.how} for e in self.supervisor.exits]
        (self.run_dir / "restarts.json").write_text(json.dumps(exits, indent=1))
        return exits

    async def stop(self, name: str) -> None:
        self.supervisor.forget(name)
        if name == "prober" and self._prober is not None:
            task, stop = self._prober
            stop.set()
            await task
            self._prober = None
        elif self.cluster and name in self.scaled:
            await self._scale(name, 0)
            self.scaled.discard(name)
        elif not self.cluster:
            await asyncio.to_thread(self.procs.stop, name, 10)

    async def _scale(self, name: str, replicas: int, configure: bool = False) -> None:
        """Scale the component's Deployment and wait until it has rolled out."""
        apps = client.AppsV1Api(self.api)
        patch: dict[str, Any] = {"spec": {"replicas": replicas}}
        if configure:
            current = await apps.read_namespaced_deployment(name, self.ns)
            container = current.spec.template.spec.containers[0].name
            env = {k: v for k, v in self._env(0).items() if k in (
                "DNSRACE_SAFEGUARDS", "DNSRACE_PLANNER_INTERVAL", "DNSRACE_KEEP",
                "DNSRACE_ACCOUNTS")}
            patch["spec"]["template"] = {"spec": {"containers": [{
                "name": container,
                "env": [{"name": k, "value": v} for k, v in env.items()]}]}}
        await apps.patch_namespaced_deployment(name, self.ns, patch)

        async def rolled_out() -> bool:
            d = await apps.read_namespaced_deployment(name, self.ns)
            st = d.status
            return bool(st.observed_generation and st.observed_generation >= d.metadata.generation
                        and (st.updated_replicas or 0) == replicas
                        and (st.ready_replicas or 0) == replicas
                        and (st.replicas or 0) == replicas)

        if not await wait_until(rolled_out, 180, interval=1):
            raise RuntimeError(f"Deployment {name} did not reach {replicas} ready replicas")

    # -- lab state ----------------------------------------------------------------------------

    async def reset(self) -> None:
        """Remove what earlier runs left: faults, plans (finalizers first), DNS keys, slices;
        every step is idempotent, so an outage mid-way retries the whole."""
        await self.call("reset the lab", self._reset)

    async def _reset(self) -> None:
        co = client.CustomObjectsApi(self.api)
        faults = await co.list_namespaced_custom_object("dnsrace.io", "v1alpha1", self.ns,
                                                        "faults")
        for item in faults["items"]:
            await _ignore_404(co.delete_namespaced_custom_object(
                "dnsrace.io", "v1alpha1", self.ns, "faults", item["metadata"]["name"]))
        existing = await co.list_namespaced_custom_object(plans.GROUP, plans.VERSION, self.ns,
                                                          plans.PLURAL)
        for item in existing["items"]:
            name = item["metadata"]["name"]
            if item["metadata"].get("finalizers"):
                await _ignore_404(co.patch_namespaced_custom_object(  # type: ignore[call-arg]
                    plans.GROUP, plans.VERSION, self.ns, plans.PLURAL, name,
                    {"metadata": {"finalizers": None}},
                    _content_type="application/merge-patch+json"))
            await _ignore_404(co.delete_namespaced_custom_object(
                plans.GROUP, plans.VERSION, self.ns, plans.PLURAL, name))
        # This lab's endpoints and markers only: another lab (namespace) may share the zone.
        for endpoint in self.endpoints:
            await self.store.delete_prefix(records.record_prefix(endpoint))
        await self.store.delete_prefix(records.active_prefix(self.ns))
        if self.cluster:
            return  # the endpointslice controller owns the LB Service's slices there
        disc = client.DiscoveryV1Api(self.api)
        slices = await disc.list_namespaced_endpoint_slice(
            self.ns, label_selector=f"kubernetes.io/service-name={lbnode.SERVICE}")
        for item in slices.items:
            await _ignore_404(disc.delete_namespaced_endpoint_slice(item.metadata.name,
                                                                    self.ns))

    async def follow_lifecycle(self) -> None:
        """Start recording the DNS store and watching plans (watches, so no polling load)."""
        self.recorder = store_recorder.StoreRecorder(self.store, self.cfg.dns.zone, self.ns,
                                                     self.run_dir / "store.jsonl",
                                                     self.endpoints)
        await self.recorder.start()
        self._watches = [asyncio.create_task(self._watch_plans())]

    async def stop_recorder(self) -> None:
        if self.recorder is not None:
            await self.recorder.stop()

    @property
    def regional_writes(self) -> list[tuple[float, int, str]]:
        """(unix time, serial, enactor) of every active-marker write on the regional endpoint."""
        if self.recorder is None:
            return []
        return [(w.t, w.serial, w.enactor) for w in self.recorder.state.writes
                if w.name == self.regional]

    def regional_empty_in_store(self) -> bool:
        return self.recorder is not None and self.regional in self.recorder.state.open

    async def _watch_plans(self) -> None:
        co = client.CustomObjectsApi(self.api)
        while True:
            w = watch.Watch()
            try:
                async for ev in w.stream(co.list_namespaced_custom_object, plans.GROUP,
                                         plans.VERSION, self.ns, plans.PLURAL,
                                         timeout_seconds=600):
                    obj = ev.get("object")
                    if not isinstance(obj, dict) or "spec" not in obj:
                        continue
                    times = self.lifecycle.setdefault(int(obj["spec"]["serial"]), {})
                    now = time.time()
                    times.setdefault("seen", now)
                    if ev.get("type") == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                        times.setdefault("deleting", now)
            except asyncio.CancelledError:
                raise
            except Exception:  # API errors and a restarting API server alike: watch again
                await asyncio.sleep(0.5)
            finally:
                w.stop()

    def measured(self, since: float, until: float) -> tuple[list[float], list[float]]:
        """Plan lifetimes and creation-to-regional-write times of plans seen in the period."""
        seen = {s: t for s, t in self.lifecycle.items() if since <= t.get("seen", 0) <= until}
        lifetime = [t["deleting"] - t["seen"] for t in seen.values() if "deleting" in t]
        first_write: dict[int, float] = {}
        for t, serial, _ in self.regional_writes:
            first_write.setdefault(serial, t)
        regional = [first_write[s] - t["seen"] for s, t in seen.items() if s in first_write]
        return lifetime, regional

    async def newest_serial(self) -> int:
        return max((int(i["spec"]["serial"]) for i in await self.plan_objects()
                    if not i["metadata"].get("deletionTimestamp")), default=0)

    async def plan_objects(self) -> list[dict[str, Any]]:
        co = client.CustomObjectsApi(self.api)
        result = await self.call("list plans", lambda: co.list_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.ns, plans.PLURAL))
        items: list[dict[str, Any]] = result["items"]
        return sorted(items, key=lambda i: int(i["spec"]["serial"]))

    async def markers(self) -> dict[str, int]:
        found = await self.call("read markers", self.store.markers)
        return {n: m.serial for n, (m, _) in found.items()}

    async def events(self) -> list[dict[str, Any]]:
        """This run's Events (Events of earlier runs live on in the namespace for an hour)."""
        core = client.CoreV1Api(self.api)
        ev = await self.call("list events", lambda: core.list_namespaced_event(self.ns))
        out = [{"time": str(stamp), "type": e.type,
                "reason": e.reason, "object": e.involved_object.name,
                "source": e.source.component if e.source else None, "message": e.message}
               for e in ev.items
               if (stamp := e.last_timestamp or e.event_time) is not None
               and stamp.timestamp() >= self.started_at]
        return sorted(out, key=lambda e: e["time"])

    async def create_fault(self, name: str, target: str, delay: float,
                           endpoints: list[str] | None = None, jitter: float = 0.0,
                           step: str = "endpoint-write") -> None:
        spec: dict[str, Any] = {"target": target, "action": "delay", "step": step,
                                "delaySeconds": round(delay, 3)}
        if jitter:
            spec["jitterSeconds"] = round(jitter, 3)
        if endpoints:
            spec["endpoints"] = endpoints
        await self.create_fault_spec(name, spec)

    async def create_process_fault(self, name: str, target: str, action: str,
                                   duration: float | None = None) -> None:
        """A ``kill`` or ``pause`` Fault: the target acts on itself, in local mode and in kind."""
        spec: dict[str, Any] = {"target": target, "action": action}
        if duration is not None:
            spec["durationSeconds"] = round(duration, 3)
        await self.create_fault_spec(name, spec)

    async def create_fault_spec(self, name: str, spec: dict[str, Any]) -> None:
        co = client.CustomObjectsApi(self.api)

        async def create() -> None:
            try:
                await co.create_namespaced_custom_object(
                    "dnsrace.io", "v1alpha1", self.ns, "faults",
                    {"apiVersion": "dnsrace.io/v1alpha1", "kind": "Fault",
                     "metadata": {"name": name}, "spec": spec})
            except client.ApiException as exc:
                if exc.status != 409:  # 409: an attempt that seemed to fail went through
                    raise

        await self.call(f"create fault {name}", create)

    async def cycles(self, port: int) -> float | None:
        """Plans taken so far by the enactor serving metrics on ``port``; None on a cluster,
        where its metrics port is inside a pod."""
        if self.cluster:
            return None
        url = f"http://127.0.0.1:{port}/metrics"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return str(resp.read().decode())

        try:
            text = await asyncio.to_thread(fetch)
        except OSError:  # the enactor is down (or restarting): no figure this time
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith("dnsrace_enactor_cycles_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def faults(self) -> list[dict[str, Any]]:
        co = client.CustomObjectsApi(self.api)
        result = await self.call("list faults", lambda: co.list_namespaced_custom_object(
            "dnsrace.io", "v1alpha1", self.ns, "faults"))
        items: list[dict[str, Any]] = result["items"]
        return [{"name": i["metadata"]["name"], "spec": i["spec"],
                 "status": i.get("status", {})} for i in items]

    async def patch_fault(self, name: str, spec: dict[str, Any]) -> None:
        """Change a live Fault's spec (as ``kubectl edit fault`` would); its target picks the
        change up from its watch and keeps its counts."""
        co = client.CustomObjectsApi(self.api)
        await self.call(f"patch fault {name}", lambda: co.patch_namespaced_custom_object(
            "dnsrace.io", "v1alpha1", self.ns, "faults", name, {"spec": spec},
            _content_type="application/merge-patch+json"))  # type: ignore[call-arg]

    async def delete_faults(self) -> None:
        for fault in await self.faults():
            await self.delete_fault(fault["name"])

    async def delete_fault(self, name: str) -> None:
        co = client.CustomObjectsApi(self.api)

        async def delete() -> None:
            await _ignore_404(co.delete_namespaced_custom_object(
                "dnsrace.io", "v1alpha1", self.ns, "faults", name))

        await self.call(f"delete fault {name}", delete)

    def observations(self, since: float | None = None,
                     failures_are_empty: bool = True) -> observations.Summary:
        path = self.run_dir / "prober.jsonl"
        data = observations.load(path) if path.exists() else []
        return observations.analyze(data, since=since, failures_are_empty=failures_are_empty)


async def _ignore_404(call: Any) -> None:
    try:
        await call
    except client.ApiException as exc:
        if exc.status != 404:
            raise


async def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return bool(await predicate())




def write_run_report(run_dir: Path, report: Report) -> None:
    """``run_dir/report.html``, timed; a failure is said, not raised: the verdict stands
    without its pictures."""
    started = time.monotonic()
    try:
        out = write_report([run_dir], run_dir / "report.html")
    except Exception as exc:
        report(f"report not written: {exc!r}")
    else:
        report(f"report: {out} ({time.monotonic() - started:.1f}s)")
