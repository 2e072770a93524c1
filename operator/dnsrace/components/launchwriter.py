"""What each launch attempt writes into the API server, and the writer that writes it in order.

Who calls it: ``components.launcher`` (its ``Runner`` turns attempts into ``Write``s with the
``Planner`` and queues them on the ``Writer``; ``run`` numbers on from ``existing``) and the
tests (through the names ``launcher`` re-exports). Why apart from the runner: this is the
launcher's writing side, the only one that calls the API server (the chart's Role for the
launcher is checked against the calls in here, tests/unit/test_cascade_chart.py), and the
figures lines that count what was written; ``core.instances`` says what each attempt writes.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes_asyncio import client

from dnsrace.components import outages, retrying
from dnsrace.core import instances, launching
from dnsrace.kube import client as kube_client
from dnsrace.kube import reporting

# The launcher's lines keep its logger's name wherever its code lives (the operators' filters
# and the tests' caplog use it).
log = logging.getLogger("dnsrace.components.launcher")

COMPONENT = "launcher"
"""The Events' source component."""

OUTCOMES = (launching.LAUNCHED, launching.INSUFFICIENT_CAPACITY,
            launching.REQUEST_LIMIT_EXCEEDED, launching.GAVE_UP)
"""The outcomes of ``launcher.jsonl``: a failed attempt counts under its reason."""


class PlannerOptions(Protocol):
    """What the ``Planner`` reads of ``launcher.Options``."""

    @property
    def params(self) -> launching.LauncherParams: ...

    def endpoint(self, request: int) -> str: ...


# -- what an attempt writes ------------------------------------------------------------------


@dataclasses.dataclass
class Write:
    """One attempt's writes into the API server, in order: the Instance (first attempt), its
    status, an Event. The flags say what is done, so a retry after an outage goes on from
    there."""

    attempt: launching.Attempt
    number: int
    name: str
    create: dict[str, Any] | None
    """The Instance to create (the request's first attempt), else None."""
    status: dict[str, Any]
    """The merge patch of its status."""
    event: tuple[str, str, str]
    """(type, reason, message)."""
    created: bool = False
    patched: bool = False


@dataclasses.dataclass(frozen=True)
class Terminate:
    """An instance its owner terminates (``LauncherParams.lifetime``): its Instance is deleted,
    so the Network Manager, the instance hosts and the NLB see it go."""

    name: str


class Planner:
    """Turns attempts into writes (pure glue: no I/O): names from the request numbers after
    ``offset``, the status patch over the conditions this launcher last wrote, the Event."""

    def __init__(self, options: PlannerOptions, offset: int = 0) -> None:
        self.options = options
        self.offset = offset
        self.conditions: dict[str, list[dict[str, Any]]] = {}

    def write(self, attempt: launching.Attempt) -> Write:
        number = instances.number_of(attempt, self.offset)
        name = instances.name_of(number)
        retry = self.options.params.retry_after
        endpoint = (self.options.endpoint(number)
                    if attempt.outcome == launching.LAUNCHED else None)
        patch = instances.status_patch(attempt, self.conditions.get(name), endpoint=endpoint,
                                       retry_after=retry)
        if attempt.outcome == launching.FAILED:
            self.conditions[name] = patch["status"]["conditions"]
        else:  # never written by the launcher again
            self.conditions.pop(name, None)
        return Write(attempt, number, name,
                     instances.body(number, attempt.az) if attempt.attempt == 1 else None,
                     patch, instances.event_for(attempt, retry))


    def terminate(self, instance: launching.Instance) -> Terminate:
        name = instances.name_of(instance.request + 1 + self.offset)
        self.conditions.pop(name, None)
        return Terminate(name)


def outcome_of(attempt: launching.Attempt) -> str:
    """The attempt's outcome in ``launcher.jsonl``: Launched, GaveUp, or the failure's reason."""
    if attempt.outcome == launching.FAILED:
        return attempt.reason
    return attempt.outcome


