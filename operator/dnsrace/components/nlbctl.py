"""``dnsrace nlb``: a Network Load Balancer on real time, its record in the lab's DNS.

Who calls it: the CLI (``dnsrace nlb``, ``run``; ``dnsrace nlb failover off|on`` posts to
``/failover``), the scenario lab (as a process, reading ``nlb.jsonl``) and the tests (``Runner``
fed Instances by hand over a ``MemoryRecordStore``; ``run`` against the local plane). Why a thin
runner: the mechanism (health thresholds, AZ failover, fail-open, ``velocity-control``) is
``core.nlb.Nlb``, pure and tested on a virtual clock; this module only feeds it on Unix time:

- targets: every ``Instance`` of the namespace whose ``status.phase`` is ``Launched`` is
  registered in its AZ (``spec.az``) at its ``status.endpoint`` as soon as the watch shows it,
  before its network state has propagated (as NLB did: that is what makes the checks flap by
  themselves); a deleted Instance is deregistered. A list, then a watch from its
  resourceVersion; a 410 or any outage lists again.
- health checks: real HTTP probes, ``GET http://<endpoint>/healthz`` with ``check_timeout``, a
  new connection each, at most ``concurrency`` at once, each result given to ``Nlb.observe``.
- the record: every ``tick`` s ``Nlb.publish``; when the published set of addresses changed, the
  NLB's name gets one A record per distinct published host (with ``port``-style endpoints, kind,
  several targets share one host: it is published once), written in one etcd transaction that
  removes the name's other records. The NLB is the only writer of its own name: no plan, no
  marker. The record outlives the controller (it is left as it is on the way out).

What it shows: ``/metrics`` (``dnsrace_nlb_*``, docs/metrics.md), ``/healthz`` (the publish loop
turns), one JSON line per AZ and one for all each ``record_every`` s in ``out``
(``nlb.jsonl``), one log line when the API server or the DNS etcd becomes unreachable and one
when it is back. The manual step (9:36 AM) is ``POST /failover?enabled=0|1`` from loopback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import aiohttp
import prometheus_client
from aiohttp import web
from kubernetes_asyncio import client, watch

from dnsrace import settings as settings_mod
from dnsrace.components import options, outages, serving
from dnsrace.core import instances, launching, nlb, records, stores

log = logging.getLogger(__name__)

AZS = launching.AZS
"""The AZs the Instance CRD allows: every figures sample names each, with targets or not."""

OUTCOMES = ("ok", "status", "refused", "reset", "timeout", "error")
"""A health check's outcome: ``ok`` (HTTP 200-399, NLB's default success codes), ``status``
(another HTTP status), ``refused`` (nothing listens), ``reset`` (the connection dropped before
an answer), ``timeout`` (no answer in ``check_timeout``), ``error`` (anything else: unreachable
network, bad endpoint)."""

TARGETS = prometheus_client.Gauge(
    "dnsrace_nlb_targets", "Registered targets per AZ by their health-check state.",
    ["az", "state"])
PUBLISHED_CAPACITY = prometheus_client.Gauge(
    "dnsrace_nlb_published_capacity", "Capacity the NLB publishes (serves) per AZ.", ["az"])
FAILED_OVER = prometheus_client.Gauge(
    "dnsrace_nlb_failed_over", "1 while the AZ is failed over (none of its targets published).",
    ["az"])
FLIPS = prometheus_client.Counter(
    "dnsrace_nlb_flips_total", "Target health changes (healthy to unhealthy or back).")
FAILOVERS = prometheus_client.Counter(
    "dnsrace_nlb_failovers_total", "AZs failed over by automatic AZ DNS failover.")
CAPACITY_REMOVED = prometheus_client.Counter(
    "dnsrace_nlb_capacity_removed_total",
    "Healthy capacity removed from DNS by AZ failover.")
CHECKS = prometheus_client.Counter(
    "dnsrace_nlb_checks_total",
    "Health checks by outcome: ok, status, refused, reset, timeout, error.", ["result"])
AUTO_FAILOVER = prometheus_client.Gauge(
    "dnsrace_nlb_auto_failover", "1 while automatic AZ DNS failover is on.")
VELOCITY = prometheus_client.Gauge(
    "dnsrace_nlb_velocity_control", "1 while the velocity-control safeguard is on.")
RECORD_WRITES = prometheus_client.Counter(
    "dnsrace_nlb_record_writes_total",
    "Writes of the NLB's DNS record to the DNS etcd: ok, failed.", ["result"])

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


# -- Instances -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """A launched Instance as the NLB sees it: a target."""

    name: str
    az: str
    endpoint: str
    """``host:port`` the instance serves on."""


def member(obj: Mapping[str, Any]) -> Member | None:
    """The target an Instance object stands for: None unless it is Launched, with an endpoint
    and an AZ, and not being deleted."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    if meta.get("deletionTimestamp") or status.get("phase") != instances.LAUNCHED:
        return None
    name, az, endpoint = meta.get("name"), spec.get("az"), status.get("endpoint")
    if not (isinstance(name, str) and isinstance(az, str) and isinstance(endpoint, str)
            and name and az and endpoint):
        return None
    return Member(name, az, endpoint)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) -> (host, port); a ValueError when it is neither."""
    host, sep, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


def record_leaf(host: str) -> str:
    """The record's leaf under the NLB's name: the address, dots and colons as dashes."""
    return "nlb-" + host.replace(".", "-").replace(":", "-")


def record_set(published: Iterable[str], endpoints: Mapping[str, str],
               ttl: int) -> dict[str, records.Record]:
    """The NLB's records for the published targets: one A (or AAAA) record per distinct host
    of their endpoints. Several targets on one host (``port``-style endpoints) give one record:
    DNS carries no port, and a client reaching the host reaches whichever of them serves.
    A target whose host is not an IP address is left out (DNS can carry no name here)."""
    out: dict[str, records.Record] = {}
    for target in sorted(published):
        endpoint = endpoints.get(target)
        if endpoint is None:
            continue
        try:
            host, _ = split_endpoint(endpoint)
            ipaddress.ip_address(host)
        except ValueError:
            continue
        out[record_leaf(host)] = records.Record(ttl=ttl, host=host)
    return out


# -- health checks -------------------------------------------------------------------------


async def probe(session: aiohttp.ClientSession, endpoint: str, timeout: float) -> str:
    """One health check: ``GET http://<endpoint>/healthz`` within ``timeout`` s, its outcome
    (``OUTCOMES``)."""
    try:
        host, port = split_endpoint(endpoint)
    except ValueError:
        return "error"
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/healthz"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout),
                               allow_redirects=False) as resp:
            await resp.read()
            return "ok" if 200 <= resp.status < 400 else "status"
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientConnectorError as exc:
        return "refused" if isinstance(exc.os_error, ConnectionRefusedError) else "error"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionResetError):
        return "reset"
    except (aiohttp.ClientError, OSError, ValueError):
        return "error"


# -- figures -------------------------------------------------------------------------------


def _num(x: float) -> float | int:
    """Capacities as the figures write them: whole numbers without ``.0``."""
    return int(x) if float(x).is_integer() else round(x, 3)


def figures_lines(core: nlb.Nlb, now: float, *, checks: Mapping[str, int] | None = None,
                  addresses: int = 0, writes: int = 0, write_failures: int = 0,
                  ) -> list[dict[str, Any]]:
    """One figures sample of ``nlb.jsonl`` (docs/cascade.md, "The NLB"): a line per AZ
    ``{t, az, healthy, unhealthy, published, failed_over, targets}`` (capacities: healthy and
    unhealthy by the checks, published in DNS), then ``{t, az: "all", ...}`` with the totals."""
    fig = core.figures(now)
    t = round(now, 3)
    healthy: dict[str, float] = collections.defaultdict(float)
    unhealthy: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for target in core.targets.values():
        (healthy if target.healthy else unhealthy)[target.az] += target.capacity
        count[target.az] += 1
    lines: list[dict[str, Any]] = []
    for az in sorted(set(AZS) | set(fig.registered)):
        lines.append({"t": t, "az": az, "healthy": _num(healthy[az]),
                      "unhealthy": _num(unhealthy[az]),
                      "published": _num(fig.healthy.get(az, 0.0)),
                      "failed_over": az in fig.failed_over, "targets": count[az]})
    checks = checks or {}
    last = core.last
    lines.append({
        "t": t, "az": "all", "flips": fig.flips, "failovers": fig.az_failovers,
        "restores": fig.az_restores, "removed": _num(fig.removed_healthy),
        "removed_unhealthy": _num(fig.removed_unhealthy),
        "removed_in_window": _num(fig.removed_in_window), "held": _num(fig.held),
        "targets": fig.targets, "unhealthy": fig.unhealthy,
        "published": len(last.targets) if last is not None else 0, "addresses": addresses,
        "fail_open": bool(last is not None and last.fail_open),
        "checks": sum(checks.values()), "checks_failed": sum(
            n for k, n in checks.items() if k != "ok"),
        "writes": writes, "write_failures": write_failures,
        "auto_failover": fig.auto_failover, "velocity_control": fig.velocity_control,
    })
    return lines


class Exporter:
    """Puts the core's state on the Prometheus metrics: gauges as they are, the core's totals
    as counter increments since the previous update (several runners in one process add up)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def _add(self, counter: prometheus_client.Counter, key: str, total: float) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = total

    def update(self, core: nlb.Nlb, now: float) -> None:
        fig = core.figures(now)
        states: dict[tuple[str, str], int] = collections.defaultdict(int)
        for target in core.targets.values():
            states[target.az, "healthy" if target.healthy else "unhealthy"] += 1
        for az in sorted(set(AZS) | set(fig.registered)):
            for state in ("healthy", "unhealthy"):
                TARGETS.labels(az, state).set(states[az, state])
            PUBLISHED_CAPACITY.labels(az).set(fig.healthy.get(az, 0.0))
            FAILED_OVER.labels(az).set(1 if az in fig.failed_over else 0)
        AUTO_FAILOVER.set(1 if fig.auto_failover else 0)
        VELOCITY.set(1 if fig.velocity_control else 0)
        self._add(FLIPS, "flips", fig.flips)
        self._add(FAILOVERS, "failovers", fig.az_failovers)
        self._add(CAPACITY_REMOVED, "removed", fig.removed_healthy)


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


