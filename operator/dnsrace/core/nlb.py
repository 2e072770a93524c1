"""A Network Load Balancer's health checks, AZ failover and what it publishes in DNS.

Who calls it: ``components.nlb`` (to come) registers each launched instance as a target, takes
the checks due (``take_due``), probes the instances over the network, reports each result
(``observe``) and writes ``publish``'s targets as the NLB's DNS record through the record store;
the unit tests drive it on a virtual clock with ``check`` and a probe that asks
``core.propagation.NetworkManager`` whether the instance is reachable yet. Why pure: the
flapping and the capacity removed must follow from probe results and thresholds alone.

The mechanism, as published: NLB brought new instances into service before their network state
had propagated, so their checks failed and later passed, pulling nodes from DNS and putting them
back; as unhealthy targets piled up in an AZ, automatic AZ DNS failover removed that AZ's
capacity, healthy targets included. Here:
- a target is in service (healthy) as soon as it is registered; it is checked every
  ``interval`` s (each at its own phase); ``unhealthy_threshold`` failures in a row make it
  unhealthy, ``healthy_threshold`` passes in a row healthy again; each change is a flip;
- an AZ whose unhealthy share of capacity exceeds ``failover_share`` is failed over: none of its
  targets is published; it comes back when the share falls to the threshold or below. When no
  target at all would be left, the NLB fails open and publishes every target, as NLB and Route
  53 do;
- the published set is the healthy targets of the AZs not failed over.

Safeguard ``velocity-control`` (``VelocityControl``), as AWS announced it ("limit the capacity a
single NLB can remove when health check failures cause AZ failover"): a cap on the healthy
capacity one load balancer may remove from DNS per interval; removals beyond it stay published
until the window moves. An unhealthy target always leaves (it cannot serve), and adding capacity
is never held back. The manual step (9:36 AM): ``set_auto_failover(False)``, after which AZs
are never failed over and only unhealthy targets leave DNS.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import random
from collections.abc import Callable

SAFEGUARD = "velocity-control"
"""The safeguard's name, as ``--safeguards`` spells it."""


