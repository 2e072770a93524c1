"""``dnsrace dwfm``: EC2's DropletWorkflow Manager on real time, its leases in DynamoDB.

Who calls it: the CLI (``dnsrace dwfm``, ``run``; ``dnsrace dwfm restart`` posts to
``/restart``), the scenario lab (as a process, reading ``dwfm.jsonl``) and the tests (``Runner``
with a ``MemoryLeaseStore``, ``run`` against DynamoDB Local). Why a thin runner: the mechanism
(state checks, lease expiry, the re-establish queue with deadlines, ``dwfm-throttle``) is
``core.dwfm.Dwfm``, pure and tested on a virtual clock; this module only drives it on Unix time
against ``components.leasestore`` (DynamoDB through the lab's DNS) and shows what it does.

Threading: the core's store calls are synchronous, so every call into the core (``advance``
every ``tick`` s, ``figures``, ``restart``) runs on one dedicated thread, one call at a time;
the event loop stays free to serve ``/metrics`` and ``/restart`` while a store call waits.

What it shows: ``/metrics`` (``dnsrace_dwfm_*``, see docs/cascade.md), ``GET /leases`` (the
droplets and those holding a valid lease: the launcher's lease view), ``/healthz`` (the core
loop is turning; an unreachable store is not unhealthy: a restart by a liveness probe would be a
manual step nobody took), one JSON line of figures per ``record_every`` s in ``out``, and one log
line when DynamoDB becomes unreachable and one when it is back (``leasestore``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import json
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import prometheus_client
from aiohttp import web

from dnsrace import settings as settings_mod
from dnsrace.components import options, pacing, serving
from dnsrace.core import dwfm

log = logging.getLogger(__name__)

T = TypeVar("T")

DROPLETS = prometheus_client.Gauge("dnsrace_dwfm_droplets", "Droplets in the fleet.")
LEASES_VALID = prometheus_client.Gauge(
    "dnsrace_dwfm_leases_valid", "Droplets holding a valid lease (DWFM's view).")
QUEUE_DEPTH = prometheus_client.Gauge(
    "dnsrace_dwfm_queue_depth", "Re-establish items waiting for a worker.")
IN_SERVICE = prometheus_client.Gauge(
    "dnsrace_dwfm_in_service", "Re-establish items being worked on.")
OLDEST_AGE = prometheus_client.Gauge(
    "dnsrace_dwfm_queue_oldest_age_seconds", "Age of the oldest waiting item (0 when none).")
GOODPUT = prometheus_client.Gauge(
    "dnsrace_dwfm_goodput_ratio",
    f"Useful share of the items finished in the last {dwfm.GOODPUT_WINDOW:.0f} s "
    "(1 when none finished).")
THROTTLE = prometheus_client.Gauge(
    "dnsrace_dwfm_throttle", "1 while dwfm-throttle (admission by queue size) is on.")
LAG = prometheus_client.Gauge(
    "dnsrace_dwfm_lag_seconds",
    "How long the last advance of the core took: how far behind real time it ran.")
COMPLETIONS = prometheus_client.Counter(
    "dnsrace_dwfm_completions_total",
    "Re-establish items finished: useful (in time, lease written), wasted (past the deadline, "
    "queued again), failed (the lease write failed).", ["result"])
ADMISSIONS = prometheus_client.Counter(
    "dnsrace_dwfm_admissions_total",
    "Re-establish items offered to the queue: admitted, or refused by dwfm-throttle.",
    ["result"])
DROPPED = prometheus_client.Counter(
    "dnsrace_dwfm_dropped_total", "Items dropped by restarts (queued or in service).")
RENEWALS = prometheus_client.Counter(
    "dnsrace_dwfm_renewals_total",
    "State checks that tried to renew a lease: ok, or failed (unreachable or expired).",
    ["result"])
RESTARTS = prometheus_client.Counter(
    "dnsrace_dwfm_restarts_total", "Restarts (the manual step, POST /restart).")
STORE_UNAVAILABLE = prometheus_client.Counter(
    "dnsrace_dwfm_store_unavailable_total",
    "Store calls that raised StoreUnavailable (DynamoDB unreachable).")

FLAGS = {"droplets": "--droplets", "workers": "--workers", "service_time": "--service-time",
         "deadline": "--deadline", "lease_ttl": "--lease-ttl",
         "check_interval": "--check-interval"}
"""The core's parameter names as the command spells them, for error messages."""


