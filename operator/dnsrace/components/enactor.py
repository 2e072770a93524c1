"""A DNS Enactor as a kopf controller: ``dnsrace enactor --name enactor-a``.

It wires ``core.enacting.Enactor`` to the world: DnsPlan watch events feed the plan cache and
wake the work loop; the DnsPlan finalizer (this enactor's own, added and dropped by server-side
apply from the same watch events) removes a deleted plan's records;
Faults aimed at this enactor are injected at its steps. After each cycle it reports what it did:
its entry in the plan's ``status.enactors``, its own condition, and Events (Warning when
blocked). Several enactors run side by side with nothing shared but the two stores.
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
from dnsrace.components import faults, kopfing, outages
from dnsrace.core import enacting, heartbeats, plans
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import client as kube_client
from dnsrace.kube import leases, reporting
from dnsrace.kube import plans as kube_plans

log = logging.getLogger(__name__)

WRITES = Counter("dnsrace_enactor_endpoint_results_total", "Endpoint outcomes",
                 ["enactor", "result", "reason"])
CYCLES = Counter("dnsrace_enactor_cycles_total", "Plans taken", ["enactor", "outcome"])
CLEANED = Counter("dnsrace_enactor_plans_deleted_total", "Plans deleted by clean-up", ["enactor"])
LAST = Gauge("dnsrace_enactor_last_applied_serial", "Last plan fully applied", ["enactor"])
APPLIED = Gauge("dnsrace_enactor_endpoint_applied_serial",
                "Serial of the plan this enactor last wrote to the endpoint",
                ["enactor", "endpoint"])
BLOCKED = Gauge("dnsrace_enactor_blocked_endpoints", "Endpoints blocked in the last cycle",
                ["enactor"])
# In the style of controller-runtime's controller_runtime_reconcile_total/_time_seconds: one
# reconcile is one cycle that took a plan (an idle check that found nothing newer is none).
RECONCILE_RESULTS = ("success", "blocked", "error")
RECONCILES = Counter(
    "dnsrace_enactor_reconcile_total",
    "Cycles that took a plan, by result: success (applied or skipped), blocked (an endpoint "
    "left blocked), error (the cycle raised; retried with back-off)", ["enactor", "result"])
RECONCILE_TIME = Histogram(
    "dnsrace_enactor_reconcile_time_seconds",
    "Length of one cycle that took a plan (or raised), Fault delays included", ["enactor"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))

FINALIZER_DEADLINE = 120.0
"""Seconds one finalizer worker keeps retrying before it logs an error and leaves the plan
to the next relist."""


class EnactorController:
    def __init__(self, cfg: settings_mod.Settings, name: str, api: client.ApiClient,
                 safeguards: Safeguards) -> None:
        self.cfg = cfg
        self.name = name
        self.api = api
        self.ns = cfg.kube.namespace
        self.plan_store = kube_plans.KubePlanStore(api, self.ns, cfg.dns.zone)
        self.records = etcd_store.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint,
                                                                   scope=self.ns)
        self.faults = faults.FaultTable(name, api, self.ns)
        self.core = enacting.Enactor(
            name, self.records, self.plan_store, safeguards,
            keep=cfg.lab.keep, hook=self.faults.hook,
            lock=leases.KubeWriterLease(api, self.ns, hook=self.faults.hook),
        )
        self.finalizer = heartbeats.finalizer_of(name)
        self.heartbeat = leases.Heartbeat(api, self.ns, name)
        self.wake = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        """One finalizer worker per plan name while that plan needs finalizer work."""
        self.latest: dict[str, Mapping[str, Any]] = {}
        """The newest body seen for a plan with a worker; the worker re-reads it after each
        step, so an event that arrives while a step runs is never lost."""
        self.uids: dict[str, str] = {}
        self.reported_invalid: set[str] = set()
        self.last_warning: tuple[str, str, float] = ("", "", 0.0)
        self.resync_seconds = cfg.lab.resync_seconds

    def register(self, reg: kopf.OperatorRegistry) -> None:
        self.faults.register(reg)

        @kopf.on.event(plans.GROUP, plans.VERSION, plans.PLURAL, registry=reg)
        async def plan_event(event: Mapping[str, Any], body: Mapping[str, Any],
                             **_: Any) -> None:
            meta = body.get("metadata", {})
            name = meta.get("name", "")
            if event.get("type") == "DELETED":
                self.uids.pop(name, None)
                self.reported_invalid.discard(name)
            else:
                self.uids[name] = meta.get("uid", "")
            if self.plan_store.observe(event.get("type"), body) is not None:
                self.wake.set()
            elif name in self.plan_store.invalid and name not in self.reported_invalid:
                await self._refuse(name, self.plan_store.invalid[name])
            if event.get("type") != "DELETED" and name not in self.plan_store.invalid:
                self._finalizer_step(name, body)

    def _finalizer_work(self, body: Mapping[str, Any]) -> str | None:
        """What this enactor's finalizer needs on ``body``: "claim", "finalize" or None."""
        meta = body.get("metadata", {})
        mine = self.finalizer in (meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        if deleting:
            return "finalize" if mine else None
        return None if mine else "claim"

    def _finalizer_step(self, name: str, body: Mapping[str, Any]) -> None:
        """Queue finalizer work for ``name``: one worker per plan, fed the newest body."""
        self.latest[name] = body
        if name in self.tasks or self._finalizer_work(body) is None:
            return
        task = asyncio.get_running_loop().create_task(self._finalizer_worker(name))
        self.tasks[name] = task

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.pop(name, None)
            self.latest.pop(name, None)
            if not t.cancelled() and t.exception() is not None:
                log.error("finalizer worker of %s failed: %r", name, t.exception())

        task.add_done_callback(done)

    async def _finalizer_worker(self, name: str) -> None:
        """Do what the plan's finalizer needs until nothing is left, re-reading the object
        after each step; failed steps are retried with backoff capped at 10 s. A plan whose
        work still fails after ``FINALIZER_DEADLINE`` s is logged as an error and left to
        the next relist (every ``resync_seconds``), which queues it again."""
        failures, started = 0, time.monotonic()
        while True:
            body = self.latest.get(name)
            work = self._finalizer_work(body) if body is not None else None
            if work is None:
                return
            try:
                if work == "claim":
                    done = await self.plan_store.set_finalizer(name, self.finalizer,
                                                               self.name, True)
                else:
                    done = await self._finalize(name, body or {})
                failures = 0
            except Exception as exc:  # API or DNS etcd unreachable, refused, timed out
                failures += 1
                if time.monotonic() - started > FINALIZER_DEADLINE:
                    log.error("finalizer of %s: %s still failing after %d attempts: %r",
                              name, work, failures, exc)
                    return
                log.warning("finalizer of %s: %s failed (attempt %d), retrying: %r",
                            name, work, failures, exc)
                await asyncio.sleep(min(10.0, 0.25 * 2 ** failures))
                continue
            if not done:
                await asyncio.sleep(1)  # protect-active keeps the plan; look again
            fresh = await self._read_plan(name)
            if fresh is None:
                return
            self.latest[name] = fresh

    async def _read_plan(self, name: str) -> Mapping[str, Any] | None:
        try:
            obj: Mapping[str, Any] = await self.plan_store.api.get_namespaced_custom_object(
                plans.GROUP, plans.VERSION, self.ns, plans.PLURAL, name)
        except client.ApiException as exc:
            if kube_client.status_of(exc) == 404:
                return None
            return self.latest.get(name)  # not readable now: retry from what we had
        return obj

    async def _finalize(self, name: str, body: Mapping[str, Any]) -> bool:
        """The finalizer: remove the plan's records where it is active, then let it go.
        False while protect-active keeps the plan (it is still active somewhere)."""
        plan = self.plan_store.parse(body)
        await self.faults.hook("finalize", None)
        try:
            removed = await self.core.remove_plan_records(plan)
        except enacting.StillActive as exc:
            log.info("%s; protect-active keeps it", exc)
            return False
        if removed:
            log.warning("plan %s deleted: removed its records from %s", plan.serial,
                        ", ".join(removed))
        await self.plan_store.set_finalizer(name, self.finalizer, self.name, False)
        return True

    async def resync(self, stop: asyncio.Event) -> None:
        """Relist the plans every ``resync_seconds``: drop plans whose DELETED event the watch
        missed, prune what was kept per plan, and queue finalizer work an event never asked
        for (a deletion that arrived during a watch gap, or work that gave up)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.resync_seconds)
            if stop.is_set():
                return
            try:
                items = await self.plan_store.relist()
            except Exception as exc:
                log.warning("relist of plans failed: %r", exc)
                continue
            names = {str(i["metadata"]["name"]) for i in items}
            for gone in set(self.uids) - names:
                self.uids.pop(gone, None)
            self.reported_invalid &= names
            # Each other enactor's heartbeat is read once per relist, not once per plan.
            beats: dict[str, heartbeats.Heartbeat | None] = {}
            for item in items:
                name = str(item["metadata"]["name"])
                if name not in self.plan_store.invalid:
                    self._finalizer_step(name, item)
                    if item["metadata"].get("deletionTimestamp"):
                        await self._take_over(name, item, beats)
            self.wake.set()

    async def _take_over(self, name: str, body: Mapping[str, Any],
                         beats: dict[str, heartbeats.Heartbeat | None]) -> None:
        """Finish the finalizers of enactors whose heartbeat expired (dead, or scaled away),
        so a plan they claimed does not stay Terminating for ever. ``beats`` caches the
        heartbeats read during this relist."""
        finalizers = body["metadata"].get("finalizers") or []
        owners = {heartbeats.owner_of(f) for f in finalizers} - {None, self.name}
        for owner in sorted(o for o in owners if o and o not in beats):
            try:
                beats[owner] = await self.heartbeat.read(owner)
            except Exception as exc:  # cannot tell: leave it for the next relist
                log.warning("heartbeat of %s unreadable: %r", owner, exc)
                return
        for owner in heartbeats.orphaned(finalizers, self.name, beats, time.time()):
            try:
                removed = await self.core.remove_plan_records(self.plan_store.parse(body))
                # Drop the entry as its owner's field manager: the entry is that manager's.
                await self.plan_store.set_finalizer(name, heartbeats.finalizer_of(owner),
                                                    owner, False)
            except enacting.StillActive:
                continue  # protect-active: not while the plan is active somewhere
            except Exception as exc:
                log.warning("finalizer of %s on %s not taken over: %r", owner, name, exc)
                continue
            message = (f"{owner}'s heartbeat expired; {self.name} finished its finalizer"
                       + (f" (records removed from {', '.join(removed)})" if removed else ""))
            log.warning("plan %s: %s", name, message)
            await self._event(name, "Normal", "FinalizerTakenOver", message)

    async def _report(self, report: enacting.CycleReport) -> None:
        name = plans.object_name(report.serial)
        phase, reason, message = report.verdict()
        status = {
            "endpointCount": len(self.plan_store.cache[report.serial].plan.endpoints)
            if report.serial in self.plan_store.cache else None,
            "enactors": [{
                "name": self.name, "phase": phase,
                "appliedEndpoints": sum(o.result in (enacting.Result.APPLIED,
                                                     enacting.Result.HEALED,
                                                     enacting.Result.UNCHANGED)
                                        for o in report.outcomes),
                "message": message[:1000], "updatedAt": reporting.now(),
            }],
            "conditions": [reporting.condition(
                f"{self.name}.dnsrace.io/Applied", phase == "Applied", reason, message)],
        }
        status = {k: v for k, v in status.items() if v is not None}
        try:
            await reporting.apply_status(self.api, self.ns, plans.PLURAL, plans.KIND, name,
                                         self.name, status)
        except client.ApiException as exc:
            if kube_client.status_of(exc) not in (404, 409):
                log.warning("status of %s not written: %s", name, exc.reason)
        # One Warning per distinct problem every 10 s: enough to see why it is blocked.
        if phase == "Blocked":
            key = (reason, message, time.monotonic())
            last_reason, last_message, last_time = self.last_warning
            if (reason, message) != (last_reason, last_message) or key[2] - last_time > 10:
                self.last_warning = key
                await self._event(name, "Warning", reason, message)
        elif phase == "Applied":
            await self._event(name, "Normal", "Applied", message)

    async def _refuse(self, name: str, why: str) -> None:
        """The controller's own checks, after the CRD's: say why a plan will not be applied."""
        self.reported_invalid.add(name)
        log.warning("plan %s refused: %s", name, why)
        try:
            await reporting.apply_status(self.api, self.ns, plans.PLURAL, plans.KIND, name,
                                         self.name, {"conditions": [reporting.condition(
                                             f"{self.name}.dnsrace.io/Applied", False,
                                             "InvalidPlan", why)]})
        except client.ApiException as exc:
            log.warning("status of %s not written: %s", name, exc.reason)
        await self._event(name, "Warning", "InvalidPlan", why)

    async def _event(self, name: str, type_: str, reason: str, message: str) -> None:
        try:
            await reporting.post_event(
                self.api, self.ns, kind=plans.KIND, name=name, uid=self.uids.get(name),
                type_=type_, reason=reason, message=message, component=self.name,
            )
        except client.ApiException as exc:
            log.warning("event not posted: %s", exc.reason)

    async def work(self, stop: asyncio.Event) -> None:
        side = [asyncio.create_task(self.resync(stop)),
                asyncio.create_task(self.heartbeat.run(stop))]
        try:
            await self._cycles(stop)
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)

    async def _cycles(self, stop: asyncio.Event) -> None:
        backoff = outages.Backoff()
        for result in RECONCILE_RESULTS:  # every series from the start, at 0
            RECONCILES.labels(self.name, result)
        RECONCILE_TIME.labels(self.name)
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = await self.core.cycle()
            except Exception as exc:
                RECONCILES.labels(self.name, "error").inc()
                RECONCILE_TIME.labels(self.name).observe(time.monotonic() - started)
                delay = backoff.next()
                what = outages.describe(exc)
                if what is None:
                    log.exception("cycle failed; retrying in %.1fs", delay)
                else:
                    log.warning("cycle failed, %s; retrying in %.1fs", what, delay)
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if report is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                continue
            RECONCILES.labels(self.name, "blocked" if report.blocked else "success").inc()
            RECONCILE_TIME.labels(self.name).observe(time.monotonic() - started)
            phase, _, message = report.verdict()
            outcome = phase.lower()
            CYCLES.labels(self.name, outcome).inc()
            for o in report.outcomes:
                WRITES.labels(self.name, o.result.value, o.reason).inc()
                if o.result is enacting.Result.APPLIED:
                    APPLIED.labels(self.name, o.endpoint).set(report.serial)
            BLOCKED.labels(self.name).set(len(report.blocked))
            CLEANED.labels(self.name).inc(len(report.cleaned))
            if report.complete:
                LAST.labels(self.name).set(report.serial)
            log.info("%s plan %s: %s (%s)", self.name, report.serial, outcome, message)
            try:
                await self._report(report)
            except Exception as exc:  # API server unreachable: the next cycle reports again
                log.warning("%s plan %s: status and Events not written: %r", self.name,
                            report.serial, exc)


async def run(cfg: settings_mod.Settings, name: str, stop: asyncio.Event) -> None:
    safeguards = Safeguards.parse(cfg.lab.safeguards)
    api = await kube_client.api_client(cfg.api_kubeconfig)
    controller = EnactorController(cfg, name, api, safeguards)
    reg = kopfing.registry(cfg.api_kubeconfig)
    controller.register(reg)
    log.info("%s starting with safeguards: %s", name, safeguards)
    try:
        await kopfing.run(reg, name, cfg.kube.namespace, stop, controller.work,
                          cfg.lab.http_port)
    finally:
        for task in list(controller.tasks.values()):
            task.cancel()
        await asyncio.gather(*controller.tasks.values(), return_exceptions=True)
        await controller.records.close()
        await api.close()

