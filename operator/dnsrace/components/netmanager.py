"""``dnsrace network-manager``: EC2's Network Manager on real time, over the ``Instance`` objects.

Who calls it: the CLI (``dnsrace network-manager``, ``run``), the scenario lab (as a process,
reading ``netmanager.jsonl``), the launcher (``POST /admit`` when ``propagation-throttle`` is
on) and the tests (``Runner`` with a stand-in ``InstanceApi``; ``run`` against the real API
server). Why a thin runner: the mechanism (one FIFO pipeline at ``rate`` states a second, the
throttle's admission) is ``core.propagation.NetworkManager``, pure and tested on a virtual
clock; this module only feeds it what the API server says was launched, advances it on Unix
time and writes back what went through.

What it does: every Instance whose ``status.phase`` becomes ``Launched`` and which is not yet
``networkReady`` is enqueued once (after a restart, the ones the first list finds, in
``launchedAt`` order); every ``tick`` the core advances, and each state that went through
becomes a status patch (``networkReady``, ``networkReadyAt``, the ``NetworkReady`` condition
merged into the list read) and a Normal Event (at most ``events_per_second``). The patches are
written in order by one task; while the API server is unreachable they wait (one log line, a
back-off) and are written in order when it answers again.

Reservations: with the throttle, ``admit`` reserves a place in the backlog until the launch is
handed over with ``enqueue``; the core takes one reservation off with every launch enqueued, so
the watch's enqueue is what consumes them. A launch admitted and never seen launched (the
launcher died between its ``/admit`` and its patch) would hold its place for ever: the runner
lets a reservation go after ``reservation_ttl`` s.

What it shows: ``/metrics`` (``dnsrace_network_*``), ``/healthz`` (the core loop turns; an
unreachable API server is not unhealthy), ``POST /admit``, and one JSON line of figures a second
in ``out``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Protocol

import prometheus_client
from aiohttp import web
from kubernetes_asyncio import client

from dnsrace.components import instancewatch, outages, pacing, retrying, serving
from dnsrace.components import options as opts
from dnsrace.core import instances, propagation
from dnsrace.kube import client as kube_client
from dnsrace.kube import reporting

log = logging.getLogger(__name__)

COMPONENT = "network-manager"
"""The field manager, the Events' source and the metrics' job."""

BACKLOG = prometheus_client.Gauge(
    "dnsrace_network_backlog", "Network states waiting to propagate.")
OLDEST_AGE = prometheus_client.Gauge(
    "dnsrace_network_oldest_age_seconds",
    "Seconds the oldest waiting state has waited since its launch (0 when none).")
PROPAGATED = prometheus_client.Counter(
    "dnsrace_network_propagated_total", "Network states propagated (instances made reachable).")
ADMISSIONS = prometheus_client.Counter(
    "dnsrace_network_admissions_total",
    "POST /admit answers: admitted, or refused by propagation-throttle.", ["result"])
THROTTLE = prometheus_client.Gauge(
    "dnsrace_network_throttle", "1 while propagation-throttle is on.")
UNWRITTEN = prometheus_client.Gauge(
    "dnsrace_network_unwritten",
    "Propagated states whose Instance status is not written yet (the API server unreachable).")

def throttle_on(text: str) -> bool:
    """Whether ``--safeguards`` / ``DNSRACE_SAFEGUARDS`` switches ``propagation-throttle`` on."""
    return opts.safeguards(text).propagation_throttle


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``dnsrace network-manager`` runs with."""

    params: propagation.PropagationParams = dataclasses.field(
        default_factory=propagation.PropagationParams)
    throttle: propagation.PropagationThrottle | None = None
    """``propagation-throttle`` (None: off, ``/admit`` always admits)."""
    out: Path | None = Path("netmanager.jsonl")
    """JSON-lines file the figures are appended to (None: none written)."""
    tick: float = 0.1
    """Seconds between two advances of the core."""
    record_every: float = 1.0
    """Seconds between two figures lines (and metric updates)."""
    reservation_ttl: float = 30.0
    """Seconds an admitted launch keeps its place in the backlog without being seen launched."""
    events_per_second: float = 5.0
    """At most this many NetworkReady Events a second (the status says it for every one)."""
    http_port: int | None = None
    """Port of /healthz, /metrics and /admit (None: not served)."""
    http_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        for name in ("tick", "record_every", "reservation_ttl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 s, got {getattr(self, name)}")
        if self.events_per_second < 0:
            raise ValueError(f"events_per_second must be 0 or more, got "
                             f"{self.events_per_second}")


