"""EC2's launcher: launch requests placed on droplets that hold a DWFM lease.

Who calls it: ``components.launcher`` (to come) calls ``Launcher.advance`` on real time, with a
lease view read from DWFM's lease table and a gate from the Network Manager, and turns each
``Attempt`` into an ``Instance`` object, a condition and an Event; the unit tests call it on a
virtual clock with ``core.dwfm.Dwfm`` as the lease view. Why pure: "insufficient capacity" must
follow from the leases alone, and the burst after recovery from the requests that piled up.

The mechanism, as published: a droplet without a lease takes no new launches, so while leases
were expired launches failed with ``InsufficientCapacity``; running instances were not
affected. Requests arrive at a steady ``rate`` (round robin over the AZs, as customers spread
them) and each is placed in its AZ on the least-used droplet that holds a valid lease and has a
free slot. A request that fails is tried again after about ``retry_after`` s (as customers and
Auto Scaling groups do), so the requests refused during an outage come back together once
leases return: the burst that fed the Network Manager's backlog. When a ``Gate`` (the
``propagation-throttle`` safeguard) refuses, the attempt fails with ``RequestLimitExceeded``,
the error customers saw from AWS's deliberate throttling.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

LAUNCHED = "Launched"
FAILED = "Failed"
GAVE_UP = "GaveUp"
INSUFFICIENT_CAPACITY = "InsufficientCapacity"
"""No droplet in the AZ holds a valid lease with a free slot."""
REQUEST_LIMIT_EXCEEDED = "RequestLimitExceeded"
"""The gate (propagation throttling) refused the launch."""

AZS = ("us-east-1a", "us-east-1b", "us-east-1c")


class LeaseView(Protocol):
    """Which droplets hold a valid lease (``core.dwfm.Dwfm`` is one)."""

    def valid(self, now: float) -> Sequence[str]: ...


class Gate(Protocol):
    """Admission of a launch that can be placed (``core.propagation.NetworkManager`` is one).

    ``admit`` returning True promises the launch: the instance will be handed over."""

    def admit(self, now: float) -> bool: ...


def spread(droplets: Sequence[str], azs: Sequence[str] = AZS) -> dict[str, str]:
    """Droplet -> AZ, round robin: the fleet split evenly over the AZs."""
    if not azs:
        raise ValueError("azs must name at least one availability zone")
    return {d: azs[i % len(azs)] for i, d in enumerate(droplets)}


@dataclasses.dataclass(frozen=True)
class LauncherParams:
    rate: float = 1.0
    """New launch requests per second."""
    slots: int = 4
    """Instances one droplet can host."""
    retry_after: float = 10.0
    """Seconds after which a failed request is tried again (jittered by +-50 %)."""
    patience: float | None = None
    """Seconds after which a request never placed is given up (None: tried until placed)."""
    lifetime: float | None = None
    """Seconds an instance runs before its owner terminates it (None: until the end). With
    arrivals at ``rate`` the fleet settles at about ``rate * lifetime`` instances whatever the
    run's length, as customers' fleets turn over; launches refused for longer than
    ``lifetime`` leave none of the old instances running."""

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be more than 0 launches per second, got {self.rate}")
        if self.slots < 1:
            raise ValueError(f"slots must be at least 1, got {self.slots}")
        if not self.retry_after > 0:
            raise ValueError(f"retry_after must be more than 0, got {self.retry_after}")
        if self.patience is not None and not self.patience > 0:
            raise ValueError(f"patience must be more than 0 or None, got {self.patience}")
        if self.lifetime is not None and not self.lifetime > 0:
            raise ValueError(f"lifetime must be more than 0 or None, got {self.lifetime}")


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One launch attempt's outcome (a line of ``launcher.jsonl``, an Event)."""

    t: float
    request: int
    attempt: int
    """1 for the first try."""
    az: str
    outcome: str
    """``Launched``, ``Failed`` or ``GaveUp``."""
    reason: str = ""
    """``InsufficientCapacity`` or ``RequestLimitExceeded`` when not launched."""
    instance: str | None = None
    droplet: str | None = None
    waited: float = 0.0
    """Seconds since the request arrived."""


@dataclasses.dataclass(frozen=True)
class Instance:
    name: str
    droplet: str
    az: str
    launched: float
    request: int


@dataclasses.dataclass(frozen=True)
class Figures:
    t: float
    pending: int
    """Requests not placed yet."""
    oldest_pending: float
    """Seconds the oldest unplaced request has waited (0 when none)."""
    launched: int
    failures: dict[str, int]
    """Failed attempts by reason, since start."""
    given_up: int
    instances: int
    terminated: int = 0
    """Instances their owners terminated (``lifetime``), since start."""