class _Outage:
    """One log line when a dependency becomes unreachable, one when it is back."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.failures = 0
        self.backoff = outages.Backoff()

    def failed(self, exc: BaseException, doing: str) -> float:
        """Log (the first failure of a streak only, unless it is a bug) and return the delay
        before the next attempt."""
        self.failures += 1
        description = outages.describe(exc)
        delay = self.backoff.next()
        if description is None:
            log.error("%s: %s failed; retrying in %.1f s", self.what, doing, delay,
                      exc_info=exc)
        elif self.since is None:
            log.warning("%s: %s failed, %s; retrying with back-off (checks go on)",
                        self.what, doing, description)
        if self.since is None:
            self.since = time.monotonic()
        return delay

    def ok(self) -> None:
        if self.since is not None:
            log.info("%s reachable again after %.1f s (%d attempts failed)", self.what,
                     time.monotonic() - self.since, self.failures)
        self.since = None
        self.failures = 0
        self.backoff.reset()


async def _sleep(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


class Runner:
    """The core on real time: targets from Instances, probes out, results in, the record out."""

    def __init__(self, options: Options, store: stores.RecordStore | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.core = nlb.Nlb(options.params, random.Random(options.seed), start=clock(),
                            velocity=nlb.VelocityControl() if options.velocity else None)
        self.members: dict[str, Member] = {}
        self.synced = False
        """True once the Instances were listed: before, the record is not touched."""
        self.desired: dict[str, records.Record] | None = None
        self.written: dict[str, records.Record] | None = None
        self.checks: collections.Counter[str] = collections.Counter()
        self.writes = self.write_failures = 0
        self.exporter = Exporter()
        self.last_tick = time.monotonic()
        self._dirty = asyncio.Event()
        self._probes: set[asyncio.Task[None]] = set()
        self._failed_over: frozenset[str] = frozenset()
        self._fail_open = False

    # -- targets -------------------------------------------------------------------------------

    def _add(self, m: Member) -> None:
        current = self.members.get(m.name)
        if current == m:
            return
        if current is not None:  # moved (a new endpoint): a new registration
            self.core.deregister(m.name)
        self.core.register(m.name, m.az, self.clock())
        self.members[m.name] = m
        log.debug("target %s registered in %s at %s", m.name, m.az, m.endpoint)

    def _remove(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self.core.deregister(name)
            log.debug("target %s deregistered", name)

    def sync(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """A full list of Instances: register the launched ones not yet registered,
        deregister those gone; registered ones keep their health."""
        found = {m.name: m for m in (member(o) for o in objects) if m is not None}
        for name in set(self.members) - set(found):
            self._remove(name)
        for m in found.values():
            self._add(m)
        self.synced = True

    def event(self, kind: str, obj: Mapping[str, Any]) -> None:
        """One watch event of an Instance."""
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        m = None if kind == "DELETED" else member(obj)
        if m is None:
            self._remove(name)
        else:
            self._add(m)

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: m.endpoint for name, m in self.members.items()}

    # -- health checks -------------------------------------------------------------------------

    async def _check(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore,
                     name: str, t: float, m: Member) -> None:
        async with slots:
            outcome = await probe(session, m.endpoint, self.options.check_timeout)
        self.checks[outcome] += 1
        CHECKS.labels(outcome).inc()
        if self.members.get(name) is not m:
            return  # deregistered (or moved) while it was probed
        if self.core.observe(name, t, outcome == "ok"):
            target = self.core.targets[name]
            log.debug("target %s (%s) %s after %s", name, m.az,
                      "healthy" if target.healthy else "unhealthy", outcome)

    def start_due(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore) -> int:
        """Start a probe for every check due now; how many started."""
        due = self.core.take_due(self.clock())
        for t, name in due:
            m = self.members[name]
            task = asyncio.create_task(self._check(session, slots, name, t, m))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)
        return len(due)

    async def check_loop(self, stop: asyncio.Event) -> None:
        for outcome in OUTCOMES:  # every series from the start, at 0
            CHECKS.labels(outcome)
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        slots = asyncio.Semaphore(self.options.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while not stop.is_set():
                    self.start_due(session, slots)
                    await _sleep(stop, self.options.check_step)
            finally:
                for task in list(self._probes):
                    task.cancel()
                await asyncio.gather(*self._probes, return_exceptions=True)

    # -- what DNS gets -------------------------------------------------------------------------

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
            self.desired = record_set(pub.targets, self.endpoints, self.options.ttl)
            if self.desired != self.written:
                self._dirty.set()
        return pub

    async def write(self) -> bool:
        """Write the desired records if they differ from what was last written; True when
        something was written."""
        desired = self.desired
        if self.store is None or desired is None or desired == self.written:
            return False
        await self.store.apply(stores.Change(self.options.name, put=dict(desired),
                                             delete_all=True))
        self.written = desired
        self.writes += 1
        RECORD_WRITES.labels("ok").inc()
        log.info("%s: %d addresses published", self.options.name, len(desired))
        return True

    async def resync(self) -> None:
        """Read the record back; forget what was written when it differs, so it is rewritten."""
        if self.store is None or self.written is None:
            return
        state = await self.store.read(self.options.name)
        if state.records != self.written:
            log.warning("%s: the DNS etcd holds %d records, not the %d written: rewriting",
                        self.options.name, len(state.records), len(self.written))
            self.written = None
            self._dirty.set()

    async def write_loop(self, stop: asyncio.Event) -> None:
        """Write the record whenever it changed; on an outage, back off and write the newest
        record once the DNS etcd answers again."""
        outage = _Outage("DNS etcd")
        RECORD_WRITES.labels("ok")
        RECORD_WRITES.labels("failed")
        next_resync = time.monotonic() + self.options.resync
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.options.tick)
            if stop.is_set():
                break
            self._dirty.clear()
            try:
                if time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + self.options.resync
                    await self.resync()
                await self.write()
            except asyncio.CancelledError:
                raise
            except stores.ChangeRejected as exc:  # the name moved between read and write
                log.info("record write refused, writing again: %s", exc)
                await _sleep(stop, self.options.tick)
                self._dirty.set()
            except Exception as exc:
                self.write_failures += 1
                RECORD_WRITES.labels("failed").inc()
                await _sleep(stop, outage.failed(exc, f"writing {self.options.name}"))
                self._dirty.set()
            else:
                outage.ok()

    async def publish_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.publish()
            self.last_tick = time.monotonic()
            await _sleep(stop, self.options.tick)

    # -- the Instances -------------------------------------------------------------------------

    async def watch_loop(self, api: client.ApiClient, stop: asyncio.Event) -> None:
        """List the namespace's Instances, then watch from the list's resourceVersion; list
        again after a 410 (the watch fell too far behind) or an outage."""
        co = client.CustomObjectsApi(api)
        ns = self.options.namespace
        outage = _Outage("API server")
        version: str | None = None
        while not stop.is_set():
            try:
                if version is None:
                    listed = await co.list_namespaced_custom_object(
                        instances.GROUP, instances.VERSION, ns, instances.PLURAL)
                    self.sync(listed.get("items") or [])
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
                            self.event(kind, obj)
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
                await _sleep(stop, outage.backoff.next())
            except Exception as exc:
                version = None
                await _sleep(stop, outage.failed(exc, "reading Instances"))

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
            await _sleep(stop, self.options.record_every)

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


def etcd_store(cfg: settings_mod.Settings, timeout: float = 2.0) -> stores.RecordStore:
    """The DNS etcd CoreDNS serves, as a record store."""
    from dnsrace.dnsstore import etcd  # aetcd only when the NLB runs

    return etcd.EtcdRecordStore.from_endpoint(cfg.dns.etcd_endpoint, timeout=timeout)


async def run(options: Options, store: stores.RecordStore | None,
              api: client.ApiClient | None, stop: asyncio.Event, *,
              clock: Callable[[], float] = time.time,
              started: Callable[[Runner], None] | None = None) -> Runner:
    """Run the NLB until ``stop``: watch the Instances (``api``; None: the caller feeds
    ``Runner.sync``/``event``), check, publish into ``store``, serve, sample. The record is
    left as it is on the way out. Returns the runner."""
    runner = Runner(options, store, clock=clock)
    server = None
    if options.http_port is not None:
        server = await serving.serve(options.http_host, options.http_port, app=runner.app())
    p = options.params
    log.info("NLB %s: Instances of %s checked every %.1f s (unhealthy after %d failures, "
             "healthy after %d passes, timeout %.1f s); AZ failover above %.0f %% unhealthy; "
             "velocity-control %s", options.name, options.namespace, p.interval,
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
        done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
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
            if server is not None:
                await server.cleanup()
    return runner