def options(*, rate: float, max_backlog: int, throttle: bool, out: Path | None,
            http_port: int | None) -> Options:
    """``Options`` from the command's values; a ValueError names the option as the command
    spells it (``--rate must be more than 0 ...``)."""
    try:
        params = propagation.PropagationParams(rate=rate)
    except ValueError as exc:
        raise ValueError(f"--{exc}") from None
    try:
        gate = propagation.PropagationThrottle(max_backlog=max_backlog)
    except ValueError as exc:
        raise ValueError(f"--{str(exc).replace('max_backlog', 'max-backlog')}") from None
    if http_port is not None and not 0 <= http_port < 65536:
        raise ValueError(f"--port must be a TCP port (0 to 65535), got {http_port}")
    return Options(params=params, throttle=gate if throttle else None, out=out,
                   http_port=http_port or None)


def record(fig: propagation.Figures, *, reserved: int = 0, unwritten: int = 0,
           written: int = 0) -> dict[str, Any]:
    """One line of ``netmanager.jsonl`` (docs/cascade.md, "The Network Manager")."""
    return {
        "t": round(fig.t, 3), "backlog": fig.backlog, "oldest_age": round(fig.oldest_age, 3),
        "propagated": fig.propagated, "throttle": fig.throttle,
        "admitted": fig.admitted, "refused": fig.refused, "reserved": reserved,
        "last_wait": round(fig.last_wait, 3), "unwritten": unwritten, "written": written,
    }


def ready_patch(body: Mapping[str, Any], done: propagation.Propagated) -> dict[str, Any]:
    """The merge patch of ``status`` that marks the Instance ``body`` network-ready: the
    ``NetworkReady`` condition merged into the conditions read (the launcher wrote
    ``Launched`` and never writes a Launched Instance again), so the list keeps both."""
    message = f"network state propagated {done.waited:.1f} s after the launch"
    cond = instances.condition(instances.CONDITION_NETWORK_READY, True, "Propagated", message,
                               done.t)
    conditions = instancewatch.status_of(body).get("conditions")
    return {"status": {
        "networkReady": True, "networkReadyAt": round(done.t, 3),
        "conditions": instances.merge_condition(
            conditions if isinstance(conditions, list) else None, cond),
    }}


class InstanceApi(Protocol):
    """What the runner writes: an Instance's status (a merge patch) and an Event on it."""

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None: ...

    async def event(self, name: str, uid: str, reason: str, message: str) -> None: ...


class KubeInstances:
    """``InstanceApi`` on the API server."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None:
        await client.CustomObjectsApi(self.api).patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            instances.GROUP, instances.VERSION, self.namespace, instances.PLURAL, name,
            dict(patch), _content_type="application/merge-patch+json")

    async def event(self, name: str, uid: str, reason: str, message: str) -> None:
        await reporting.post_event(
            self.api, self.namespace, kind=instances.KIND, name=name, uid=uid or None,
            type_="Normal", reason=reason, message=message, component=COMPONENT)


@dataclasses.dataclass(frozen=True)
class _Unwritten:
    uid: str
    done: propagation.Propagated


class Exporter:
    """Figures onto the metrics; the core's totals as counter increments (several runners in
    one process, as in the tests, add up)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def _add(self, counter: prometheus_client.Counter, key: str, total: int) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = total

    def update(self, fig: propagation.Figures, unwritten: int = 0) -> None:
        BACKLOG.set(fig.backlog)
        OLDEST_AGE.set(fig.oldest_age)
        THROTTLE.set(1 if fig.throttle else 0)
        UNWRITTEN.set(unwritten)
        self._add(PROPAGATED, "propagated", fig.propagated)
        self._add(ADMISSIONS.labels("admitted"), "admitted", fig.admitted)
        self._add(ADMISSIONS.labels("refused"), "refused", fig.refused)


