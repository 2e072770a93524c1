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
from prometheus_client import Counter, Gauge

from dnsrace import settings as settings_mod
from dnsrace.components import faults, kopfing
from dnsrace.core import enacting, plans
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
BLOCKED = Gauge("dnsrace_enactor_blocked_endpoints", "Endpoints blocked in the last cycle",
                ["enactor"])


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
        self.finalizer = f"{name}.dnsrace.io/finalizer"
        self.wake = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        """Finalizer work in flight, by plan name: one at a time per plan."""
        self.uids: dict[str, str] = {}
        self.reported_invalid: set[str] = set()
        self.last_warning: tuple[str, str, float] = ("", "", 0.0)

    def register(self, reg: kopf.OperatorRegistry) -> None:
        self.faults.register(reg)

        @kopf.on.event(plans.GROUP, plans.VERSION, plans.PLURAL, registry=reg)
        async def plan_event(event: Mapping[str, Any], body: Mapping[str, Any],
                             **_: Any) -> None:
            meta = body.get("metadata", {})
            name = meta.get("name", "")
            self.uids[name] = meta.get("uid", "")
            if self.plan_store.observe(event.get("type"), body) is not None:
                self.wake.set()
            elif name in self.plan_store.invalid and name not in self.reported_invalid:
                await self._refuse(name, self.plan_store.invalid[name])
            if event.get("type") != "DELETED" and name not in self.plan_store.invalid:
                self._finalizer_step(name, body)

    def _finalizer_step(self, name: str, body: Mapping[str, Any]) -> None:
        """Add this enactor's finalizer to a new plan; run it on a plan being deleted."""
        meta = body.get("metadata", {})
        mine = self.finalizer in (meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        if name in self.tasks or mine != deleting:
            return
        work = self._finalize(name, body) if deleting else self._claim(name)
        task = asyncio.get_running_loop().create_task(work)
        self.tasks[name] = task
        task.add_done_callback(lambda _: self.tasks.pop(name, None))

    async def _set_finalizer(self, name: str, present: bool) -> None:
        """Apply this enactor's finalizer entry, retrying API errors while the plan exists."""
        for attempt in range(1, 6):
            try:
                await self.plan_store.set_finalizer(name, self.finalizer, self.name, present)
                return
            except client.ApiException as exc:
                log.warning("finalizer of %s not %s (attempt %d): %s", name,
                            "added" if present else "removed", attempt, exc.reason)
                await asyncio.sleep(attempt)

    async def _claim(self, name: str) -> None:
        await self._set_finalizer(name, present=True)

    async def _finalize(self, name: str, body: Mapping[str, Any]) -> None:
        """The finalizer: remove the plan's records where it is active, then let it go."""
        plan = self.plan_store.parse(body)
        while True:
            try:
                removed = await self.core.remove_plan_records(plan)
                break
            except enacting.StillActive as exc:
                # protect-active: the plan stays while it is active; look again in a second.
                log.info("%s; protect-active keeps it", exc)
                await asyncio.sleep(1)
                stored = await self.plan_store.get(plan.serial)
                if stored is None:
                    return
        if removed:
            log.warning("plan %s deleted: removed its records from %s", plan.serial,
                        ", ".join(removed))
        await self._set_finalizer(name, present=False)

    async def _report(self, report: enacting.CycleReport) -> None:
        name = plans.object_name(report.serial)
        blocked = report.blocked
        if report.skipped:
            phase, reason, message = "Skipped", "NotApplied", report.skipped
        elif blocked:
            first = blocked[0]
            phase, reason = "Blocked", first.reason
            message = "; ".join(o.message for o in blocked)
        else:
            phase, reason = "Applied", "Applied"
            healed = [o for o in report.outcomes if o.result is enacting.Result.HEALED]
            message = f"applied {len(report.outcomes)} endpoints"
            if healed:
                message += f"; healed {', '.join(o.endpoint for o in healed)}"
            if report.cleaned:
                message += f"; deleted plans {report.cleaned[0]}..{report.cleaned[-1]}"
        status = {
            "endpointCount": len(self.plan_store.cache[report.serial].plan.endpoints)
            if report.serial in self.plan_store.cache else None,
            "enactors": [{
                "name": self.name, "phase": phase,
                "appliedEndpoints": sum(o.result is not enacting.Result.BLOCKED
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
        while not stop.is_set():
            try:
                report = await self.core.cycle()
            except Exception:
                log.exception("cycle failed; retrying")
                await asyncio.sleep(1)
                continue
            if report is None:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=1.0)
                continue
            outcome = ("skipped" if report.skipped else "blocked" if report.blocked
                       else "applied")
            CYCLES.labels(self.name, outcome).inc()
            for o in report.outcomes:
                WRITES.labels(self.name, o.result.value, o.reason).inc()
            BLOCKED.labels(self.name).set(len(report.blocked))
            CLEANED.labels(self.name).inc(len(report.cleaned))
            if report.complete:
                LAST.labels(self.name).set(report.serial)
            log.info("%s plan %s: %s%s", self.name, report.serial, outcome,
                     f" ({report.skipped or report.blocked[0].message})"
                     if outcome != "applied" else f", deleted {len(report.cleaned)} old plans")
            await self._report(report)


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