@dataclasses.dataclass
class _Request:
    number: int
    az: str
    arrived: float
    attempts: int = 0


class Launcher:
    """Requests at a steady rate, placed on leased droplets; advanced on a clock passed in."""

    def __init__(self, params: LauncherParams, placement: Mapping[str, str],
                 rng: random.Random, *, start: float,
                 azs: Sequence[str] | None = None) -> None:
        self.params = params
        self.placement = dict(placement)
        """Droplet -> AZ."""
        self.azs = tuple(azs) if azs is not None else tuple(sorted(set(placement.values())))
        if not self.azs:
            raise ValueError("the launcher needs at least one AZ")
        self.rng = rng
        self.start = start
        self.now = start
        self.used: collections.Counter[str] = collections.Counter()
        self.instances: dict[str, Instance] = {}
        self.pending: dict[int, _Request] = {}
        self.failures: collections.Counter[str] = collections.Counter()
        self.launched = 0
        self.given_up = 0
        self.terminated = 0
        self._arrivals = 0
        self._retries: list[tuple[float, int]] = []

    def _next_arrival(self) -> float:
        return self.start + (self._arrivals + 1) / self.params.rate

    def advance(self, now: float, leases: LeaseView, gate: Gate | None = None) -> list[Attempt]:
        """Every arrival and retry due up to ``now``, each at its own time, in order."""
        if now < self.now:
            raise ValueError(f"time went backwards: {now} < {self.now}")
        out: list[Attempt] = []
        while True:
            arrival = self._next_arrival()
            retry = self._retries[0][0] if self._retries else float("inf")
            t = min(arrival, retry)
            if t > now:
                break
            if arrival <= retry:
                number = self._arrivals
                self._arrivals += 1
                request = _Request(number, self.azs[number % len(self.azs)], arrival)
                self.pending[number] = request
            else:
                _, number = heapq.heappop(self._retries)
                request = self.pending[number]
            out.append(self._attempt(request, t, leases, gate))
        self.now = now
        return out

    def _place(self, az: str, t: float, leases: LeaseView) -> str | None:
        slots = self.params.slots
        free = [d for d in leases.valid(t)
                if self.placement.get(d) == az and self.used[d] < slots]
        return min(free, key=lambda d: (self.used[d], d)) if free else None

    def _attempt(self, request: _Request, t: float, leases: LeaseView,
                 gate: Gate | None) -> Attempt:
        request.attempts += 1
        waited = t - request.arrived
        droplet = self._place(request.az, t, leases)
        if droplet is None:
            reason = INSUFFICIENT_CAPACITY
        elif gate is not None and not gate.admit(t):
            reason = REQUEST_LIMIT_EXCEEDED
        else:
            name = f"i-{self.launched:06d}"  # never reused, whatever ended
            self.used[droplet] += 1
            self.instances[name] = Instance(name, droplet, request.az, t, request.number)
            self.launched += 1
            del self.pending[request.number]
            return Attempt(t, request.number, request.attempts, request.az, LAUNCHED,
                           instance=name, droplet=droplet, waited=waited)
        self.failures[reason] += 1
        retry_at = t + self.params.retry_after * self.rng.uniform(0.5, 1.5)
        if self.params.patience is not None and retry_at - request.arrived > self.params.patience:
            del self.pending[request.number]
            self.given_up += 1
            return Attempt(t, request.number, request.attempts, request.az, GAVE_UP, reason,
                           waited=waited)
        heapq.heappush(self._retries, (retry_at, request.number))
        return Attempt(t, request.number, request.attempts, request.az, FAILED, reason,
                       waited=waited)

    def expire(self, now: float) -> list[Instance]:
        """Terminate every instance whose ``lifetime`` is over at ``now``, oldest first."""
        lifetime = self.params.lifetime
        if lifetime is None:
            return []
        # self.instances is in launch order: the due ones are at its head.
        due = []
        for inst in self.instances.values():
            if inst.launched + lifetime > now:
                break
            due.append(inst)
        for inst in due:
            self.terminate(inst.name)
        self.terminated += len(due)
        return due

    def terminate(self, instance: str) -> Instance | None:
        """The instance ends; its slot is free again."""
        gone = self.instances.pop(instance, None)
        if gone is not None:
            self.used[gone.droplet] -= 1
        return gone

    def figures(self, now: float) -> Figures:
        oldest = min((r.arrived for r in self.pending.values()), default=now)
        return Figures(t=now, pending=len(self.pending), oldest_pending=now - oldest,
                       launched=self.launched, failures=dict(self.failures),
                       given_up=self.given_up, instances=len(self.instances),
                       terminated=self.terminated)