def record_lines(t: float, counts: Mapping[str, int], pending: int) -> list[dict[str, Any]]:
    """One figures period of ``launcher.jsonl``: one line per outcome (its attempts in the
    period, 0 included) and one with the requests not placed."""
    lines: list[dict[str, Any]] = [{"t": round(t, 3), "outcome": o, "count": counts.get(o, 0)}
                                   for o in OUTCOMES]
    lines.append({"t": round(t, 3), "outcome": "pending", "count": pending})
    return lines


class Writer:
    """Writes the queued attempts to the API server, in order, one at a time. An outage (the
    API server away, 5xx, 429) logs one line and backs off, the queue kept as it is; any other
    refusal drops that write with a warning: the launcher never stops for its reporting."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.queue: collections.deque[Write | Terminate] = collections.deque()
        self.wake = asyncio.Event()
        self.uids: dict[str, str] = {}
        self.state = retrying.Reachability("the API server", log)
        self.backoff = outages.Backoff()
        self.written = 0
        self.dropped = 0
        self.deleted = 0

    def put(self, write: Write | Terminate) -> None:
        self.queue.append(write)
        self.wake.set()

    async def _one(self, w: Write | Terminate) -> None:
        co = client.CustomObjectsApi(self.api)
        g, v, p = instances.GROUP, instances.VERSION, instances.PLURAL
        if isinstance(w, Terminate):
            try:
                await co.delete_namespaced_custom_object(g, v, self.namespace, p, w.name)
                self.deleted += 1
            except client.ApiException as exc:
                if kube_client.status_of(exc) != 404:  # 404: gone already (a user, a retry)
                    raise
            self.uids.pop(w.name, None)
            return
        if w.create is not None and not w.created:
            try:
                made = await co.create_namespaced_custom_object(g, v, self.namespace, p,
                                                                w.create)
                self.uids[w.name] = made["metadata"]["uid"]
            except client.ApiException as exc:
                if kube_client.status_of(exc) != 409:  # 409: made by a call that timed out
                    raise
            w.created = True
        if not w.patched:
            await co.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                g, v, self.namespace, p, w.name, w.status,
                _content_type="application/merge-patch+json")
            w.patched = True
        type_, reason, message = w.event
        await reporting.post_event(self.api, self.namespace, kind=instances.KIND, name=w.name,
                                   uid=self.uids.get(w.name), type_=type_, reason=reason,
                                   message=message, component=COMPONENT)
        if w.attempt.outcome != launching.FAILED:
            self.uids.pop(w.name, None)

    async def step(self) -> float | None:
        """Write the head of the queue; None when done, else the seconds to wait first."""
        w = self.queue[0]
        try:
            await self._one(w)
        except Exception as exc:
            what = outages.describe(exc)
            if what is not None:
                self.state.failed(what)
                return self.backoff.next()
            self.queue.popleft()
            self.dropped += 1
            reason = (f"{exc.status} {exc.reason}" if isinstance(exc, client.ApiException)
                      else repr(exc))
            what = ("termination" if isinstance(w, Terminate)
                    else f"attempt {w.attempt.attempt}")
            log.warning("%s (%s): not written, dropped: %s", w.name, what, reason)
            return None
        self.queue.popleft()
        self.written += 1
        self.backoff.reset()
        self.state.ok()
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` (the queue left as it is: ``drain`` writes it out)."""
        await retrying.write_in_order(stop, self.queue, self.wake, self.step)

    async def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.queue and time.monotonic() < deadline:
            wait = await self.step()
            if wait is not None:
                await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
        if self.queue:
            log.warning("%d attempts not written to the API server on the way out",
                        len(self.queue))


async def existing(api: client.ApiClient, namespace: str) -> tuple[int, collections.Counter[str]]:
    """The highest request number of the Instances already in ``namespace`` (0: none) and the
    droplets their launched instances occupy: a restarted launcher numbers on from there and
    counts those slots as used."""
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        instances.GROUP, instances.VERSION, namespace, instances.PLURAL)
    highest = 0
    used: collections.Counter[str] = collections.Counter()
    for item in listed.get("items", []):
        spec, status = item.get("spec") or {}, item.get("status") or {}
        number = spec.get("request")
        if isinstance(number, int):
            highest = max(highest, number)
        if status.get("phase") == instances.LAUNCHED and status.get("droplet"):
            used[str(status["droplet"])] += 1
    return highest, used
