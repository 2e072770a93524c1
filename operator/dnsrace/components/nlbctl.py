"""``dnsrace nlb``: a Network Load Balancer on real time, its record in the lab's DNS.

Who calls it: the CLI (``dnsrace nlb``, ``run``; ``dnsrace nlb failover off|on`` posts to
``/failover``), the scenario lab (as a process, reading ``nlb.jsonl``) and the tests (``Runner``
fed Instances by hand over a ``MemoryRecordStore``; ``run`` against the local plane). Why a thin
runner: the mechanism (health thresholds, AZ failover, fail-open, ``velocity-control``) is
``core.nlb.Nlb``, pure and tested on a virtual clock; this module only feeds it on Unix time:

- targets (``nlbtargets``): every ``Instance`` of the namespace whose ``status.phase`` is
  ``Launched`` is registered in its AZ (``spec.az``) at its ``status.endpoint`` as soon as the
  watch shows it, before its network state has propagated (as NLB did: that is what makes the
  checks flap by themselves); a deleted Instance is deregistered. A list, then a watch from its
  resourceVersion (here); a 410 or any outage lists again.
- health checks (``nlbprobe``): real HTTP probes, ``GET http://<endpoint>/healthz`` with
  ``check_timeout``, a new connection each, at most ``concurrency`` at once, each result given
  to ``Nlb.observe``.
- the record (``nlbrecord``): every ``tick`` s ``Nlb.publish``; when the published set of
  addresses changed, the NLB's name gets one A record per distinct published host (with
  ``port``-style endpoints, kind, several targets share one host: it is published once),
  written in one etcd transaction that removes the name's other records. The NLB is the only
  writer of its own name: no plan, no marker. The record outlives the controller (it is left as
  it is on the way out).

What it shows (``nlbfigures``): ``/metrics`` (``dnsrace_nlb_*``, docs/metrics.md), ``/healthz``
(the publish loop turns), one JSON line per AZ and one for all each ``record_every`` s in
``out`` (``nlb.jsonl``), one log line when the API server or the DNS etcd becomes unreachable
and one when it is back (``nlboutage``). The manual step (9:36 AM) is
``POST /failover?enabled=0|1`` from loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from aiohttp import web
from kubernetes_asyncio import client, watch

# The "name as name" imports are re-exports: the CLI and the tests import them from here.
from dnsrace import settings as settings_mod
from dnsrace.components import nlboutage, options, retrying, serving
from dnsrace.components.nlbfigures import Exporter, figures_lines
from dnsrace.components.nlbprobe import Checker
from dnsrace.components.nlbprobe import probe as probe
from dnsrace.components.nlbrecord import Writer
from dnsrace.components.nlbrecord import etcd_store as etcd_store
from dnsrace.components.nlbrecord import record_set as record_set
from dnsrace.components.nlbtargets import Member as Member
from dnsrace.components.nlbtargets import Targets
from dnsrace.components.nlbtargets import member as member
from dnsrace.core import instances, nlb, records, stores

log = logging.getLogger(__name__)

FLAGS = {"interval": "--interval", "unhealthy_threshold": "--unhealthy-threshold",
         "healthy_threshold": "--healthy-threshold", "failover_share": "--failover-share"}
"""The core's parameter names as the command spells them, for error messages."""


def velocity_on(text: str) -> bool:
    """Whether ``--safeguards`` / ``DNSRACE_SAFEGUARDS`` switches ``velocity-control`` on."""
    return options.safeguards(text).velocity_control


def params(**values: Any) -> nlb.NlbParams:
    """``NlbParams`` from the command's values (None keeps a default); a ValueError names the
    option as the command spells it (``--failover-share``)."""
    return options.core_params(nlb.NlbParams, FLAGS, values)


def default_name(zone: str) -> str:
    """The NLB's DNS name in the lab zone."""
    return f"nlb.us-east-1.{zone}"


