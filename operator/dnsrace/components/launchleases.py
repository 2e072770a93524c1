"""The launcher's two peers: DWFM's leases (``GET /leases``, polled) and the Network Manager's
admission (``POST /admit``, the gate of ``propagation-throttle``).

Who calls it: ``components.launcher`` (its ``Runner`` polls, views and asks through these) and
the tests (tests/unit/test_launcher_runner.py, through the names ``launcher`` re-exports). Why
apart from the runner: this is the launcher's reading side, over HTTP to its two peers, with no
API server in it; the runner only wires it to the core. An answer missing or not the contract's
shape counts as none (an empty lease view, a refusal), with one log line per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from dnsrace.components import retrying

# The launcher's lines keep its logger's name wherever its code lives (the operators' filters
# and the tests' caplog use it).
log = logging.getLogger("dnsrace.components.launcher")


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


class LeasePoller:
    """``GET /leases`` on DWFM; ``latest`` is None while DWFM does not answer."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url = url.rstrip("/") + "/leases"
        self.timeout = timeout
        self.latest: Leases | None = None
        self.first: Leases | None = None
        """The first answer: its fleet is the placement."""
        self.state = retrying.Reachability(f"DWFM at {self.url}", log)

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
        self.state = retrying.Reachability(f"the Network Manager at {url}", log)
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
