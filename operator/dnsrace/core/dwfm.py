"""EC2's DropletWorkflow Manager (DWFM): droplet leases, the re-establish queue, its collapse.

Who calls it: ``components.dwfm`` (to come) calls ``Dwfm.advance`` every few milliseconds on
real time against a DynamoDB-backed ``LeaseStore`` reached through the regional endpoint; the
unit tests call it on a virtual clock against ``MemoryLeaseStore``; the launcher reads its lease
view (``Dwfm.valid``). Why pure: the congestive collapse of 2025-10-20 (DESIGN.md section 2) is
a property of queueing, deadlines and retries, so it must be shown on a virtual clock, replayed
from a seed, and then run unchanged on real time.

The mechanism, as published (no counts or timeouts were; ours are in ``DwfmParams``):
- every droplet holds a lease; a periodic *state check* (every ``check_interval`` s, each droplet
  at its own phase) renews it by a conditional write (``LeaseStore.renew``: only while the lease
  is still valid). When the store cannot be reached the renewal fails and the lease runs out
  after ``lease_ttl`` s;
- a droplet whose lease expired asks for it to be *re-established*: a work item queued for a
  pool of ``workers`` workers, each item costing ``service_time`` s, carrying a deadline
  ``deadline`` s after it was queued. Workers take items first in, first out, and do the work
  whatever the item's age (as DWFM did); at the end the lease is written
  (``LeaseStore.establish``). An item finished after its deadline is *wasted*: its result is
  thrown away and the work is queued again. An item whose write fails (store unreachable) is
  *failed*; the droplet's next state check asks again. A droplet has at most one item queued or
  in service.

Why it collapses (nothing here decides it): with ``L`` items queued, each waits about
``L * service_time / workers`` s. When the store comes back after a long outage every droplet
has an item queued, so each one waits far longer than its deadline, is wasted, and is queued
again behind the others: the queue stays full and goodput stays at zero while the load stays.
A short outage that expires fewer than ``deadline * workers / service_time`` leases recovers by
itself: the system is metastable, not broken. A ``restart`` drops the queue, but every droplet
asks again within one check interval, so without admission control the queue fills again.

Safeguard ``dwfm-throttle`` (``Throttle``): admission by queue size. A droplet whose item finds
``max_queue`` items waiting is refused and retries after a jittered exponential backoff (full
jitter: uniform in [0, min(cap, base * 2**refusals)]), so no admitted item waits longer than
``max_queue * service_time / workers`` s; with that below ``deadline`` every admitted item is
useful and the fleet recovers in about ``droplets * service_time / workers`` s.

Times are on the caller's clock (Unix time in the component, virtual time in tests). Every event
is handled at its own time, in order, so ``advance`` in one call or in many small ones gives the
same result for the same seed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import heapq
import math
import random
from collections.abc import Iterable, Sequence
from typing import Protocol

SAFEGUARD = "dwfm-throttle"
"""The safeguard's name, as ``--safeguards`` spells it."""

GOODPUT_WINDOW = 15.0
"""Seconds over which ``Figures.goodput`` is measured (moonpool's recovery check waits 15 s)."""


class StoreUnavailable(Exception):
    """The lease store could not be reached (a DNS failure, a refused connection, a timeout,
    throttling): the write did not happen. A condition that failed is not this (``renew``
    returns False)."""


class LeaseStore(Protocol):
    """Where leases live: a DynamoDB table in the component, a dict under test.

    Every method raises ``StoreUnavailable`` when the store cannot be reached.
    """

    def renew(self, droplet: str, now: float, ttl: float) -> bool:
        """Conditional write: extend the droplet's lease to ``now + ttl`` if it is still valid
        at ``now``; False when the condition fails (the lease is missing or expired)."""
        ...

    def establish(self, droplet: str, now: float, ttl: float) -> None:
        """Write a new lease for the droplet, valid until ``now + ttl``."""
        ...

    def load(self, now: float) -> dict[str, float]:
        """Every lease's expiry (droplet -> time); read once when DWFM starts."""
        ...


