"""An LB node's admission: a bounded number of requests in flight, a bounded queue and wait.

Who calls it: ``components.lbnode`` asks ``Admission`` before forwarding each DynamoDB request
to the backend, and unit tests drive it on a virtual clock. Why: an overloaded front door must
show overload as latency first (requests wait for a slot) and then as throttling (no slot within
the wait, or the queue full), never as a dropped connection, as DynamoDB (HTTP 400
``ThrottlingException``) and an NLB (503) do.

The logic is pure: ``try_acquire`` and ``release`` take the current time and return decisions;
the waiting itself (an asyncio future per waiter) is the component's. Slots go to waiters in
arrival order, and a waiter whose deadline has passed is throttled rather than served late.
"""

from __future__ import annotations

import collections
import dataclasses
import enum


class Verdict(enum.Enum):
    ADMIT = "admit"
    """A slot is free: forward now."""
    WAIT = "wait"
    """No slot, room in the queue: wait for ``release`` to hand one over, until the deadline."""
    THROTTLE = "throttle"
    """No slot and no room, or no wait allowed: answer throttled now."""


@dataclasses.dataclass(frozen=True)
class Limits:
    capacity: int
    """Requests forwarded at once."""
    queue: int
    """Requests that may wait for a slot."""
    wait: float
    """Seconds a request may wait before it is throttled."""

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        if self.queue < 0:
            raise ValueError(f"queue must be 0 or more, got {self.queue}")
        if self.wait < 0:
            raise ValueError(f"wait must be 0 or more seconds, got {self.wait}")


@dataclasses.dataclass
class Waiter:
    """One queued request; ``deadline`` is the time after which it is throttled."""

    ticket: int
    arrived: float
    deadline: float


class Admission:
    """In-flight count plus a FIFO of waiters, over times passed in."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self._waiters: collections.OrderedDict[int, Waiter] = collections.OrderedDict()
        self._next_ticket = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self, now: float) -> tuple[Verdict, Waiter | None]:
        """Decide on a new request at ``now``; on WAIT the returned waiter is queued."""
        self.expire(now)
        if self.in_flight < self.limits.capacity and not self._waiters:
            self.in_flight += 1
            return Verdict.ADMIT, None
        if self.limits.wait <= 0 or len(self._waiters) >= self.limits.queue:
            return Verdict.THROTTLE, None
        waiter = Waiter(self._next_ticket, now, now + self.limits.wait)
        self._next_ticket += 1
        self._waiters[waiter.ticket] = waiter
        return Verdict.WAIT, waiter

    def release(self, now: float) -> Waiter | None:
        """A forwarded request finished at ``now``; returns the waiter its slot passes to (the
        slot stays taken), or None when the slot is freed. Expired waiters are skipped."""
        self.expire(now)
        if self._waiters:
            _, waiter = self._waiters.popitem(last=False)
            return waiter
        self.in_flight -= 1
        if self.in_flight < 0:
            raise RuntimeError("release without a matching admit")
        return None

    def abandon(self, waiter: Waiter) -> bool:
        """The waiter gave up (its deadline passed, or its client went away); True if it was
        still queued, False if a slot had already been handed to it (then it must release)."""
        return self._waiters.pop(waiter.ticket, None) is not None

    def expire(self, now: float) -> list[Waiter]:
        """Drop and return waiters whose deadline is before ``now`` (they are throttled)."""
        gone = [w for w in self._waiters.values() if w.deadline < now]
        for waiter in gone:
            del self._waiters[waiter.ticket]
        return gone
