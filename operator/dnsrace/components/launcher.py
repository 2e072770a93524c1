"""``dnsrace launcher``: EC2's launch requests on real time, each one an ``Instance`` object.

Who calls it: the CLI (``dnsrace launcher``, ``run``), the scenario lab (as a process, reading
``launcher.jsonl``) and the tests (the glue without a cluster in tests/unit; ``run`` against the
real API server, with a real DWFM runner serving ``/leases``, in tests/integration). Why a thin
runner: the mechanism (requests at a steady rate, placed on leased droplets, retried when
refused) is ``core.launching.Launcher``, pure and tested on a virtual clock; this module only
drives it on Unix time, feeds it DWFM's leases and the Network Manager's admission, and writes
what it decides into the API server (``core.instances`` says what each attempt writes).

Threads and tasks: every ``tick`` s the core advances on its own thread (the ``Gate``,
``POST /admit`` on the Network Manager, is a synchronous HTTP call with a 1 s timeout); a task
polls DWFM's ``GET /leases`` every ``poll_every`` s (no answer: the lease view is empty, so
launches fail ``InsufficientCapacity``, as when DWFM has no lease to offer); a task writes the
attempts to the API server in the order they happened (create the Instance on a request's first
attempt, patch its status, post an Event), backing off while the API server is away without
dropping or reordering anything. The placement (droplet -> AZ) is ``launching.spread`` of the
fleet in DWFM's first answer; launches wait until then.

What it shows: ``/metrics`` (``dnsrace_launcher_*``), ``/healthz`` (the loop is turning), one
JSON-lines figures line per outcome and one for the pending requests each ``record_every`` s in
``out`` (docs/cascade.md, "The launcher"), and one log line when DWFM, the Network Manager or
the API server becomes unreachable and one when it is back.

Rooms: the lease poller, its view and the admission gate are ``components.launchleases``; what
each attempt writes and the writer that writes it in order are ``components.launchwriter``;
this module keeps the options, the runner and ``run``, and re-exports the names the CLI and
the tests import from here.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import prometheus_client
from kubernetes_asyncio import client

from dnsrace.components import (
    launchleases,
    launchwriter,
    options,
    outages,
    pacing,
    retrying,
    serving,
)
from dnsrace.components.launchleases import AdmitGate, LeasePoller, Leases, LeaseView
from dnsrace.components.launchwriter import (
    COMPONENT,
    OUTCOMES,
    Planner,
    Write,
    Writer,
    existing,
    outcome_of,
    record_lines,
)
from dnsrace.components.retrying import Reachability
from dnsrace.core import instances, launching
from dnsrace.kube import client as kube_client

# The names the CLI and the tests import from here, where they lived before the lease side
# (``launchleases``) and the writing side (``launchwriter``) got modules of their own.
__all__ = [
    "COMPONENT", "OUTCOMES", "AdmitGate", "LeasePoller", "LeaseView", "Leases", "Options",
    "Planner", "Reachability", "Runner", "Write", "Writer", "existing", "outcome_of", "params",
    "record_lines", "run", "throttle_on",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = prometheus_client.Counter(
    "dnsrace_launcher_attempts_total",
    "Launch attempts by outcome (Launched, Failed, GaveUp) and reason (InsufficientCapacity, "
    "RequestLimitExceeded; empty for a launch).", ["outcome", "reason"])
PENDING = prometheus_client.Gauge(
    "dnsrace_launcher_pending", "Launch requests not placed yet (waiting to be tried again).")
OLDEST_PENDING = prometheus_client.Gauge(
    "dnsrace_launcher_oldest_pending_seconds",
    "How long the oldest request not placed yet has waited (0 when none).")
TERMINATED = prometheus_client.Counter(
    "dnsrace_launcher_terminated_total",
    "Instances their owners terminated at the end of their lifetime (--lifetime).")
INSTANCES = prometheus_client.Gauge(
    "dnsrace_launcher_instances", "Instances launched (by this launcher, and running).")
LEASES_VALID = prometheus_client.Gauge(
    "dnsrace_launcher_leases_valid",
    "Droplets holding a valid lease in DWFM's last /leases answer (0 while DWFM does not "
    "answer).")

FLAGS = {"rate": "--rate", "slots": "--slots", "retry_after": "--retry-after",
         "patience": "--patience", "lifetime": "--lifetime"}
"""The core's parameter names as the command spells them, for error messages."""