class MemoryLeaseStore:
    """Leases in a dict, unreachable during the given ``[start, end)`` windows (the tests'
    DynamoDB outage, decided by time so that a run replays the same whatever the step size)."""

    def __init__(self, outages: Iterable[tuple[float, float]] = ()) -> None:
        self.expires: dict[str, float] = {}
        self.outages: list[tuple[float, float]] = [(float(a), float(b)) for a, b in outages]
        self.calls = 0
        self.errors = 0

    def available(self, now: float) -> bool:
        return not any(start <= now < end for start, end in self.outages)

    def _reach(self, now: float) -> None:
        self.calls += 1
        if not self.available(now):
            self.errors += 1
            raise StoreUnavailable(f"lease store unreachable at {now:.3f}")

    def renew(self, droplet: str, now: float, ttl: float) -> bool:
        self._reach(now)
        if self.expires.get(droplet, -math.inf) <= now:
            return False
        self.expires[droplet] = now + ttl
        return True

    def establish(self, droplet: str, now: float, ttl: float) -> None:
        self._reach(now)
        self.expires[droplet] = now + ttl

    def load(self, now: float) -> dict[str, float]:
        self._reach(now)
        return dict(self.expires)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be more than 0, got {value}")


@dataclasses.dataclass(frozen=True)
class DwfmParams:
    """The fleet and its lease workflow (seconds). Defaults: see docs/cascade.md."""

    droplets: int = 300
    """Droplets (physical hosts) in the fleet."""
    check_interval: float = 5.0
    """Seconds between two state checks of one droplet (each renews its lease)."""
    lease_ttl: float = 12.0
    """Seconds a lease stays valid after it was written; more than ``check_interval``."""
    workers: int = 4
    """Workers re-establishing leases at once."""
    service_time: float = 1.0
    """Seconds of work one re-establish item costs a worker."""
    deadline: float = 12.0
    """Seconds from being queued after which an item's result is useless (wasted)."""

    def __post_init__(self) -> None:
        if self.droplets < 1:
            raise ValueError(f"droplets must be at least 1, got {self.droplets}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        for name in ("check_interval", "lease_ttl", "service_time", "deadline"):
            _positive(name, getattr(self, name))
        if self.lease_ttl <= self.check_interval:
            raise ValueError(
                f"lease_ttl ({self.lease_ttl} s) must be longer than check_interval "
                f"({self.check_interval} s): a lease would expire between two renewals")

    @property
    def capacity(self) -> float:
        """Items the workers can finish per second."""
        return self.workers / self.service_time

    @property
    def useful_queue(self) -> int:
        """The longest queue whose last item still finishes before its deadline."""
        return max(0, math.floor(self.deadline * self.capacity) - self.workers)


@dataclasses.dataclass(frozen=True)
class Throttle:
    """``dwfm-throttle``: admission by queue size with jittered exponential backoff."""

    max_queue: int = 30
    """Items that may wait; a droplet finding this many is refused. Keep it below
    ``DwfmParams.useful_queue`` so that every admitted item meets its deadline."""
    backoff_base: float = 1.0
    """Seconds of the first backoff's upper bound; doubles with each refusal in a row."""
    backoff_cap: float = 8.0
    """Upper bound of any backoff."""

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {self.max_queue}")
        _positive("backoff_base", self.backoff_base)
        if self.backoff_cap < self.backoff_base:
            raise ValueError(f"backoff_cap ({self.backoff_cap}) must be at least backoff_base "
                             f"({self.backoff_base})")

    def backoff(self, refusals: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**(refusals-1))]."""
        bound = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, refusals - 1))
        return rng.uniform(0.0, bound)


@dataclasses.dataclass
class Item:
    """One re-establish work item."""

    droplet: str
    queued: float
    deadline: float


# Event kinds, in the order they are handled at equal times (plain ints: the loop is hot).
_DONE = 0
"""A worker finishes its item (first at equal times: a freed worker serves the next)."""
_CHECK = 1
"""A droplet's periodic state check."""
_RETRY = 2
"""A refused droplet asks again after its backoff."""


@dataclasses.dataclass(frozen=True)
class Figures:
    """What the component exports as metrics and records in ``dwfm.jsonl``; counters are totals
    since start."""

    t: float
    droplets: int
    leases_valid: int
    queue_depth: int
    in_service: int
    queue_age: float
    """Age of the oldest item waiting (0 when none)."""
    goodput: float
    """Share of the items finished in the last ``GOODPUT_WINDOW`` s that were useful, wasted and
    failed ones counting against it (1.0 when none finished: nothing was offered)."""
    useful_per_s: float
    """Useful completions per second over the same window."""
    useful: int
    wasted: int
    failed: int
    admitted: int
    refused: int
    dropped: int
    renewals: int
    renewals_failed: int
    throttle: bool


