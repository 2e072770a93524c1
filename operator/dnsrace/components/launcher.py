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
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import prometheus_client
from kubernetes_asyncio import client

from dnsrace.components import options, outages, pacing, serving
from dnsrace.core import instances, launching
from dnsrace.kube import client as kube_client
from dnsrace.kube import reporting

log = logging.getLogger(__name__)

T = TypeVar("T")

COMPONENT = "launcher"

ATTEMPTS = prometheus_client.Counter(
    "dnsrace_launcher_attempts_total",
    "Launch attempts by outcome (Launched, Failed, GaveUp) and reason (InsufficientCapacity, "
    "RequestLimitExceeded; empty for a launch).", ["outcome", "reason"])
PENDING = prometheus_client.Gauge(
    "dnsrace_launcher_pending", "Launch requests not placed yet (waiting to be tried again).")
OLDEST_PENDING = prometheus_client.Gauge(
    "dnsrace_launcher_oldest_pending_seconds",
    "How long the oldest request not placed yet has waited (0 when none).")
INSTANCES = prometheus_client.Gauge(
    "dnsrace_launcher_instances", "Instances launched (by this launcher, and running).")
LEASES_VALID = prometheus_client.Gauge(
    "dnsrace_launcher_leases_valid",
    "Droplets holding a valid lease in DWFM's last /leases answer (0 while DWFM does not "
    "answer).")

OUTCOMES = (launching.LAUNCHED, launching.INSUFFICIENT_CAPACITY,
            launching.REQUEST_LIMIT_EXCEEDED, launching.GAVE_UP)
"""The outcomes of ``launcher.jsonl``: a failed attempt counts under its reason."""

FLAGS = {"rate": "--rate", "slots": "--slots", "retry_after": "--retry-after",
         "patience": "--patience"}
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


# -- DWFM's leases ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leases:
    """One ``GET /leases`` answer of DWFM."""

    t: float
    droplets: tuple[str, ...]
    """Every droplet, in fleet order."""
    valid: frozenset[str]
    """Droplets holding a valid lease at ``t``."""

    @classmethod
    def from_answer(cls, body: Any) -> Leases:
        """From the JSON answer; a ValueError when it is not the contract's shape."""
        if not isinstance(body, Mapping):
            raise ValueError(f"/leases answered {type(body).__name__}, not an object")
        droplets, valid, t = body.get("droplets"), body.get("valid"), body.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            raise ValueError("/leases: t must be a number")
        for field, value in (("droplets", droplets), ("valid", valid)):
            if not isinstance(value, list) or not all(isinstance(d, str) for d in value):
                raise ValueError(f"/leases: {field} must be a list of droplet names")
        assert isinstance(droplets, list)
        assert isinstance(valid, list)
        return cls(float(t), tuple(droplets), frozenset(valid))


@dataclasses.dataclass(frozen=True)
class LeaseView:
    """``core.launching.LeaseView`` over the last answer: empty when there is none (DWFM does
    not answer) or it is older than ``stale_after`` s."""

    leases: Leases | None
    stale_after: float = 2.0

    def valid(self, now: float) -> Sequence[str]:
        if self.leases is None or now - self.leases.t > self.stale_after:
            return []
        return sorted(self.leases.valid)


class Reachability:
    """One log line when a peer becomes unreachable and one when it is back; no traceback."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down_since: float | None = None
        self.failures = 0

    def failed(self, why: str) -> None:
        self.failures += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            log.warning("%s unreachable (%s)", self.what, why)

    def ok(self) -> None:
        if self.down_since is not None:
            log.info("%s reachable again after %.1f s (%d calls failed)", self.what,
                     time.monotonic() - self.down_since, self.failures)
        self.down_since = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None


class LeasePoller:
    """``GET /leases`` on DWFM; ``latest`` is None while DWFM does not answer."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url = url.rstrip("/") + "/leases"
        self.timeout = timeout
        self.latest: Leases | None = None
        self.first: Leases | None = None
        """The first answer: its fleet is the placement."""
        self.state = Reachability(f"DWFM at {self.url}")

    async def poll(self, session: aiohttp.ClientSession) -> Leases | None:
        try:
            async with session.get(self.url, timeout=aiohttp.ClientTimeout(
                    total=self.timeout)) as resp:
                if resp.status != 200:
                    raise ValueError(f"answered {resp.status}: {(await resp.text())[:200]}")
                leases = Leases.from_answer(await resp.json())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.latest = None
            self.state.failed(f"{type(exc).__name__}: {exc}" if str(exc)
                              else type(exc).__name__)
            return None
        self.state.ok()
        self.latest = leases
        if self.first is None and leases.droplets:
            self.first = leases
        return leases

    async def run(self, stop: asyncio.Event, every: float) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                await self.poll(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)


