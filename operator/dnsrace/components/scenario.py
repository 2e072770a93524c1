"""The race scenario: start the lab, inject the faults, observe, judge, repair, keep the evidence.

Called by ``dnsrace scenario run race`` and by the e2e tests. It only starts components, injects
Faults and observes; the empty record, the blocked enactors and the stale answers come from the
components' own logic. The faults are those of the incident: every enactor's endpoint writes and
clean-up are a little slow (as Route 53 changes and a clean-up through many plans are), and
enactor-a stalls before its last endpoint, the regional one, long enough for its plan to become
one that clean-up deletes, while the planner keeps producing plans. Whether its stale write lands
inside another enactor's clean-up, and so empties the endpoint, is left to timing: each of
enactor-a's cycles is one attempt, with a jittered stall.

Local mode: components run as processes of this machine (``python -m dnsrace ...``) against the
local control plane, with logs and pid files in the run folder. The run folder's format is in
docs/run-format.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
from aetcd import exceptions as aetcd_exceptions
from kubernetes_asyncio import client, watch

from dnsrace import settings as settings_mod
from dnsrace.components import lbnode, prober, repairing
from dnsrace.core import ddb, observations, planning, plans, records, supervision, verdicts
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.dnsstore import recorder as store_recorder
from dnsrace.kube import client as kube_client
from dnsrace.localplane import dynamodb, processes

Report = Callable[[str], None]
T = TypeVar("T")

OUTAGE_LIMIT = 120.0
"""Seconds the runner waits out an unreachable API server or DNS etcd before it gives up."""
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    client.ApiException, aiohttp.ClientError, OSError, TimeoutError,
    aetcd_exceptions.ClientError)


@dataclasses.dataclass(frozen=True)
class RaceParams:
    safeguards: Safeguards
    planner_interval: float = 0.25
    keep: int = 6
    accounts: int = 8
    write_delay: float = 0.03
    """Every enactor's per-endpoint write latency (a Fault on each)."""
    cleanup_delay: float = 0.5
    """Every enactor's clean-up latency (a Fault on each): the time between its last endpoint
    write and its deletes, which is when a stale write can slip in."""
    stall: float | None = None
    """enactor-a's extra delay on the regional endpoint; None: derived from measurements."""
    observe: float = 60.0
    """Seconds after the faults within which the empty record must show (safeguards off)."""
    hold: float = 10.0
    """Seconds the record must stay empty while the planner keeps producing plans."""
    window: float = 40.0
    """Seconds observed under the faults with safeguards on."""
    settle: float = 30.0
    """Seconds allowed for convergence once the faults are removed and the planner stops."""
    probe_rate: float = 10.0
    client_workers: int = 4
    """DynamoDB client workers (local mode): they resolve the regional endpoint through CoreDNS
    and reach DynamoDB Local through the LB nodes, so the empty record is theirs too."""
    client_rate: float = 10.0
    """Requests per second per client worker."""
    after_repair: float = 15.0
    """Seconds the clients keep going after the repair (their recovery is judged from
    ``verdicts.CLIENT_RECOVERY`` s on)."""

    def stall_seconds(self, lifetime: list[float], to_regional: list[float],
                      cycle: float) -> tuple[float, float]:
        """enactor-a's stall before the regional endpoint, as (centre, jitter).

        enactor-a's write must land after the last regional write before the clean-up that
        deletes its plan, and before that delete: in the last ``win`` seconds of the plan's
        life, where ``win`` is the clean-up delay, shortened when another enactor's regional
        write falls inside that clean-up. Both ends are measured under the same slow writes
        and clean-up, before the stall: ``lifetime`` is each plan's time from creation until
        its deletion began, ``to_regional`` each applied plan's time from creation to its
        first regional write (take, walk), and ``cycle`` one enactor cycle. Jitter (as
        netem's delay jitter) spans the spread of lifetimes, so successive attempts (one per
        enactor-a cycle) sample across the window even when load moves it.
        """
        if self.stall is not None:
            return self.stall, 0.0
        d = self.cleanup_delay
        win = d * (1 - d / (2 * cycle)) if cycle > d else d / 2
        centre = statistics.median(lifetime) - statistics.median(to_regional) - win / 2
        q = statistics.quantiles(lifetime, n=5)
        return max(0.0, centre), max(0.25, (q[3] - q[0]) / 2)

    @property
    def expectation(self) -> verdicts.Expectation:
        return verdicts.expectation(self.safeguards)