def check_name(name: str, zone: str) -> str:
    """``name`` normalised; a ValueError naming ``--name`` when it is outside ``zone``."""
    clean = name.rstrip(".").lower()
    zone = zone.rstrip(".").lower()
    if not clean.endswith("." + zone) or not all(clean.split(".")):
        raise ValueError(f"--name {name!r} must be a name inside the lab zone {zone}")
    return clean


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``dnsrace nlb`` runs with (the health and failover parameters are
    ``core.nlb.NlbParams``)."""

    params: nlb.NlbParams = dataclasses.field(default_factory=nlb.NlbParams)
    velocity: bool = False
    """``velocity-control`` on from the start (``core.nlb.VelocityControl``'s defaults)."""
    name: str = default_name(settings_mod.ZONE)
    """The NLB's DNS name (its records: one A record per published host)."""
    namespace: str = settings_mod.Kube.namespace
    """Where the Instances are watched."""
    ttl: int = settings_mod.Dns.record_ttl
    """TTL of the NLB's records."""
    check_timeout: float = 1.0
    """Seconds one health check may take, connection included."""
    concurrency: int = 64
    """Health checks in flight at most; more wait for a slot (their timeout starts then)."""
    out: Path | None = Path("nlb.jsonl")
    """JSON-lines file the figures are appended to (None: none written)."""
    seed: int = 0
    """Seeds each target's check phase."""
    tick: float = 0.5
    """Seconds between two publications (and record writes, when they changed)."""
    check_step: float = 0.05
    """Seconds between two looks for the checks due."""
    record_every: float = 1.0
    """Seconds between two figures lines (and metric updates)."""
    resync: float = 30.0
    """Seconds between two reads of the record in the DNS etcd, rewritten if it differs from
    what the NLB last wrote (someone else removed or changed it)."""
    watch_timeout: int = 300
    """Server-side timeout of one watch request; it is then continued."""
    http_port: int | None = None
    """Port of /healthz, /metrics and /failover (None: not served)."""
    http_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        if not self.check_timeout > 0:
            raise ValueError(f"--check-timeout must be more than 0 s, got {self.check_timeout}")
        for name in ("tick", "check_step", "record_every", "resync"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 s, got {getattr(self, name)}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0 < self.ttl <= 86400:
            raise ValueError(f"ttl out of range: {self.ttl}")
        records.name_path(self.name)  # a ValueError for an empty name


@dataclasses.dataclass(frozen=True)
class Failover:
    """What ``POST /failover`` did (its JSON answer)."""

    t: float
    auto_failover: bool
    was: bool
    failed_over_before: list[str]
    failed_over: list[str]
    """AZs failed over after the switch (its publish)."""
    added: int
    """Targets put back in DNS by the switch."""
    removed: int
    published: int


class Runner:
    """The core on real time: targets from Instances, probes out, results in, the record out."""

    def __init__(self, options: Options, store: stores.RecordStore | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.core = nlb.Nlb(options.params, random.Random(options.seed), start=clock(),
                            velocity=nlb.VelocityControl() if options.velocity else None)
        self.targets = Targets(self.core, clock)
        self.checker = Checker(self.core, self.targets, clock, timeout=options.check_timeout,
                               concurrency=options.concurrency, step=options.check_step)
        self.checks = self.checker.checks
        self.record = Writer(store, options.name, tick=options.tick, resync=options.resync)
        self.exporter = Exporter()
        self.last_tick = time.monotonic()
        self._failed_over: frozenset[str] = frozenset()
        self._fail_open = False

    # -- targets (``nlbtargets``) --------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """True once the Instances were listed: before, the record is not touched."""
        return self.targets.synced

    @property
    def endpoints(self) -> dict[str, str]:
        return self.targets.endpoints

    def sync(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """A full list of Instances (``Targets.sync``)."""
        self.targets.sync(objects)

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event of an Instance (``Targets.event``)."""
        self.targets.event(kind, obj)

    # -- the Instances -------------------------------------------------------------------------

    async def watch_loop(self, api: client.ApiClient, stop: asyncio.Event) -> None:
        """List the namespace's Instances, then watch from the list's resourceVersion; list
        again after a 410 (the watch fell too far behind) or an outage."""
        co = client.CustomObjectsApi(api)
        ns = self.options.namespace
        outage = nlboutage.Outage("API server")
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    listed = await co.list_namespaced_custom_object(
                        instances.GROUP, instances.VERSION, ns, instances.PLURAL)
                    self.targets.sync(listed.get("items") or [])
                    version = str(listed["metadata"]["resourceVersion"])
                    outage.ok()
                w = watch.Watch()
                try:
                    async for ev in w.stream(co.list_namespaced_custom_object,
                                             instances.GROUP, instances.VERSION, ns,
                                             instances.PLURAL, resource_version=version,
                                             timeout_seconds=self.options.watch_timeout,
                                             allow_watch_bookmarks=True):
                        kind = str(ev.get("type", ""))
                        obj = ev.get("raw_object")
                        if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                            self.targets.event(kind, obj)
                        seen = getattr(w, "resource_version", None)  # typed None upstream
                        if seen:
                            version = str(seen)
                finally:
                    w.stop()
                    await w.close()
            except asyncio.CancelledError:
                raise
            except client.ApiException as exc:
                if exc.status == 410:
                    log.info("the Instance watch expired (410): listing again")
                    version = None
                    continue
                version = None
                if outage.since is None:
                    log.warning("API server: Instances not read, %s %s; retrying with "
                                "back-off (checks go on)", exc.status, exc.reason)
                    outage.since = time.monotonic()
                outage.failures += 1
                await retrying.pause(stop, outage.backoff.next())
            except Exception as exc:
                version = None
                await retrying.pause(stop, outage.failed(exc, "reading Instances"))

    # -- health checks (``nlbprobe``) ----------------------------------------------------------

    async def check_loop(self, stop: asyncio.Event) -> None:
        await self.checker.loop(stop)

    # -- what DNS gets (``nlbrecord``) ---------------------------------------------------------

    @property
    def desired(self) -> dict[str, records.Record] | None:
        return self.record.desired

    @property
    def written(self) -> dict[str, records.Record] | None:
        return self.record.written

    @property
    def writes(self) -> int:
        return self.record.writes

    @property
    def write_failures(self) -> int:
        return self.record.write_failures

    def publish(self) -> nlb.Published:
        """Publish now; the records follow (the writer writes them when they changed)."""
        pub = self.core.publish(self.clock())
        if pub.failed_over != self._failed_over:
            for az in sorted(pub.failed_over - self._failed_over):
                log.warning("AZ %s failed over: its targets leave DNS, healthy ones included",
                            az)
            for az in sorted(self._failed_over - pub.failed_over):
                log.info("AZ %s back in DNS", az)
            self._failed_over = pub.failed_over
        if pub.fail_open != self._fail_open:
            log.warning("fail-open %s: %s", "on" if pub.fail_open else "off",
                        "no healthy target left, every target published" if pub.fail_open
                        else "healthy targets again")
            self._fail_open = pub.fail_open
        if self.synced:
            self.record.want(record_set(pub.targets, self.endpoints, self.options.ttl))
        return pub

    async def write(self) -> bool:
        """``Writer.write``: True when something was written."""
        return await self.record.write()

    async def resync(self) -> None:
        """``Writer.resync``: the record read back, rewritten if it differs."""
        await self.record.resync()

    async def write_loop(self, stop: asyncio.Event) -> None:
        await self.record.loop(stop)

    async def publish_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.publish()
            self.last_tick = time.monotonic()
            await retrying.pause(stop, self.options.tick)

    # -- figures -------------------------------------------------------------------------------

    def lines(self) -> list[dict[str, Any]]:
        now = max(self.clock(), self.core.now)
        return figures_lines(self.core, now, checks=self.checks,
                             addresses=len(self.written or {}), writes=self.writes,
                             write_failures=self.write_failures)

    def sample(self, out: IO[str] | None) -> list[dict[str, Any]]:
        """Figures now: exported, written as lines of ``out``, returned."""
        now = max(self.clock(), self.core.now)
        self.exporter.update(self.core, now)
        lines = self.lines()
        if out is not None:
            for line in lines:
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
        return lines

    async def sample_loop(self, stop: asyncio.Event, out: IO[str] | None) -> None:
        while not stop.is_set():
            self.sample(out)
            await retrying.pause(stop, self.options.record_every)

    # -- the manual step -----------------------------------------------------------------------

    def set_failover(self, enabled: bool) -> Failover:
        """Switch automatic AZ failover (the manual step at 9:36 AM: off), publish at once."""
        was = self.core.auto_failover
        before = sorted(self.core.failed_over)
        self.core.set_auto_failover(enabled)
        pub = self.publish()
        log.info("automatic AZ failover %s (was %s): %d targets added, %d removed",
                 "on" if enabled else "off", "on" if was else "off", len(pub.added),
                 len(pub.removed))
        return Failover(t=round(pub.t, 3), auto_failover=enabled, was=was,
                        failed_over_before=before, failed_over=sorted(pub.failed_over),
                        added=len(pub.added), removed=len(pub.removed),
                        published=len(pub.targets))

    # -- HTTP ----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        idle = time.monotonic() - self.last_tick
        limit = max(10.0, 10 * self.options.tick)
        if idle > limit:
            return False, f"the publish loop has not turned for {idle:.1f} s"
        return True, ""

    def app(self) -> web.Application:
        """/healthz, /metrics, and POST /failover?enabled=0|1 (from loopback only)."""
        app = serving.make_app(self.health)

        async def failover(request: web.Request) -> web.Response:
            try:
                local = ipaddress.ip_address(request.remote or "").is_loopback
            except ValueError:
                local = False
            if not local:
                return web.json_response({"error": "POST /failover is taken from loopback "
                                          "only (kubectl exec or port-forward)"}, status=403)
            flag = request.query.get("enabled", "").lower()
            if flag not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                return web.json_response({"error": f"enabled={flag!r}: use 0 or 1"},
                                         status=400)
            result = self.set_failover(flag in ("1", "true", "yes", "on"))
            return web.json_response(dataclasses.asdict(result))

        app.router.add_post("/failover", failover)
        return app


async def run(options: Options, store: stores.RecordStore | None,
              api: client.ApiClient | None, stop: asyncio.Event, *,
              clock: Callable[[], float] = time.time,
              started: Callable[[Runner], None] | None = None) -> Runner:
    """Run the NLB until ``stop``: watch the Instances (``api``; None: the caller feeds
    ``Runner.sync``/``event``), check, publish into ``store``, serve, sample. The record is
    left as it is on the way out. Returns the runner."""
    runner = Runner(options, store, clock=clock)
    async with serving.served(options.http_host, options.http_port, runner.app):
        p = options.params
        log.info("NLB %s: Instances of %s checked every %.1f s (unhealthy after %d failures, "
                 "healthy after %d passes, timeout %.1f s); AZ failover above %.0f %% "
                 "unhealthy; velocity-control %s", options.name, options.namespace, p.interval,
                 p.unhealthy_threshold, p.healthy_threshold, options.check_timeout,
                 100 * p.failover_share, "on" if options.velocity else "off")
        fh = None
        if options.out is not None:
            options.out.parent.mkdir(parents=True, exist_ok=True)
            fh = options.out.open("a")
        tasks = [asyncio.create_task(runner.check_loop(stop)),
                 asyncio.create_task(runner.publish_loop(stop)),
                 asyncio.create_task(runner.write_loop(stop)),
                 asyncio.create_task(runner.sample_loop(stop, fh))]
        if api is not None:
            tasks.append(asyncio.create_task(runner.watch_loop(api, stop)))
        stopped = asyncio.create_task(stop.wait())
        try:
            if started is not None:
                started(runner)
            done, _ = await asyncio.wait([stopped, *tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                error = None if task is stopped or task.cancelled() else task.exception()
                if error is not None:
                    raise error  # a bug (outages are waited out): with its traceback
        finally:
            stopped.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                runner.sample(fh)  # the last figures, on the way out
            finally:
                if fh is not None:
                    fh.close()
    return runner