# -- the Network Manager's admission -----------------------------------------------------------


def _post_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


class AdmitGate:
    """``core.launching.Gate`` over the Network Manager's ``POST /admit`` (called from the
    core's thread): no answer, or an answer that is not ``{"admitted": true}``, is not
    admitted (``RequestLimitExceeded``). After a call that failed slowly (``slow`` s or more)
    it refuses without a call for ``hold`` s, so a Network Manager that does not answer costs
    one timeout per ``hold``, not one per launch."""

    def __init__(self, url: str, timeout: float = 1.0, *, hold: float = 1.0, slow: float = 0.25,
                 post: Callable[[str, float], Any] = _post_json) -> None:
        self.url = url
        self.timeout = timeout
        self.hold = hold
        self.slow = slow
        self.post = post
        self.state = Reachability(f"the Network Manager at {url}")
        self.open_until = 0.0
        self.calls = 0
        self.admitted = 0
        self.unanswered = 0

    def admit(self, now: float) -> bool:
        if time.monotonic() < self.open_until:
            self.unanswered += 1
            return False
        started = time.monotonic()
        self.calls += 1
        try:
            body = self.post(self.url, self.timeout)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            self.unanswered += 1
            self.state.failed(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            if time.monotonic() - started >= self.slow:
                self.open_until = time.monotonic() + self.hold
            return False
        self.state.ok()
        ok = isinstance(body, Mapping) and body.get("admitted") is True
        self.admitted += ok
        return ok


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


class Planner:
    """Turns attempts into writes (pure glue: no I/O): names from the request numbers after
    ``offset``, the status patch over the conditions this launcher last wrote, the Event."""

    def __init__(self, options: Options, offset: int = 0) -> None:
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
        self.queue: collections.deque[Write] = collections.deque()
        self.wake = asyncio.Event()
        self.uids: dict[str, str] = {}
        self.state = Reachability("the API server")
        self.backoff = outages.Backoff()
        self.written = 0
        self.dropped = 0

    def put(self, write: Write) -> None:
        self.queue.append(write)
        self.wake.set()

    async def _one(self, w: Write) -> None:
        co = client.CustomObjectsApi(self.api)
        g, v, p = instances.GROUP, instances.VERSION, instances.PLURAL
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
            log.warning("%s (attempt %d): not written, dropped: %s", w.name, w.attempt.attempt,
                        reason)
            return None
        self.queue.popleft()
        self.written += 1
        self.backoff.reset()
        self.state.ok()
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` (the queue left as it is: ``drain`` writes it out)."""
        while not stop.is_set():
            if not self.queue:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), 1.0)
                continue
            wait = await self.step()
            if wait is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)

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
        self.poller = LeasePoller(options.dwfm_url, options.poll_timeout)
        self.writer = Writer(api, options.namespace) if api is not None else None
        self.planner = Planner(options)
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

    def view(self) -> LeaseView:
        return LeaseView(self.poller.latest, self.options.stale_after)

    def start_core(self, leases: Leases) -> launching.Launcher:
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

    def _advance(self, view: LeaseView) -> list[launching.Attempt]:
        assert self.core is not None
        now = max(self.clock(), self.core.now)
        return self.core.advance(now, view, self.gate)

    def take(self, attempts: Sequence[launching.Attempt]) -> list[Write]:
        """Count the attempts and queue their writes."""
        writes = []
        for a in attempts:
            ATTEMPTS.labels(a.outcome, a.reason if a.outcome != launching.LAUNCHED else "").inc()
            outcome = outcome_of(a)
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
        attempts = await self.on_core(self._advance, self.view())
        self.take(attempts)
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
        lines = record_lines(t, self.counts, pending)
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
    state = Reachability("the API server")
    while not stop.is_set():
        try:
            highest, used = await existing(api, namespace)
        except Exception as exc:
            what = outages.describe(exc)
            if what is None and kube_client.status_of(exc) == 404:
                what = ("the Instance CRD is not installed (manifests/crds/"
                        "instances.dnsrace.io.yaml); waiting for it")
            if what is None:
                raise
            state.failed(what)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff.next())
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
    gate = (AdmitGate(options.admit_url, options.admit_timeout)
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
        if options.out is not None:
            options.out.parent.mkdir(parents=True, exist_ok=True)
            with options.out.open("a") as fh:
                await runner.loop(stop, fh)
        else:
            await runner.loop(stop, None)
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
