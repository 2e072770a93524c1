"""Fault injection inside a component: the Faults aimed at it, applied at its steps.

Every component registers ``FaultTable.observe`` on its kopf registry and passes ``hook`` to
the code that has injection points (``core.enacting`` calls ``hook(step, endpoint)``). A delay
Fault sleeps at its step; hold waits at its step until the Fault is deleted (a breakpoint, for
``dnsrace scenario run replay``); pause stops this process with SIGSTOP and has a detached
``sleep; kill -CONT`` resume it; kill ends the process with SIGKILL. Each injection is reported
in the Fault's status; deleting the Fault stops it at once. Process faults run once
(status.injected guards a restarted process from killing itself again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
from kubernetes_asyncio import client
from prometheus_client import Counter

from dnsrace.kube import reporting

log = logging.getLogger(__name__)

HOLD_LIMIT = 300.0
"""Seconds a hold Fault without durationSeconds holds at most."""
STATUS_INTERVAL = 1.0
"""Seconds between two status writes of one Fault; the last state is always written."""

INJECTED = Counter("dnsrace_fault_injections_total", "Faults injected, by step and action",
                   ["component", "action", "step"])


@dataclasses.dataclass
class ActiveFault:
    name: str
    action: str
    step: str | None
    delay: float
    jitter: float
    endpoints: frozenset[str]
    count: int | None
    duration: float | None
    skip: int = 0
    """Times the step passes before the fault acts (a replay's hold after a hook the trace
    lets the process pass)."""
    passes: int = 0
    injected: int = 0
    first: float | None = None
    released: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    """Set when the Fault is deleted: a hold ends."""

    def live(self) -> bool:
        if self.count is not None and self.injected >= self.count:
            return False
        return not (self.duration is not None and self.first is not None
                    and time.monotonic() - self.first > self.duration)

    def matches(self, step: str, endpoint: str | None) -> bool:
        if self.action not in ("delay", "hold") or self.step != step or not self.live():
            return False
        return not self.endpoints or endpoint in self.endpoints

    def sample(self) -> float:
        """One delay: ``delay`` +/- ``jitter``, uniformly, as netem's delay jitter."""
        return max(0.0, self.delay + random.uniform(-self.jitter, self.jitter))


class FaultTable:
    def __init__(self, component: str, api: client.ApiClient, namespace: str) -> None:
        self.component = component
        self.api = api
        self.namespace = namespace
        self.faults: dict[str, ActiveFault] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._latest: dict[str, tuple[ActiveFault, str]] = {}

    def register(self, reg: kopf.OperatorRegistry) -> None:
        @kopf.on.event("dnsrace.io", "v1alpha1", "faults", registry=reg)
        async def fault_event(event: Mapping[str, Any], body: Mapping[str, Any],
                              **_: Any) -> None:
            await self.observe(event.get("type"), body)

    async def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        spec = body.get("spec") or {}
        name = body["metadata"]["name"]
        if spec.get("target") != self.component:
            return
        if event_type == "DELETED" or body["metadata"].get("deletionTimestamp"):
            gone = self.faults.pop(name, None)
            if gone is not None:
                gone.released.set()
                log.info("fault %s removed", name)
            return
        status = body.get("status") or {}
        known = self.faults.get(name)
        fault = ActiveFault(
            name=name, action=spec["action"], step=spec.get("step"),
            delay=float(spec.get("delaySeconds", 0)),
            jitter=float(spec.get("jitterSeconds", 0)),
            endpoints=frozenset(spec.get("endpoints") or ()),
            count=spec.get("count"), duration=spec.get("durationSeconds"),
            skip=int(spec.get("skip", 0)), passes=known.passes if known else 0,
            injected=known.injected if known else int(status.get("injected", 0)),
            first=known.first if known else None,
            released=known.released if known else asyncio.Event(),
        )
        self.faults[name] = fault
        if known is None:
            log.info("fault %s active: %s", name, spec)
            self._report(fault, phase="Active" if fault.action in ("delay", "hold")
                         else "Pending")
        if fault.action in ("pause", "kill") and fault.injected == 0:
            await self._process_fault(fault)

    async def hook(self, step: str, endpoint: str | None) -> None:
        """The injection point: sleep for every live delay Fault on this step."""
        for fault in list(self.faults.values()):
            if not fault.matches(step, endpoint):
                continue
            fault.passes += 1
            if fault.passes <= fault.skip:
                continue
            fault.injected += 1
            if fault.first is None:
                fault.first = time.monotonic()
            INJECTED.labels(self.component, "delay", step).inc()
            self._report(fault, phase="Active" if fault.live() else "Done")
            if fault.action == "hold":
                log.info("fault %s: holding at %s%s until the Fault is deleted", fault.name,
                         step, f" ({endpoint})" if endpoint else "")
                limit = fault.duration if fault.duration is not None else HOLD_LIMIT
                try:
                    await asyncio.wait_for(fault.released.wait(), timeout=limit)
                except TimeoutError:
                    log.warning("fault %s: held %.0fs; going on", fault.name, limit)
                continue
            await asyncio.sleep(fault.sample())

    async def _process_fault(self, fault: ActiveFault) -> None:
        fault.injected = 1
        INJECTED.labels(self.component, fault.action, "process").inc()
        # The status must be written before the process stops, or nobody could write it.
        await self._write_status(fault, phase="Done")
        if fault.action == "kill":
            log.warning("fault %s: killing %s", fault.name, self.component)
            os.kill(os.getpid(), signal.SIGKILL)
        seconds = fault.duration if fault.duration is not None else fault.delay or 5.0
        log.warning("fault %s: pausing %s for %.1fs", fault.name, self.component, seconds)
        subprocess.Popen(  # noqa: ASYNC220 - must not await: the next line stops this process
            ["/bin/sh", "-c", f"sleep {seconds:.3f}; kill -CONT {os.getpid()}"],
            start_new_session=True,
        )
        os.kill(os.getpid(), signal.SIGSTOP)

    def _report(self, fault: ActiveFault, phase: str) -> None:
        """Write the Fault's status now, or, while a write is recent, once the interval ends.

        A delay on every endpoint write is injected hundreds of times a minute; one status
        patch each would load the API server and every watcher with the very events whose
        timing the lab observes.
        """
        self._latest[fault.name] = (fault, phase)
        if fault.name in self._writers:
            return
        task = asyncio.get_running_loop().create_task(self._status_writer(fault.name))
        self._writers[fault.name] = task
        task.add_done_callback(lambda _: self._writers.pop(fault.name, None))

    async def _status_writer(self, name: str) -> None:
        written: tuple[int, str] | None = None
        while (latest := self._latest.get(name)) is not None:
            fault, phase = latest
            if (fault.injected, phase) == written:
                self._latest.pop(name, None)
                return
            if await self._write_status(fault, phase):
                written = (fault.injected, phase)
            await asyncio.sleep(STATUS_INTERVAL)

    async def _write_status(self, fault: ActiveFault, phase: str) -> bool:
        """Patch the Fault's status; False when it must be tried again (API unreachable)."""
        status: dict[str, Any] = {"phase": phase, "injected": fault.injected}
        if fault.injected:
            status["lastInjectedAt"] = reporting.now()
        try:
            await client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                "dnsrace.io", "v1alpha1", self.namespace, "faults", fault.name,
                {"status": status}, _content_type="application/merge-patch+json",
            )
        except client.ApiException as exc:
            if exc.status != 404:
                log.warning("fault %s: status not written: %s", fault.name, exc.reason)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("fault %s: status not written, retrying: %r", fault.name, exc)
            return False
        return True
