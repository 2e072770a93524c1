"""The NLB's health checks: real HTTP probes of its targets, their results given to the core.

Who calls it: ``components.nlbctl`` (its ``Runner`` runs ``Checker.loop``) and the tests
(``probe`` against local servers). Why real probes: an Instance answers ``/healthz`` only once
its network state has propagated, so the checks see what a client would see.

Each check is ``GET http://<endpoint>/healthz`` within ``check_timeout``, a new connection each,
at most ``concurrency`` at once; the core says which checks are due (each target on its own
phase) and takes each outcome through ``Nlb.observe``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import aiohttp

from dnsrace.components import retrying
from dnsrace.components.nlbfigures import CHECKS
from dnsrace.components.nlbtargets import Member, Targets, split_endpoint
from dnsrace.core import nlb

# The NLB's lines keep the name they always had: operators filter its log on it.
log = logging.getLogger("dnsrace.components.nlbctl")

OUTCOMES = ("ok", "status", "refused", "reset", "timeout", "error")
"""A health check's outcome: ``ok`` (HTTP 200-399, NLB's default success codes), ``status``
(another HTTP status), ``refused`` (nothing listens), ``reset`` (the connection dropped before
an answer), ``timeout`` (no answer in ``check_timeout``), ``error`` (anything else: unreachable
network, bad endpoint)."""


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


class Checker:
    """The checks due, probed and fed back to the core; ``checks`` counts their outcomes."""

    def __init__(self, core: nlb.Nlb, targets: Targets, clock: Callable[[], float], *,
                 timeout: float, concurrency: int, step: float) -> None:
        self.core = core
        self.targets = targets
        self.clock = clock
        self.timeout = timeout
        self.concurrency = concurrency
        self.step = step
        self.checks: collections.Counter[str] = collections.Counter()
        self._probes: set[asyncio.Task[None]] = set()

    async def _check(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore,
                     name: str, t: float, m: Member) -> None:
        async with slots:
            outcome = await probe(session, m.endpoint, self.timeout)
        self.checks[outcome] += 1
        CHECKS.labels(outcome).inc()
        if self.targets.members.get(name) is not m:
            return  # deregistered (or moved) while it was probed
        if self.core.observe(name, t, outcome == "ok"):
            target = self.core.targets[name]
            log.debug("target %s (%s) %s after %s", name, m.az,
                      "healthy" if target.healthy else "unhealthy", outcome)

    def start_due(self, session: aiohttp.ClientSession, slots: asyncio.Semaphore) -> int:
        """Start a probe for every check due now; how many started."""
        due = self.core.take_due(self.clock())
        for t, name in due:
            m = self.targets.members[name]
            task = asyncio.create_task(self._check(session, slots, name, t, m))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)
        return len(due)

    async def loop(self, stop: asyncio.Event) -> None:
        for outcome in OUTCOMES:  # every series from the start, at 0
            CHECKS.labels(outcome)
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        slots = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while not stop.is_set():
                    self.start_due(session, slots)
                    await retrying.pause(stop, self.step)
            finally:
                for task in list(self._probes):
                    task.cancel()
                await asyncio.gather(*self._probes, return_exceptions=True)