class Dwfm:
    """The fleet's leases and the re-establish queue, advanced on a clock passed in."""

    def __init__(self, params: DwfmParams, store: LeaseStore, rng: random.Random, *,
                 start: float, throttle: Throttle | None = None,
                 names: Sequence[str] | None = None) -> None:
        self.params = params
        self.store = store
        self.rng = rng
        self.throttle = throttle
        self.droplets: tuple[str, ...] = tuple(
            names if names is not None else droplet_names(params.droplets))
        if len(self.droplets) != params.droplets or len(set(self.droplets)) != params.droplets:
            raise ValueError(f"names must be {params.droplets} distinct droplet names")
        self.now = start
        self.expires: dict[str, float] = {}
        """DWFM's own view: each droplet's lease expiry as last written by DWFM."""
        self.queue: collections.deque[Item] = collections.deque()
        self.busy: list[Item | None] = [None] * params.workers
        self.pending: set[str] = set()
        """Droplets with an item queued or in service."""
        self.refusals: dict[str, int] = {}
        """Droplets backing off after a refusal (refusals in a row)."""
        self.generation = 0
        """Bumped by ``restart``: completions of dropped items are ignored."""
        self._events: list[tuple[float, int, int, int, str, int]] = []
        self._seq = 0
        self._finished: collections.deque[tuple[float, bool]] = collections.deque()
        self.useful = self.wasted = self.failed = 0
        self.admitted = self.refused = self.dropped = 0
        self.renewals = self.renewals_failed = 0
        known = set(self.droplets)
        # Unreachable at start: no view, so every droplet looks expired and asks for a lease.
        with contextlib.suppress(StoreUnavailable):
            self.expires.update({d: e for d, e in store.load(start).items() if d in known})
        for droplet in self.droplets:
            self._push(start + rng.uniform(0.0, params.check_interval), _CHECK, droplet)

    # -- the clock -----------------------------------------------------------------------------

    def _push(self, t: float, kind: int, droplet: str = "", worker: int = -1) -> None:
        heapq.heappush(self._events, (t, kind, self._seq, worker, droplet, self.generation))
        self._seq += 1

    def advance(self, now: float) -> None:
        """Handle every event due up to ``now``, each at its own time."""
        if now < self.now:
            raise ValueError(f"time went backwards: {now} < {self.now}")
        while self._events and self._events[0][0] <= now:
            t, kind, _, worker, droplet, generation = heapq.heappop(self._events)
            self.now = t
            if kind == _CHECK:
                self._check(droplet, t)
                self._push(t + self.params.check_interval, _CHECK, droplet)
            elif kind == _RETRY:
                if droplet in self.refusals:
                    self._ask(droplet, t)
            elif generation == self.generation:
                self._done(worker, t)
        self.now = now

    # -- the mechanism -------------------------------------------------------------------------

    def _valid(self, droplet: str, t: float) -> bool:
        return self.expires.get(droplet, -math.inf) > t

    def _check(self, droplet: str, t: float) -> None:
        """A state check: renew a valid lease; ask for an expired one to be re-established."""
        if self._valid(droplet, t):
            self.renewals += 1
            try:
                renewed = self.store.renew(droplet, t, self.params.lease_ttl)
            except StoreUnavailable:
                self.renewals_failed += 1
                return  # the lease runs out by itself unless a later check renews it
            if renewed:
                self.expires[droplet] = t + self.params.lease_ttl
                return
            self.renewals_failed += 1
            self.expires.pop(droplet, None)  # the store says it expired: re-establish it
        if droplet in self.pending or droplet in self.refusals:
            return  # already asked (queued, in service, or backing off)
        self._ask(droplet, t)

    def _ask(self, droplet: str, t: float) -> None:
        """Offer a re-establish item for the droplet: admitted, or refused with a backoff."""
        if self.throttle is not None and len(self.queue) >= self.throttle.max_queue:
            self.refused += 1
            refusals = self.refusals.get(droplet, 0) + 1
            self.refusals[droplet] = refusals
            self._push(t + self.throttle.backoff(refusals, self.rng), _RETRY, droplet)
            return
        self.refusals.pop(droplet, None)
        self.admitted += 1
        self.pending.add(droplet)
        self.queue.append(Item(droplet, t, t + self.params.deadline))
        self._dispatch(t)

    def _dispatch(self, t: float) -> None:
        for worker, item in enumerate(self.busy):
            if not self.queue:
                return
            if item is None:
                self.busy[worker] = self.queue.popleft()
                self._push(t + self.params.service_time, _DONE, worker=worker)

    def _done(self, worker: int, t: float) -> None:
        item = self.busy[worker]
        self.busy[worker] = None
        if item is None:
            return
        self.pending.discard(item.droplet)
        if t > item.deadline:
            self.wasted += 1
            self._finished.append((t, False))
            self._ask(item.droplet, t)  # the work is queued again
        else:
            try:
                self.store.establish(item.droplet, t, self.params.lease_ttl)
            except StoreUnavailable:
                self.failed += 1  # the droplet's next state check asks again
                self._finished.append((t, False))
            else:
                self.useful += 1
                self._finished.append((t, True))
                self.expires[item.droplet] = t + self.params.lease_ttl
        self._dispatch(t)

    # -- operations ----------------------------------------------------------------------------

    def provision(self, now: float) -> int:
        """Write every droplet's lease directly, outside the queue: the fleet as it stood before
        the event (a cold start through the queue is itself a recovery, and collapses without
        the throttle). Returns how many were written; raises ``StoreUnavailable``."""
        for droplet in self.droplets:
            self.store.establish(droplet, now, self.params.lease_ttl)
            self.expires[droplet] = now + self.params.lease_ttl
        return len(self.droplets)

    def restart(self, now: float) -> int:
        """The manual step (4:14 AM): restart the DWFM hosts, dropping every queued and
        in-service item. Droplets ask again at their next state check. Returns items dropped."""
        self.advance(now)
        dropped = len(self.queue) + sum(item is not None for item in self.busy)
        self.queue.clear()
        self.busy = [None] * self.params.workers
        self.pending.clear()
        self.generation += 1
        self.dropped += dropped
        return dropped

    def set_throttle(self, throttle: Throttle | None) -> None:
        """Switch ``dwfm-throttle`` on (or off) while running: the manual step's other half."""
        self.throttle = throttle
        if throttle is None:
            self.refusals.clear()  # their RETRY events find nothing to do

    # -- what it shows -------------------------------------------------------------------------

    def valid(self, now: float) -> list[str]:
        """Droplets holding a valid lease at ``now``, in no set order (the launcher's
        ``LeaseView``)."""
        return [d for d, expires in self.expires.items() if expires > now]

    def leases_valid(self, now: float) -> int:
        return sum(1 for expires in self.expires.values() if expires > now)

    def queue_age(self, now: float) -> float:
        return now - self.queue[0].queued if self.queue else 0.0

    def _window(self, now: float, window: float) -> tuple[int, int]:
        while self._finished and self._finished[0][0] < now - max(window, GOODPUT_WINDOW, 300.0):
            self._finished.popleft()
        recent = [ok for t, ok in self._finished if now - window < t <= now]
        return sum(recent), len(recent)

    def goodput(self, now: float, window: float = GOODPUT_WINDOW) -> float:
        """Useful share of the items finished in the last ``window`` s (1.0 when none)."""
        useful, finished = self._window(now, window)
        return useful / finished if finished else 1.0

    def useful_per_s(self, now: float, window: float = GOODPUT_WINDOW) -> float:
        """Useful completions per second over the last ``window`` s (up to 300 s)."""
        useful, _ = self._window(now, window)
        return useful / window

    def figures(self, now: float) -> Figures:
        return Figures(
            t=now, droplets=len(self.droplets), leases_valid=self.leases_valid(now),
            queue_depth=len(self.queue), in_service=sum(i is not None for i in self.busy),
            queue_age=self.queue_age(now), goodput=self.goodput(now),
            useful_per_s=self.useful_per_s(now), useful=self.useful, wasted=self.wasted,
            failed=self.failed, admitted=self.admitted, refused=self.refused,
            dropped=self.dropped, renewals=self.renewals, renewals_failed=self.renewals_failed,
            throttle=self.throttle is not None,
        )


def droplet_names(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"droplet-{i:0{width}d}" for i in range(count)]


def recovery_bound(params: DwfmParams, throttle: Throttle) -> float:
    """Seconds within which a throttled fleet re-establishes every lease after the store comes
    back: one check interval for every droplet to ask, the fleet's work at full capacity, the
    longest backoff after the last refusal, and one item's wait in the admitted queue."""
    return (params.check_interval + params.droplets / params.capacity
            + throttle.backoff_cap + throttle.max_queue / params.capacity)