@dataclasses.dataclass(frozen=True)
class NlbParams:
    interval: float = 5.0
    """Seconds between two health checks of one target."""
    unhealthy_threshold: int = 2
    """Failed checks in a row after which a healthy target is unhealthy."""
    healthy_threshold: int = 3
    """Passed checks in a row after which an unhealthy target is healthy."""
    failover_share: float = 0.5
    """An AZ is failed over when more than this share of its capacity is unhealthy."""

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be more than 0, got {self.interval}")
        for name in ("unhealthy_threshold", "healthy_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.failover_share < 1.0:
            raise ValueError(f"failover_share must be in [0, 1), got {self.failover_share}")


@dataclasses.dataclass(frozen=True)
class VelocityControl:
    """``velocity-control``: at most ``max_removed`` capacity removed from DNS per ``per`` s."""

    max_removed: float = 5.0
    per: float = 60.0

    def __post_init__(self) -> None:
        if not self.max_removed > 0:
            raise ValueError(f"max_removed must be more than 0, got {self.max_removed}")
        if not self.per > 0:
            raise ValueError(f"per must be more than 0, got {self.per}")


@dataclasses.dataclass
class Target:
    name: str
    az: str
    capacity: float
    healthy: bool = True
    passes: int = 0
    """Checks passed in a row."""
    failures: int = 0
    """Checks failed in a row."""
    flips: int = 0
    checks: int = 0
    epoch: int = 0
    """Which registration this is: checks scheduled for an earlier one of the name are dropped."""


@dataclasses.dataclass(frozen=True)
class Published:
    """What the NLB's DNS record holds after a ``publish``."""

    t: float
    targets: frozenset[str]
    capacity: dict[str, float]
    """Published capacity per AZ (every AZ with a registered target, 0 included)."""
    failed_over: frozenset[str]
    removed: tuple[str, ...]
    added: tuple[str, ...]
    held: float
    """Capacity velocity control kept in DNS though it should have gone."""
    fail_open: bool


@dataclasses.dataclass(frozen=True)
class Figures:
    t: float
    targets: int
    unhealthy: int
    healthy: dict[str, float]
    """Published (serving) capacity per AZ: the ``healthy`` lane of ``nlb.jsonl``."""
    registered: dict[str, float]
    """Registered capacity per AZ."""
    failed_over: tuple[str, ...]
    flips: int
    """Target state changes, since start."""
    az_failovers: int
    az_restores: int
    removed_healthy: float
    """Healthy capacity removed from DNS (by AZ failover), since start."""
    removed_unhealthy: float
    """Unhealthy capacity removed from DNS, since start."""
    removed_in_window: float
    """Healthy capacity removed in the last velocity interval (60 s without the safeguard)."""
    held: float
    auto_failover: bool
    velocity_control: bool


class Nlb:
    """One load balancer's targets, their health, its AZ failover and its DNS record."""

    def __init__(self, params: NlbParams, rng: random.Random, *, start: float,
                 velocity: VelocityControl | None = None, auto_failover: bool = True) -> None:
        self.params = params
        self.rng = rng
        self.velocity = velocity
        self.auto_failover = auto_failover
        self.now = start
        self.targets: dict[str, Target] = {}
        self.published: set[str] = set()
        self.failed_over: set[str] = set()
        self._schedule: list[tuple[float, int, str, int]] = []
        self._seq = 0
        self._removals: collections.deque[tuple[float, float]] = collections.deque()
        self.flips = self.az_failovers = self.az_restores = 0
        self.removed_healthy = 0.0
        self.removed_unhealthy = 0.0
        self.held = 0.0
        self.last: Published | None = None

    # -- targets -------------------------------------------------------------------------------

    def register(self, name: str, az: str, now: float, capacity: float = 1.0) -> None:
        """Bring a target into service now: healthy until its checks say otherwise."""
        if name in self.targets:
            raise ValueError(f"target {name} is already registered")
        if not capacity > 0:
            raise ValueError(f"capacity must be more than 0, got {capacity}")
        self.targets[name] = Target(name, az, capacity, epoch=self._seq)
        self._push(now + self.rng.uniform(0.0, self.params.interval), name, self._seq)

    def deregister(self, name: str) -> None:
        """The target leaves (its instance ended); it leaves DNS at the next publish, uncapped."""
        self.targets.pop(name, None)

    def _push(self, t: float, name: str, epoch: int) -> None:
        heapq.heappush(self._schedule, (t, self._seq, name, epoch))
        self._seq += 1

    # -- health checks -------------------------------------------------------------------------

    def take_due(self, now: float) -> list[tuple[float, str]]:
        """The checks due by ``now`` as (time, target), each scheduled again one interval on;
        the caller probes them and reports with ``observe``."""
        due = []
        while self._schedule and self._schedule[0][0] <= now:
            t, _, name, epoch = heapq.heappop(self._schedule)
            target = self.targets.get(name)
            if target is None or target.epoch != epoch:
                continue  # deregistered (and perhaps registered again since)
            due.append((t, name))
            self._push(t + self.params.interval, name, epoch)
        return due

    def observe(self, name: str, t: float, ok: bool) -> bool:
        """One check's result; True when it flipped the target's state."""
        target = self.targets.get(name)
        if target is None:
            return False
        target.checks += 1
        if ok:
            target.passes += 1
            target.failures = 0
            if not target.healthy and target.passes >= self.params.healthy_threshold:
                target.healthy = True
                target.flips += 1
                self.flips += 1
                return True
        else:
            target.failures += 1
            target.passes = 0
            if target.healthy and target.failures >= self.params.unhealthy_threshold:
                target.healthy = False
                target.flips += 1
                self.flips += 1
                return True
        return False

    def check(self, now: float, probe: Callable[[str, float], bool]) -> Published:
        """Run every check due by ``now`` in time order with ``probe(target, t)``, then publish
        at ``now`` (what the component does with ``take_due``, ``observe`` and ``publish``)."""
        if now < self.now:
            raise ValueError(f"time went backwards: {now} < {self.now}")
        for t, name in self.take_due(now):
            self.observe(name, t, probe(name, t))
        return self.publish(now)

    # -- what DNS gets -------------------------------------------------------------------------

    def set_auto_failover(self, enabled: bool) -> None:
        """The manual step: ``dnsrace nlb failover off`` (and on again)."""
        self.auto_failover = enabled

    def _window(self) -> float:
        return self.velocity.per if self.velocity is not None else 60.0

    def removed_in_window(self, t: float) -> float:
        """Healthy capacity removed from DNS in the interval ending at ``t``."""
        window = self._window()
        while self._removals and self._removals[0][0] <= t - window:
            self._removals.popleft()
        return sum(c for _, c in self._removals)

    def publish(self, t: float) -> Published:
        """Compute the record at ``t`` from the targets' health, the AZs' failover and the
        velocity cap, and make it the published one."""
        self.now = max(self.now, t)
        registered: dict[str, float] = collections.defaultdict(float)
        unhealthy: dict[str, float] = collections.defaultdict(float)
        for target in self.targets.values():
            registered[target.az] += target.capacity
            if not target.healthy:
                unhealthy[target.az] += target.capacity
        failed: set[str] = set()
        if self.auto_failover:
            failed = {az for az, cap in registered.items()
                      if unhealthy[az] / cap > self.params.failover_share}
        self.az_failovers += len(failed - self.failed_over)
        self.az_restores += len(self.failed_over - failed)
        self.failed_over = failed
        desired = {n for n, tg in self.targets.items() if tg.healthy and tg.az not in failed}
        fail_open = not desired and bool(self.targets)
        if fail_open:
            desired = set(self.targets)
        gone = {n for n in self.published if n not in self.targets}
        leaving = sorted(n for n in self.published - desired if n in self.targets)
        budget = float("inf")
        if self.velocity is not None:
            budget = self.velocity.max_removed - self.removed_in_window(t)
        removed: list[str] = sorted(gone)
        held = 0.0
        for name in leaving:
            target = self.targets[name]
            if not target.healthy:  # it cannot serve: it leaves, whatever the cap
                removed.append(name)
                self.removed_unhealthy += target.capacity
            elif target.capacity <= budget + 1e-9:  # healthy capacity removed by failover
                budget -= target.capacity
                removed.append(name)
                self._removals.append((t, target.capacity))
                self.removed_healthy += target.capacity
            else:
                held += target.capacity
        added = sorted(desired - self.published)
        self.published = (self.published - set(removed)) | set(added)
        self.held = held
        capacity = {az: 0.0 for az in registered}
        for name in self.published:
            serving = self.targets.get(name)
            if serving is not None:
                capacity[serving.az] = capacity.get(serving.az, 0.0) + serving.capacity
        self.last = Published(t, frozenset(self.published), capacity, frozenset(failed),
                              tuple(removed), tuple(added), held, fail_open)
        return self.last

    def figures(self, now: float) -> Figures:
        last = self.last if self.last is not None else self.publish(now)
        registered: dict[str, float] = collections.defaultdict(float)
        for target in self.targets.values():
            registered[target.az] += target.capacity
        return Figures(
            t=now, targets=len(self.targets),
            unhealthy=sum(not tg.healthy for tg in self.targets.values()),
            healthy=dict(last.capacity), registered=dict(registered),
            failed_over=tuple(sorted(self.failed_over)), flips=self.flips,
            az_failovers=self.az_failovers, az_restores=self.az_restores,
            removed_healthy=self.removed_healthy,
            removed_unhealthy=self.removed_unhealthy, removed_in_window=self.removed_in_window(now),
            held=self.held, auto_failover=self.auto_failover,
            velocity_control=self.velocity is not None,
        )