Verdict = verdicts.Verdict


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

    def __init__(self, cfg: settings_mod.Settings, params: RaceParams, run_dir: Path,
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

    async def _supervise(self) -> None:
        """Restart components that exit (a crash, a kill Fault, an outside kill -9)."""
        while True:
            await asyncio.sleep(0.5)
            for name in self.supervisor.supervised():
                managed = self.procs.get(name)
                alive = managed is not None and managed.alive()
                now = time.time()
                if self.supervisor.tick(name, alive, self.procs.exit_status(name), now):
                    last = self.supervisor.exits[-1]
                    self.mark("component restarted", component=name, how=last.how,
                              restarts=last.restarts + 1)
                    argv, env = self._specs[name]
                    self.procs.start(name, argv, env=env, cwd=self.run_dir)
                    self.supervisor.started(name, now)

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

        if not await _wait(rolled_out, 180, interval=1):
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

    async def delete_faults(self) -> None:
        co = client.CustomObjectsApi(self.api)
        for fault in await self.faults():
            name = fault["name"]

            async def delete(name: str = name) -> None:
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


async def _wait(predicate: Callable[[], Any], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return bool(await predicate())


async def run_race(cfg: settings_mod.Settings, params: RaceParams, run_dir: Path,
                   report: Report) -> Verdict:
    if params.safeguards.serve_stale:
        # Every DNS client of the run (prober, DynamoDB clients, the direct query) asks the
        # serve-stale port; the enactors write the same store either way.
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns,
                                                               server=cfg.dns.stale_server))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sg = str(params.safeguards)
    figures: dict[str, Any] = {"safeguards": sg, "planner_interval": params.planner_interval,
                               "keep": params.keep, "write_delay": params.write_delay}
    async with Lab(cfg, params, run_dir, report) as lab:
        figures["endpoints"] = len(lab.endpoints)
        await lab.reset()
        lab.mark("lab reset")
        await lab.follow_lifecycle()

        port = 18200  # clear of the local plane's ports (CoreDNS ready is 18181)
        front_door: list[str] = []
        if not lab.cluster:
            lab.backend = await dynamodb.start(cfg, run_dir / "logs" / "dynamodb-local.log")
            lab.mark("DynamoDB Local started", started_in=round(lab.backend.started_in, 2))
            front_door = ["--backend", f"{lab.backend.host}:{lab.backend.port}"]
        for i in range(cfg.lab.lb_nodes):
            await lab.start(f"lbnode-{i}", "lbnode", "--name", f"lbnode-{i}", *front_door,
                            port=port + 10 + i)
        ok = await _wait(lambda: _count_nodes(lab, 1 if lab.cluster else cfg.lab.lb_nodes), 30)
        if not ok:
            raise RuntimeError("LB nodes did not register; see logs in " + str(run_dir))
        for i, name in enumerate(cfg.lab.enactors):
            await lab.start(name, "enactor", "--name", name, port=port + 1 + i)
        await lab.start("prober", "prober", "--out", str(run_dir / "prober.jsonl"),
                        "--rate", str(params.probe_rate), port=port + 5)
        await lab.start("planner", "planner", port=port)
        clients = run_dir / "ddb-client.jsonl"
        if lab.backend is not None:
            # Started with the others (a client's start-up is slow); its requests fail with DNS
            # errors until the first plan is applied, and the verdict counts from its first
            # success.
            await lab.start("ddb-client", "ddb-client", "--out", str(clients),
                            "--workers", str(params.client_workers),
                            "--rate", str(params.client_rate), port=port + 6)
        lab.mark("components started", enactors=list(cfg.lab.enactors))

        async def regional_answers() -> bool:
            rcode, addrs = await dns_query(cfg, lab.regional)
            return rcode == "NOERROR" and bool(addrs)

        if not await _wait(regional_answers, 60):
            raise RuntimeError("the regional endpoint never answered during warm-up; "
                               f"see logs in {run_dir}/logs")
        if lab.backend is not None:

            async def clients_succeed() -> bool:
                done = ddb.load_requests(clients) if clients.exists() else []
                return sum(r.outcome == "ok" for r in done) >= verdicts.CLIENT_MIN_REQUESTS

            if not await _wait(clients_succeed, 60):
                raise RuntimeError("the DynamoDB clients made no successful request during "
                                   f"warm-up; see {run_dir}/logs/ddb-client.log")
            lab.mark("DynamoDB clients succeed", workers=params.client_workers,
                     rate=params.client_rate)
        # Every enactor's writes and clean-up get slow first (as Route 53 changes are); the plan
        # period and the enactors' cycle are then measured under that load, and set how old
        # enactor-a's plan is after a given stall.
        lab.mark("slow writes and clean-up injected", write_delay=params.write_delay,
                 cleanup_delay=params.cleanup_delay)
        for name in cfg.lab.enactors:
            await lab.create_fault(f"{name}-slow-writes", name, params.write_delay)
            await lab.create_fault(f"{name}-slow-cleanup", name, params.cleanup_delay,
                                   step="clean-up")
        await asyncio.sleep(2)
        s0, c0, t0 = await lab.newest_serial(), await lab.cycles(port + 2), time.monotonic()
        w0 = time.time()
        await asyncio.sleep(10)
        s1, c1, t1 = await lab.newest_serial(), await lab.cycles(port + 2), time.monotonic()
        period = (t1 - t0) / max(1, s1 - s0)
        # Where the enactors' metrics cannot be read (a cluster), a cycle is taken to be the
        # clean-up delay plus a walk of one plan period.
        cycle = ((t1 - t0) / max(1.0, c1 - c0) if c0 is not None and c1 is not None
                 else params.cleanup_delay + period)
        # Plans seen in the first 6 s have all been deleted (or not) by the end.
        lifetime, to_regional = lab.measured(w0, w0 + 6)
        if len(lifetime) < 3 or not to_regional:
            raise RuntimeError(f"too few plans measured under the slow writes ({len(lifetime)} "
                               f"deleted, {len(to_regional)} applied); see {run_dir}/logs")
        stall, jitter = params.stall_seconds(lifetime, to_regional, cycle)
        figures["plan_period"] = round(period, 3)
        figures["enactor_cycle"] = round(cycle, 3)
        figures["plan_lifetime_median"] = round(statistics.median(lifetime), 3)
        figures["plan_to_regional_median"] = round(statistics.median(to_regional), 3)
        figures["stall"] = round(stall, 3)
        figures["stall_jitter"] = round(jitter, 3)
        t_fault = lab.mark("stall injected", stall=round(stall, 3), jitter=round(jitter, 3))
        await lab.create_fault("enactor-a-stall", "enactor-a", stall, [lab.regional], jitter)
        serial_at_fault = await lab.newest_serial()
        observed: dict[str, Any] = {
            "safeguards": sg, "t_fault": t_fault, "regional": lab.regional,
            "endpoints": lab.endpoints, "zone": cfg.dns.zone, "scope": lab.ns,
            "probe_rate": params.probe_rate, "hold": params.hold, "observe": params.observe,
            "window": params.window, "calibration": figures,
            "clients": lab.backend is not None, "record_ttl": plans.DEFAULT_TTL,
        }
        expect = params.expectation
        if expect.outage or expect.may_empty:
            await _await_regional_empty(lab, params, t_fault, hold=expect.outage)
        if not expect.outage:
            await asyncio.sleep(params.window)
        observed["stall_attempts"] = lab.attempts_at_empty
        observed["plans_during_faults"] = await lab.newest_serial() - serial_at_fault
        direct_rcode, direct_addrs = await dns_query(cfg, lab.regional)
        observed["direct_query_regional"] = {"rcode": direct_rcode, "addresses": direct_addrs}
        lab.mark("direct query", endpoint=lab.regional, rcode=direct_rcode,
                 addresses=direct_addrs)

        fault_status = await lab.faults()
        await lab.delete_faults()
        lab.mark("faults removed; planner stopped")
        await lab.stop("planner")
        newest = await lab.newest_serial()
        observed["newest_serial"] = newest
        await _observe_convergence(lab, params, newest, observed)

        if expect.may_block and not observed["converged"]:
            t_repair = lab.mark("repair")
            changed = await lab.call("repair", lambda: repairing.repair(cfg))
            observed["repair_changed"] = len(changed)

            async def regional_answers_again() -> bool:
                rcode, addrs = await dns_query(cfg, lab.regional)
                return rcode == "NOERROR" and bool(addrs)

            restored = await _wait(regional_answers_again, 20, interval=0.2)
            observed["t_repair"] = t_repair
            observed["repair_restored"] = restored
            observed["time_to_restore"] = round(time.time() - t_repair, 2) if restored else None
            lab.mark("repaired", changed=len(changed), restored=restored)
            await asyncio.sleep(params.after_repair - (time.time() - t_repair)
                                if lab.backend is not None else 1.5)

        await lab.stop("ddb-client")

        await lab.stop("prober")
        observed["t_probe_end"] = time.time()
        await lab.stop_recorder()
        events = await lab.events()
        observed["blocked_warnings"] = len([
            e for e in events if e["type"] == "Warning"
            and e["reason"] in ("ActivePlanMissing", "ChangeRejected")])

        (run_dir / "events.json").write_text(json.dumps(events, indent=1))
        (run_dir / "plans.json").write_text(json.dumps(
            [{"name": p["metadata"]["name"], "serial": p["spec"]["serial"],
              "status": p.get("status", {})} for p in await lab.plan_objects()], indent=1))
        (run_dir / "faults.json").write_text(json.dumps(fault_status, indent=1))
        (run_dir / "timeline.json").write_text(json.dumps(lab.timeline, indent=1))
        (run_dir / "lifecycle.json").write_text(json.dumps({
            "plans": {str(k): v for k, v in sorted(lab.lifecycle.items())},
            "regional_writes": lab.regional_writes}, indent=1))
        observed["restarts"] = lab.write_restarts()
        observed["outages"] = lab.outages
        (run_dir / "observed.json").write_text(json.dumps(observed, indent=1))

    verdict = verdicts.judge(verdicts.RunRecord.load(run_dir), str(run_dir))
    (run_dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
    return verdict


async def _await_regional_empty(lab: Lab, params: RaceParams, t_fault: float,
                                hold: bool) -> None:
    """Wait until the regional records are removed in the store, at most ``observe`` s; with
    ``hold``, also until CoreDNS has answered NXDOMAIN/NODATA for ``hold`` s (the incident: the
    record stays empty while the planner keeps producing plans)."""
    judged: float | None = None
    deadline = t_fault + params.observe
    while True:
        await asyncio.sleep(0.5)
        if lab.attempts_at_empty is None and lab.regional_empty_in_store():
            lab.mark("regional records removed in the DNS etcd")
            stall = [f for f in await lab.faults() if f["name"] == "enactor-a-stall"]
            lab.attempts_at_empty = int(stall[0]["status"].get("injected") or 0) if stall else 0
            if not hold:
                return
        if hold and judged is None:
            summ = lab.observations(since=t_fault, failures_are_empty=False)
            regional = summ.endpoints.get(lab.regional)
            if regional is not None and regional.first_empty is not None:
                judged = regional.first_empty
                lab.mark("regional endpoint answers empty")
        if judged is not None and time.time() - judged >= params.hold:
            return
        if judged is None and time.time() >= deadline:
            return


async def _observe_convergence(lab: Lab, params: RaceParams, newest: int,
                               observed: dict[str, Any]) -> None:
    """Wait up to ``settle`` s for every endpoint and every enactor to be on the newest plan,
    and record what the end state was."""
    phases: dict[str, str] = {}
    conditions: list[dict[str, Any]] = []

    async def converged() -> bool:
        plan = next((p for p in await lab.plan_objects()
                     if int(p["spec"]["serial"]) == newest), {})
        phases.clear()
        phases.update({e["name"]: e.get("phase", "")
                       for e in plan.get("status", {}).get("enactors", [])})
        conditions[:] = [
            {k: c.get(k) for k in ("type", "status", "reason")}
            for c in plan.get("status", {}).get("conditions", [])]
        marks = await lab.markers()
        if not all(marks.get(e) == newest for e in lab.endpoints):
            return False
        return all(phases.get(n) in ("Applied", "Skipped") for n in lab.cfg.lab.enactors)

    observed["converged"] = await _wait(converged, params.settle)
    observed["enactor_phases_on_newest"] = dict(phases)
    observed["conditions_on_newest"] = list(conditions)
    markers = await lab.markers()
    live = {int(p["spec"]["serial"]) for p in await lab.plan_objects()}
    observed["endpoints_on_deleted_plans"] = sorted(
        e for e, s in markers.items() if s not in live)
    (lab.run_dir / "markers.json").write_text(json.dumps(markers, indent=1))


async def _count_nodes(lab: Lab, want: int) -> bool:
    return len(await lbnode.ready_nodes(lab.api, lab.ns)) >= want