def throttle_on(text: str) -> bool:
    """Whether ``--safeguards`` / ``DNSRACE_SAFEGUARDS`` switches ``dwfm-throttle`` on."""
    return options.safeguards(text).dwfm_throttle


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``dnsrace dwfm`` runs with (the fleet's parameters are ``core.dwfm.DwfmParams``)."""

    params: dwfm.DwfmParams = dataclasses.field(default_factory=dwfm.DwfmParams)
    throttle: bool = False
    """``dwfm-throttle`` on from the start (``core.dwfm.Throttle`` with its defaults)."""
    out: Path | None = Path("dwfm.jsonl")
    """JSON-lines file the figures are appended to (None: none written)."""
    seed: int = 0
    """Seeds the droplets' check phases and the throttle's jitter."""
    tick: float = 0.05
    """Seconds between two advances of the core."""
    record_every: float = 1.0
    """Seconds between two figures lines (and metric updates)."""
    provision: bool = True
    """Write every lease directly when the table holds none of the fleet's (a fresh table):
    the fleet as it stood before the event. Off, a cold start goes through the queue."""
    http_port: int | None = None
    """Port of /healthz, /metrics and /restart (None: not served)."""
    http_host: str = "0.0.0.0"
    start_retry: float = 1.0
    """Seconds between two attempts to reach DynamoDB at start."""

    def __post_init__(self) -> None:
        for name in ("tick", "record_every", "start_retry"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 s, got {getattr(self, name)}")


def params(**values: Any) -> dwfm.DwfmParams:
    """``DwfmParams`` from the command's values (None keeps a default); a ValueError names the
    option as the command spells it (``--lease-ttl``)."""
    return options.core_params(dwfm.DwfmParams, FLAGS, values)


def record(fig: dwfm.Figures, *, store_unavailable: int = 0, restarts: int = 0,
           lag: float = 0.0) -> dict[str, Any]:
    """One line of ``dwfm.jsonl`` (docs/cascade.md, "The DWFM component")."""
    return {
        "t": round(fig.t, 3), "droplets": fig.droplets, "leases_valid": fig.leases_valid,
        "queue_depth": fig.queue_depth, "in_service": fig.in_service,
        "oldest_age": round(fig.queue_age, 3), "queue_age": round(fig.queue_age, 3),
        "goodput": round(fig.goodput, 4), "useful_per_s": round(fig.useful_per_s, 3),
        "useful": fig.useful, "wasted": fig.wasted, "failed": fig.failed,
        "admitted": fig.admitted, "refused": fig.refused, "dropped": fig.dropped,
        "renewals": fig.renewals, "renewals_failed": fig.renewals_failed,
        "store_unavailable": store_unavailable, "restarts": restarts,
        "throttle": fig.throttle, "lag": round(lag, 4),
    }


class Exporter:
    """Puts figures on the Prometheus metrics: gauges as they are, the core's totals as
    counter increments since the previous figures (so several runners in one process, as in
    the tests, add up instead of fighting)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def _add(self, counter: prometheus_client.Counter, key: str, total: int) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = total

    def update(self, fig: dwfm.Figures, *, store_unavailable: int = 0, restarts: int = 0,
               lag: float = 0.0) -> None:
        DROPLETS.set(fig.droplets)
        LEASES_VALID.set(fig.leases_valid)
        QUEUE_DEPTH.set(fig.queue_depth)
        IN_SERVICE.set(fig.in_service)
        OLDEST_AGE.set(fig.queue_age)
        GOODPUT.set(fig.goodput)
        THROTTLE.set(1 if fig.throttle else 0)
        LAG.set(lag)
        self._add(COMPLETIONS.labels("useful"), "useful", fig.useful)
        self._add(COMPLETIONS.labels("wasted"), "wasted", fig.wasted)
        self._add(COMPLETIONS.labels("failed"), "failed", fig.failed)
        self._add(ADMISSIONS.labels("admitted"), "admitted", fig.admitted)
        self._add(ADMISSIONS.labels("refused"), "refused", fig.refused)
        self._add(DROPPED, "dropped", fig.dropped)
        self._add(RENEWALS.labels("ok"), "renewed", fig.renewals - fig.renewals_failed)
        self._add(RENEWALS.labels("failed"), "renewals_failed", fig.renewals_failed)
        self._add(RESTARTS, "restarts", restarts)
        self._add(STORE_UNAVAILABLE, "store_unavailable", store_unavailable)


@dataclasses.dataclass(frozen=True)
class Restarted:
    """What ``POST /restart`` did (its JSON answer)."""

    t: float
    dropped: int
    queued: int
    """Items that were waiting (part of ``dropped``)."""
    in_service: int
    throttle: bool
    """dwfm-throttle after the restart."""
    throttle_was: bool


def _unavailable_count(store: dwfm.LeaseStore) -> int:
    """StoreUnavailable raised so far, when the store counts them (both of ours do)."""
    return int(getattr(store, "unavailable", getattr(store, "errors", 0)))


class Runner:
    """The core on real time: one thread for every core call, figures out, restarts in."""

    def __init__(self, options: Options, store: dwfm.LeaseStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.core: dwfm.Dwfm | None = None
        self.restarts = 0
        self.lag = 0.0
        self.exporter = Exporter()
        self.last_tick = time.monotonic()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dwfm-core")

    async def on_core(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the core's thread (one call at a time)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    # -- start ---------------------------------------------------------------------------------

    def _open(self) -> dwfm.Dwfm:
        """On the core's thread: the table, the core (it loads the leases), the provisioning."""
        ensure = getattr(self.store, "ensure_table", None)
        if ensure is not None:
            ensure()
        now = self.clock()
        opts = self.options
        core = dwfm.Dwfm(opts.params, self.store, random.Random(opts.seed), start=now,
                         throttle=dwfm.Throttle() if opts.throttle else None)
        if opts.provision and not core.expires:
            started = time.monotonic()
            try:
                written = core.provision(now)
            except dwfm.StoreUnavailable as exc:
                log.warning("provisioning the fleet's leases failed (%s): they come through "
                            "the queue", exc)
            else:
                log.info("provisioned %d leases in %.2f s", written, time.monotonic() - started)
        else:
            log.info("%d leases loaded, %d valid", len(core.expires), core.leases_valid(now))
        return core

    async def start(self, stop: asyncio.Event) -> bool:
        """Reach DynamoDB (retrying every ``start_retry`` s) and build the core; False when
        ``stop`` came first."""
        waiting = False
        while not stop.is_set():
            try:
                self.core = await self.on_core(self._open)
            except dwfm.StoreUnavailable as exc:
                if not waiting:  # one line; the store logs when DynamoDB answers again
                    log.info("waiting for DynamoDB (%s), trying every %.1f s", exc,
                             self.options.start_retry)
                    waiting = True
            else:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.start_retry)
        return False

    # -- the loop ------------------------------------------------------------------------------

    def _advance(self) -> None:
        assert self.core is not None
        now = self.clock()
        self.core.advance(now)
        self.lag = self.clock() - now

    def _figures(self) -> tuple[dwfm.Figures, int]:
        assert self.core is not None
        now = max(self.clock(), self.core.now)
        self.core.advance(now)
        return self.core.figures(now), _unavailable_count(self.store)

    async def sample(self, out: IO[str] | None) -> dict[str, Any]:
        """Figures now: exported, written as one line of ``out``, returned."""
        fig, unavailable = await self.on_core(self._figures)
        self.exporter.update(fig, store_unavailable=unavailable, restarts=self.restarts,
                             lag=self.lag)
        line = record(fig, store_unavailable=unavailable, restarts=self.restarts, lag=self.lag)
        if out is not None:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
        return line

    async def loop(self, stop: asyncio.Event, out: IO[str] | None) -> None:
        """Advance every ``tick`` s and sample every ``record_every`` s until ``stop``."""
        opts = self.options
        await pacing.tick_loop(
            stop, tick=opts.tick, record_every=opts.record_every,
            advance=lambda: self.on_core(self._advance), sample=lambda: self.sample(out),
            ticked=self._ticked)

    def _ticked(self, now: float) -> None:
        self.last_tick = now

    # -- the manual step -----------------------------------------------------------------------

    def _restart(self, throttle: bool) -> Restarted:
        assert self.core is not None
        now = max(self.clock(), self.core.now)
        self.core.advance(now)
        queued = len(self.core.queue)
        in_service = sum(item is not None for item in self.core.busy)
        was = self.core.throttle is not None
        if throttle and not was:
            self.core.set_throttle(dwfm.Throttle())
        dropped = self.core.restart(now)
        return Restarted(t=now, dropped=dropped, queued=queued, in_service=in_service,
                         throttle=self.core.throttle is not None, throttle_was=was)

    async def restart(self, throttle: bool = False) -> Restarted:
        """Drop every queued and in-service item (turning ``dwfm-throttle`` on first with
        ``throttle``), as AWS's engineers did at 4:14 AM."""
        if self.core is None:
            raise RuntimeError("DWFM has not started yet (DynamoDB not reached)")
        result = await self.on_core(self._restart, throttle)
        self.restarts += 1
        log.info("restart: dropped %d items (%d queued, %d in service); dwfm-throttle %s",
                 result.dropped, result.queued, result.in_service,
                 "on" if result.throttle else "off")
        return result

    # -- the leases, for the launcher ----------------------------------------------------------

    def _leases(self) -> dict[str, Any]:
        assert self.core is not None
        now = max(self.clock(), self.core.now)
        self.core.advance(now)
        valid = set(self.core.valid(now))
        return {"t": round(now, 3), "droplets": list(self.core.droplets),
                "valid": [d for d in self.core.droplets if d in valid]}

    async def leases(self) -> dict[str, Any]:
        """``GET /leases``: every droplet (fleet order) and those holding a valid lease now, as
        DWFM sees them (the launcher's lease view)."""
        if self.core is None:
            raise RuntimeError("DWFM has not started yet (DynamoDB not reached)")
        return await self.on_core(self._leases)

    # -- HTTP ----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        if self.core is None:
            return True, ""  # still reaching DynamoDB: alive, retrying
        idle = time.monotonic() - self.last_tick
        limit = max(10.0, 10 * self.options.tick)
        if idle > limit:
            return False, f"the core loop has not turned for {idle:.1f} s"
        return True, ""

    def app(self) -> web.Application:
        """/healthz, /metrics, GET /leases, and POST /restart[?throttle=1] (from loopback
        only)."""
        app = serving.make_app(self.health)

        async def restart(request: web.Request) -> web.Response:
            remote = request.remote or ""
            try:
                local = ipaddress.ip_address(remote).is_loopback
            except ValueError:
                local = False
            if not local:
                return web.json_response({"error": "POST /restart is taken from loopback "
                                          "only (kubectl exec or port-forward)"}, status=403)
            flag = request.query.get("throttle", "0").lower()
            if flag not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
                return web.json_response({"error": f"throttle={flag!r}: use 0 or 1"},
                                         status=400)
            try:
                result = await self.restart(flag in ("1", "true", "yes", "on"))
            except RuntimeError as exc:
                return web.json_response({"error": str(exc)}, status=503)
            return web.json_response(dataclasses.asdict(result))

        async def leases(_: web.Request) -> web.Response:
            try:
                return web.json_response(await self.leases())
            except RuntimeError as exc:
                return web.json_response({"error": str(exc)}, status=503)

        app.router.add_post("/restart", restart)
        app.router.add_get("/leases", leases)
        return app


def dynamo_store(cfg: settings_mod.Settings, *, endpoint_url: str | None = None, port: int = 8080,
                 table: str | None = None, timeout: float = 1.0) -> dwfm.LeaseStore:
    """The DynamoDB lease store for settings ``cfg``: the regional
    endpoint (``ddb.endpoint``) resolved through ``dns.server``, or ``endpoint_url``."""
    from dnsrace.components import leasestore  # botocore: imported only when it is used

    return leasestore.DynamoLeaseStore(
        endpoint=cfg.ddb.endpoint, port=port, dns_server=cfg.dns.server_host,
        dns_port=cfg.dns.server_port, endpoint_url=endpoint_url,
        table=table or leasestore.TABLE, timeout=timeout, max_ttl=cfg.ddb.max_ttl)


async def run(options: Options, store: dwfm.LeaseStore, stop: asyncio.Event, *,
              clock: Callable[[], float] = time.time,
              started: Callable[[Runner], None] | None = None) -> Runner:
    """Run DWFM until ``stop``: reach the store, then advance, sample and serve. Returns the
    runner (its core holds the final state). ``started`` is called once the core exists."""
    runner = Runner(options, store, clock=clock)
    try:
        # Serving stops before the core's thread and the store close: a /leases or /restart
        # asked in between would find them gone.
        async with serving.served(options.http_host, options.http_port, runner.app):
            if not await runner.start(stop):
                return runner
            p = options.params
            log.info("DWFM: %d droplets, %d workers x %.2f s, deadline %.1f s, lease %.1f s "
                     "renewed every %.1f s; dwfm-throttle %s", p.droplets, p.workers,
                     p.service_time, p.deadline, p.lease_ttl, p.check_interval,
                     "on" if options.throttle else "off")
            if started is not None:
                started(runner)
            await pacing.into(options.out, lambda fh: runner.loop(stop, fh))
            return runner
    finally:
        runner.close()
        close = getattr(store, "close", None)
        if close is not None:
            close()