def throttle_on(text: str) -> bool:
    """Whether ``--safeguards`` / ``DNSRACE_SAFEGUARDS`` switches ``propagation-throttle`` on
    (the launches then need the Network Manager's admission)."""
    return options.safeguards(text).propagation_throttle


def params(**values: Any) -> launching.LauncherParams:
    """``LauncherParams`` from the command's values (None keeps a default, ``patience``
    included: never give up); a ValueError names the option as the command spells it."""
    return options.core_params(launching.LauncherParams, FLAGS, values)


def _http_url(flag: str, url: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{flag} must be an http(s) URL, got {url!r}")


@dataclasses.dataclass(frozen=True)
class Options:
    """What ``dnsrace launcher`` runs with (the requests' parameters are
    ``core.launching.LauncherParams``)."""

    params: launching.LauncherParams = dataclasses.field(
        default_factory=launching.LauncherParams)
    namespace: str = "dnsrace"
    dwfm_url: str = "http://127.0.0.1:18207"
    """DWFM's HTTP address; ``/leases`` is appended."""
    admit_url: str | None = None
    """The Network Manager's ``POST /admit`` (None: propagation-throttle off, no gate)."""
    endpoint_style: str = instances.ADDRESS
    endpoint_host: str | None = None
    endpoint_base: int = instances.PORT_BASE
    out: Path | None = Path("launcher.jsonl")
    seed: int = 0
    """Seeds the retries' jitter."""
    tick: float = 0.1
    """Seconds between two advances of the core."""
    poll_every: float = 0.5
    """Seconds between two ``GET /leases``."""
    poll_timeout: float = 1.0
    admit_timeout: float = 1.0
    stale_after: float = 2.0
    """A /leases answer older than this counts as none (the view is empty)."""
    record_every: float = 1.0
    drain: float = 5.0
    """Seconds the writes still queued at SIGTERM get before the launcher exits."""
    http_port: int | None = None
    http_host: str = "0.0.0.0"

    def __post_init__(self) -> None:
        for name in ("tick", "poll_every", "poll_timeout", "admit_timeout", "stale_after",
                     "record_every"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 s, got {getattr(self, name)}")
        if self.drain < 0:
            raise ValueError(f"drain must be 0 s or more, got {self.drain}")
        if self.endpoint_style not in instances.ENDPOINT_STYLES:
            raise ValueError(f"--endpoints must be one of {', '.join(instances.ENDPOINT_STYLES)}"
                             f", got {self.endpoint_style!r}")
        if self.endpoint_style == instances.PORT and not self.endpoint_host:
            raise ValueError("--endpoints port needs --endpoint-host (the host serving every "
                             "instance)")
        if not 0 < self.endpoint_base < 65536:
            raise ValueError(f"--endpoint-base must be a TCP port, got "
                             f"{self.endpoint_base}")
        _http_url("--dwfm-url", self.dwfm_url)
        if self.admit_url is not None:
            _http_url("--admit-url", self.admit_url)

    def endpoint(self, request: int) -> str:
        return instances.endpoint_for(request, self.endpoint_style, self.endpoint_host,
                                      self.endpoint_base)


# -- the runner --------------------------------------------------------------------------------


class Runner:
    """The core on real time: its thread, the lease poller, the writer, figures out."""

    def __init__(self, options: Options, api: client.ApiClient | None, *,
                 clock: Callable[[], float] = time.time,
                 gate: launching.Gate | None = None) -> None:
        self.options = options
        self.api = api
        self.clock = clock
        self.gate = gate
        self.core: launching.Launcher | None = None
        self.poller = launchleases.LeasePoller(options.dwfm_url, options.poll_timeout)
        self.writer = launchwriter.Writer(api, options.namespace) if api is not None else None
        self.planner = launchwriter.Planner(options)
        self.used: collections.Counter[str] = collections.Counter()
        """Slots taken by instances launched before this start."""
        self.counts: collections.Counter[str] = collections.Counter()
        """Attempts by outcome since the last figures line."""
        self.totals: collections.Counter[str] = collections.Counter()
        self.last_tick = time.monotonic()
        self.running = False
        """The loop has started (before, /healthz is 200: the start retries on its own)."""
        self._thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="launcher-core")
        for outcome, reason in ((launching.LAUNCHED, ""),
                                (launching.FAILED, launching.INSUFFICIENT_CAPACITY),
                                (launching.FAILED, launching.REQUEST_LIMIT_EXCEEDED)):
            ATTEMPTS.labels(outcome, reason)  # every usual series from the start, at 0

    async def on_core(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def close(self) -> None:
        self._thread.shutdown(wait=True)

    def view(self) -> launchleases.LeaseView:
        return launchleases.LeaseView(self.poller.latest, self.options.stale_after)

    def start_core(self, leases: launchleases.Leases) -> launching.Launcher:
        """The core, placed over ``leases``' fleet, starting now; slots of earlier instances
        counted as used."""
        placement = launching.spread(leases.droplets)
        core = launching.Launcher(self.options.params, placement,
                                  random.Random(self.options.seed), start=self.clock(),
                                  azs=launching.AZS)
        core.used.update({d: n for d, n in self.used.items() if d in placement})
        self.core = core
        log.info("launcher: %d droplets in %d AZs (%d slots each), %.2f launches/s, retry "
                 "after %.0f s; the first Instance is %s", len(placement), len(launching.AZS),
                 self.options.params.slots, self.options.params.rate,
                 self.options.params.retry_after, instances.name_of(self.planner.offset + 1))
        return core

    def _advance(self, view: launchleases.LeaseView,
                 ) -> tuple[list[launching.Attempt], list[launching.Instance]]:
        assert self.core is not None
        now = max(self.clock(), self.core.now)
        return self.core.advance(now, view, self.gate), self.core.expire(now)

    def take(self, attempts: Sequence[launching.Attempt]) -> list[launchwriter.Write]:
        """Count the attempts and queue their writes."""
        writes = []
        for a in attempts:
            ATTEMPTS.labels(a.outcome, a.reason if a.outcome != launching.LAUNCHED else "").inc()
            outcome = launchwriter.outcome_of(a)
            self.counts[outcome] += 1
            self.totals[outcome] += 1
            w = self.planner.write(a)
            writes.append(w)
            if self.writer is not None:
                self.writer.put(w)
        return writes

    async def tick(self) -> list[launching.Attempt]:
        """One step: the core started once DWFM answered, then advanced to now."""
        if self.core is None:
            if self.poller.first is None:
                return []
            self.start_core(self.poller.first)
        attempts, ended = await self.on_core(self._advance, self.view())
        self.take(attempts)
        TERMINATED.inc(len(ended))
        if self.writer is not None:
            for instance in ended:
                self.writer.put(self.planner.terminate(instance))
        return attempts

    def _figures(self) -> launching.Figures | None:
        if self.core is None:
            return None
        now = max(self.clock(), self.core.now)
        return self.core.figures(now)

    async def sample(self, out: IO[str] | None) -> list[dict[str, Any]]:
        """The figures of the period now ending: on the metrics, written to ``out``."""
        fig = await self.on_core(self._figures)
        t = fig.t if fig is not None else self.clock()
        pending = fig.pending if fig is not None else 0
        PENDING.set(pending)
        OLDEST_PENDING.set(fig.oldest_pending if fig is not None else 0.0)
        INSTANCES.set(fig.instances if fig is not None else 0)
        LEASES_VALID.set(len(self.poller.latest.valid) if self.poller.latest else 0)
        lines = launchwriter.record_lines(t, self.counts, pending)
        self.counts.clear()
        if out is not None:
            for line in lines:
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
            out.flush()
        return lines

    async def loop(self, stop: asyncio.Event, out: IO[str] | None) -> None:
        """Advance every ``tick`` s and sample every ``record_every`` s until ``stop``."""
        opts = self.options
        self.running = True
        self.last_tick = time.monotonic()
        await pacing.tick_loop(
            stop, tick=opts.tick, record_every=opts.record_every, advance=self.tick,
            sample=lambda: self.sample(out), ticked=self._ticked,
            first_sample_in=opts.record_every)

    def _ticked(self, now: float) -> None:
        self.last_tick = now

    def health(self) -> tuple[bool, str]:
        if not self.running:
            return True, ""  # still reading the Instances already there: alive, retrying
        idle = time.monotonic() - self.last_tick
        limit = max(10.0, 10 * self.options.tick)
        if idle > limit:
            return False, f"the launcher loop has not turned for {idle:.1f} s"
        return True, ""


async def _numbering(runner: Runner, api: client.ApiClient, namespace: str,
                     stop: asyncio.Event) -> bool:
    """Read the Instances already there (retrying while the API server is away); False when
    ``stop`` came first."""
    backoff = outages.Backoff()
    state = retrying.Reachability("the API server", log)
    while not stop.is_set():
        try:
            highest, used = await launchwriter.existing(api, namespace)
        except Exception as exc:
            what = outages.describe(exc)
            if what is None and kube_client.status_of(exc) == 404:
                what = ("the Instance CRD is not installed (manifests/crds/"
                        "instances.dnsrace.io.yaml); waiting for it")
            if what is None:
                raise
            state.failed(what)
            await retrying.pause(stop, backoff.next())
            continue
        state.ok()
        runner.planner.offset = highest
        runner.used = used
        if highest:
            log.info("%d Instances' requests already in %s: numbering from %s", highest,
                     namespace, instances.name_of(highest + 1))
        return True
    return False


async def run(options: Options, kubeconfig: Path | None, stop: asyncio.Event, *,
              clock: Callable[[], float] = time.time,
              started: Callable[[Runner], None] | None = None) -> Runner:
    """Run the launcher until ``stop``: number on from the Instances already there, poll DWFM,
    advance the core, write Instances and Events, sample, serve. Returns the runner."""
    api = await kube_client.api_client(kubeconfig)
    gate = (launchleases.AdmitGate(options.admit_url, options.admit_timeout)
            if options.admit_url is not None else None)
    runner = Runner(options, api, clock=clock, gate=gate)
    assert runner.writer is not None
    server = None
    tasks: list[asyncio.Task[None]] = []
    try:
        if options.http_port is not None:
            server = await serving.serve(options.http_host, options.http_port,
                                         app=serving.make_app(runner.health))
        if not await _numbering(runner, api, options.namespace, stop):
            return runner
        log.info("launcher: leases from %s every %.1f s; propagation-throttle %s; endpoints "
                 "%s; Instances in namespace %s", runner.poller.url, options.poll_every,
                 f"on (admission: {options.admit_url})" if gate else "off",
                 options.endpoint_style, options.namespace)
        tasks = [asyncio.create_task(runner.poller.run(stop, options.poll_every)),
                 asyncio.create_task(runner.writer.run(stop))]
        if started is not None:
            started(runner)
        await pacing.into(options.out, lambda fh: runner.loop(stop, fh))
        # The writer finishes the write in hand and stops (``stop`` is set); what is left
        # gets ``drain`` s, in order, so the last attempts are on their Instances.
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.writer.drain(options.drain)
        return runner
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.cleanup()
        runner.close()
        await api.close()