class Runner:
    """The core on real time: Instances in (``on_list`` / ``on_event``, an
    ``instancewatch.Follower``), status patches out, ``/admit`` answered."""

    def __init__(self, options: Options, api: InstanceApi, *,
                 clock: Callable[[], float] = time.time,
                 backoff: outages.Backoff | None = None) -> None:
        self.options = options
        self.api = api
        self.clock = clock
        self.core = propagation.NetworkManager(options.params, start=clock(),
                                               throttle=options.throttle)
        self.bodies: dict[str, Mapping[str, Any]] = {}
        """The newest body seen of each Instance, by name."""
        self.enqueued: set[str] = set()
        """uids of the Instances handed to the core (each once)."""
        self.unwritten: collections.deque[_Unwritten] = collections.deque()
        """Propagated states whose status is not written yet, in order."""
        self.reservations: collections.deque[float] = collections.deque()
        """When each reservation the core holds was made, oldest first."""
        self.written = 0
        self.dropped = 0
        self.backoff = backoff or outages.Backoff()
        self.outage = retrying.Reachability(
            "the API server", log,
            down="Instance status not written, {why}: {kept} kept, retried in order with "
                 "back-off",
            back="Instance status written again (API server back after: {why}); {kept} still "
                 "to write")
        self.exporter = Exporter()
        self.last_tick = time.monotonic()
        self.wake = asyncio.Event()
        self._events_budget = options.events_per_second
        self._events_at = time.monotonic()
        for result in ("admitted", "refused"):  # both series from the start, at 0
            ADMISSIONS.labels(result)

    # -- Instances in --------------------------------------------------------------------------

    def now(self) -> float:
        """Unix time, never before the core's (the clock may step back)."""
        return max(self.clock(), self.core.now)

    def _enqueue(self, body: Mapping[str, Any], now: float) -> None:
        name, uid = instancewatch.name_of(body), instancewatch.uid_of(body)
        at = instancewatch.launched_at(body)
        queued = at if at is not None and at <= now else now
        self.core.enqueue(name, queued)
        self.enqueued.add(uid)
        while len(self.reservations) > self.core.reserved:  # the oldest was taken
            self.reservations.popleft()

    def _wants(self, body: Mapping[str, Any]) -> bool:
        return (instancewatch.launched(body) and not instancewatch.network_ready(body)
                and instancewatch.uid_of(body) not in self.enqueued)

    async def on_list(self, items: list[Mapping[str, Any]]) -> None:
        """Every Instance there is: the launched ones not yet network-ready and not yet
        queued are queued in ``launchedAt`` order (after a restart: what launched while the
        Network Manager was down); the ones known and gone were deleted."""
        self.bodies = {instancewatch.name_of(b): b for b in items}
        self.enqueued &= {instancewatch.uid_of(b) for b in items}
        now = self.now()
        fresh = [b for b in items if self._wants(b)]
        fresh.sort(key=lambda b: (instancewatch.launched_at(b) or now,
                                  instancewatch.name_of(b)))
        for body in fresh:
            self._enqueue(body, now)
        if fresh:
            log.info("%d launched Instances not network-ready queued (in launch order)",
                     len(fresh))

    async def on_event(self, kind: str, body: Mapping[str, Any]) -> None:
        name = instancewatch.name_of(body)
        if kind == "DELETED":
            self.bodies.pop(name, None)
            self.enqueued.discard(instancewatch.uid_of(body))
            return
        self.bodies[name] = body
        if self._wants(body):
            self._enqueue(body, self.now())

    # -- the core ------------------------------------------------------------------------------

    def _expire_reservations(self, now: float) -> None:
        ttl = self.options.reservation_ttl
        expired = 0
        while self.reservations and self.reservations[0] <= now - ttl:
            self.reservations.popleft()
            expired += 1
        if expired:
            self.core.reserved = len(self.reservations)
            log.warning("%d admitted launches not seen launched within %.0f s: their places "
                        "in the backlog are given up", expired, ttl)

    def step(self) -> list[propagation.Propagated]:
        """Advance the core to now; what went through joins the unwritten patches."""
        now = self.now()
        done = self.core.advance(now)
        self._expire_reservations(now)
        for item in done:
            body = self.bodies.get(item.instance)
            uid = instancewatch.uid_of(body) if body is not None else ""
            self.unwritten.append(_Unwritten(uid, item))
        if done:
            self.wake.set()
        return done

    def admit(self) -> tuple[bool, int]:
        """The launcher's gate (``POST /admit``): (admitted, backlog)."""
        self.step()
        ok = self.core.admit(self.core.now)
        if ok and self.core.throttle is not None:
            self.reservations.append(self.core.now)
        self.exporter.update(self.core.figures(self.core.now), len(self.unwritten))
        return ok, self.core.backlog

    def figures(self) -> dict[str, Any]:
        self.step()
        fig = self.core.figures(self.core.now)
        self.exporter.update(fig, len(self.unwritten))
        return record(fig, reserved=self.core.reserved, unwritten=len(self.unwritten),
                      written=self.written)

    def sample(self, out: IO[str] | None) -> dict[str, Any]:
        line = self.figures()
        if out is not None:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
        return line

    async def loop(self, stop: asyncio.Event, out: IO[str] | None) -> None:
        """Advance every ``tick`` s and sample every ``record_every`` s until ``stop``; one
        last line on the way out."""
        opts = self.options
        async def advance() -> None:
            self.step()

        async def sample() -> None:
            self.sample(out)

        await pacing.tick_loop(stop, tick=opts.tick, record_every=opts.record_every,
                               advance=advance, sample=sample, ticked=self._ticked)

    def _ticked(self, now: float) -> None:
        self.last_tick = now

    # -- status out ----------------------------------------------------------------------------

    def _event_allowed(self) -> bool:
        rate = self.options.events_per_second
        now = time.monotonic()
        self._events_budget = min(rate, self._events_budget + (now - self._events_at) * rate)
        self._events_at = now
        if self._events_budget >= 1:
            self._events_budget -= 1
            return True
        return False

    async def write_one(self) -> bool:
        """Write the oldest unwritten status; True when it is done with (written, or dropped
        because the Instance is gone or the patch was refused), False when the API server is
        unreachable (it stays first in line)."""
        item = self.unwritten[0]
        name = item.done.instance
        body = self.bodies.get(name)
        if body is None or (item.uid and instancewatch.uid_of(body) != item.uid):
            self.unwritten.popleft()
            self.dropped += 1
            log.info("%s deleted before its network state was written", name)
            return True
        try:
            await self.api.patch_status(name, ready_patch(body, item.done))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            status = kube_client.status_of(exc)
            what = outages.describe(exc)
            if what is not None:
                raise _Unreachable(what) from exc
            self.unwritten.popleft()
            self.dropped += 1
            if status == 404:
                log.info("%s deleted before its network state was written", name)
            elif isinstance(exc, client.ApiException):
                log.warning("status of %s refused (%s %s): not written", name, status,
                            exc.reason)
            else:
                log.exception("status of %s not written", name)
            return True
        self.unwritten.popleft()
        self.written += 1
        if self.options.events_per_second and self._event_allowed():
            message = (f"network state propagated {item.done.waited:.1f} s after the launch "
                       f"({self.core.backlog} states waiting)")
            try:
                await self.api.event(name, item.uid or instancewatch.uid_of(body),
                                     "NetworkReady", message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an Event is a courtesy: never retried
                log.debug("NetworkReady Event of %s not posted: %r", name, exc)
        return True

    async def _write_next(self) -> float | None:
        """``write_one``; the seconds to wait before trying again when the API server is
        unreachable, else None."""
        try:
            await self.write_one()
        except _Unreachable as exc:
            self.outage.failed(str(exc), kept=len(self.unwritten))
            return self.backoff.next()
        if self.outage.down:
            self.outage.ok(kept=len(self.unwritten))
            self.backoff.reset()
        return None

    async def writer(self, stop: asyncio.Event) -> None:
        """Write the unwritten statuses in order until ``stop``; while the API server is
        unreachable, one log line, a back-off, and the same one again."""
        await retrying.write_in_order(stop, self.unwritten, self.wake, self._write_next)

    # -- HTTP ----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_tick
        limit = max(10.0, 10 * self.options.tick)
        if idle > limit:
            return False, f"the core loop has not turned for {idle:.1f} s"
        return True, ""

    def app(self) -> web.Application:
        """/healthz, /metrics, and POST /admit (the launcher's gate)."""
        app = serving.make_app(self.health)

        async def admit(_: web.Request) -> web.Response:
            ok, backlog = self.admit()
            return web.json_response({"admitted": ok, "backlog": backlog,
                                      "reserved": self.core.reserved})

        app.router.add_post("/admit", admit)
        return app


class _Unreachable(Exception):
    """The API server did not take a status patch (an outage, not a refusal)."""


async def run(options: Options, api: client.ApiClient, namespace: str, stop: asyncio.Event,
              *, clock: Callable[[], float] = time.time,
              started: Callable[[Runner], None] | None = None) -> Runner:
    """Run the Network Manager until ``stop``: follow the namespace's Instances, advance,
    write what propagated, serve ``/admit``. Returns the runner."""
    runner = Runner(options, KubeInstances(api, namespace), clock=clock)
    server = None
    if options.http_port is not None:
        server = await serving.serve(options.http_host, options.http_port, app=runner.app())
    log.info("Network Manager: %.2f states/s; propagation-throttle %s", options.params.rate,
             f"on (max backlog {options.throttle.max_backlog})" if options.throttle else "off")
    if started is not None:
        started(runner)
    side = [asyncio.create_task(instancewatch.follow(api, namespace, runner, stop)),
            asyncio.create_task(runner.writer(stop))]
    try:
        await pacing.into(options.out, lambda fh: runner.loop(stop, fh))
        return runner
    finally:
        for task in side:
            task.cancel()
        await asyncio.gather(*side, return_exceptions=True)
        if runner.unwritten:
            log.warning("%d propagated states not written on the way out (a restart queues "
                        "their Instances again)", len(runner.unwritten))
        if server is not None:
            await server.cleanup()
