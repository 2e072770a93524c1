"""EC2's Network Manager: each instance's network state propagated through a bounded queue.

Who calls it: ``components.netmanager`` (to come) calls ``NetworkManager.enqueue`` for each
launched (or terminated) instance it sees, ``advance`` on real time, and marks the instances
``advance`` returns as reachable (their status, and their listener starts answering); the
launcher asks ``admit`` when ``propagation-throttle`` is on; the unit tests do all of it on a
virtual clock. Why pure: the backlog and its age must follow from arrivals and throughput only.

The mechanism, as published: after DWFM recovered, Network Manager had to propagate the network
state of the burst of new instances (and of those terminated during the event); its latency
rose and new instances came up without connectivity until their state had propagated. Here one
propagation pipeline serves a first-in, first-out queue at ``rate`` states per second; an
instance is reachable only once its state has gone through. A burst of ``B`` launches makes the
last one wait ``B / rate`` s: the backlog and the age of its oldest item grow while launches come
faster than ``rate`` and drain at ``rate`` after.

Safeguard ``propagation-throttle`` (``PropagationThrottle``), as AWS announced it ("throttling
in EC2 data propagation based on the waiting-queue size"): ``admit`` refuses new launches while
the queue (plus launches already admitted but not handed over) holds ``max_backlog`` states, so
the admitted launch rate falls to the propagation rate and no state waits more than about
``max_backlog / rate`` s. Refused launches fail ``RequestLimitExceeded`` and are retried.
"""

from __future__ import annotations

import collections
import dataclasses

SAFEGUARD = "propagation-throttle"
"""The safeguard's name, as ``--safeguards`` spells it."""

LAUNCH = "launch"
TERMINATE = "terminate"


@dataclasses.dataclass(frozen=True)
class PropagationParams:
    rate: float = 2.0
    """Network states propagated per second."""

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be more than 0 states per second, got {self.rate}")

    @property
    def service_time(self) -> float:
        return 1.0 / self.rate


@dataclasses.dataclass(frozen=True)
class PropagationThrottle:
    """``propagation-throttle``: launches admitted only while the queue is short."""

    max_backlog: int = 20
    """States that may wait; at this many, ``admit`` refuses."""

    def __post_init__(self) -> None:
        if self.max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, got {self.max_backlog}")


@dataclasses.dataclass(frozen=True)
class Propagated:
    """One state that went through (a line of ``netmanager.jsonl``)."""

    instance: str
    kind: str
    queued: float
    t: float
    """When it went through: from now on the instance is reachable (or gone, if terminated)."""

    @property
    def waited(self) -> float:
        return self.t - self.queued


@dataclasses.dataclass(frozen=True)
class Figures:
    t: float
    backlog: int
    oldest_age: float
    """Seconds the oldest waiting state has waited (0 when none)."""
    propagated: int
    admitted: int
    refused: int
    last_wait: float
    """Seconds the last propagated state waited, from queued to through."""
    throttle: bool


@dataclasses.dataclass
class _Item:
    instance: str
    kind: str
    queued: float
    handed: float
    """When the Network Manager got it (not before its own clock)."""


class NetworkManager:
    """A first-in, first-out propagation queue served at a bounded rate."""

    def __init__(self, params: PropagationParams, *, start: float,
                 throttle: PropagationThrottle | None = None) -> None:
        self.params = params
        self.throttle = throttle
        self.now = start
        self.queue: collections.deque[_Item] = collections.deque()
        self.free_at = start
        """When the pipeline is free for the next state."""
        self.reachable_set: set[str] = set()
        self.reserved = 0
        """Launches admitted by ``admit`` and not yet handed over with ``enqueue``."""
        self.propagated = self.admitted = self.refused = 0
        self.last_wait = 0.0

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def admit(self, now: float) -> bool:
        """The launcher's gate: always yes without the throttle; with it, yes while the backlog
        and the launches already admitted stay under ``max_backlog`` (the launch is promised:
        hand it over with ``enqueue``)."""
        if self.throttle is None:
            self.admitted += 1
            return True
        if len(self.queue) + self.reserved >= self.throttle.max_backlog:
            self.refused += 1
            return False
        self.reserved += 1
        self.admitted += 1
        return True

    def set_throttle(self, throttle: PropagationThrottle | None) -> None:
        self.throttle = throttle
        self.reserved = 0

    def enqueue(self, instance: str, now: float, kind: str = LAUNCH) -> None:
        """Queue the instance's network state, launched (or terminated) at ``now``."""
        if kind not in (LAUNCH, TERMINATE):
            raise ValueError(f"kind must be {LAUNCH} or {TERMINATE}, got {kind!r}")
        if kind == LAUNCH and self.reserved:
            self.reserved -= 1
        self.queue.append(_Item(instance, kind, now, max(now, self.now)))

    def advance(self, now: float) -> list[Propagated]:
        """Propagate every state whose turn ends by ``now``; returns them in order."""
        if now < self.now:
            raise ValueError(f"time went backwards: {now} < {self.now}")
        out: list[Propagated] = []
        while self.queue:
            item = self.queue[0]
            done = max(self.free_at, item.handed) + self.params.service_time
            if done > now:
                break
            self.queue.popleft()
            self.free_at = done
            if item.kind == LAUNCH:
                self.reachable_set.add(item.instance)
            else:
                self.reachable_set.discard(item.instance)
            self.propagated += 1
            self.last_wait = done - item.queued
            out.append(Propagated(item.instance, item.kind, item.queued, done))
        self.now = now
        return out

    def reachable(self, instance: str) -> bool:
        """Has the instance's network state propagated (can anything reach it)?"""
        return instance in self.reachable_set

    def oldest_age(self, now: float) -> float:
        return now - self.queue[0].queued if self.queue else 0.0

    def figures(self, now: float) -> Figures:
        return Figures(t=now, backlog=len(self.queue), oldest_age=self.oldest_age(now),
                       propagated=self.propagated, admitted=self.admitted,
                       refused=self.refused, last_wait=self.last_wait,
                       throttle=self.throttle is not None)
