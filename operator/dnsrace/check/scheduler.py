"""A deterministic scheduler for coroutines that yield at explicit scheduling points.

``check.model`` wires the enactor protocol onto it and ``check.explore`` searches the
interleavings it allows; the unit tests drive toy protocols through it. It knows nothing about
DNS: a process is a coroutine, and each ``await Point(...)`` in it is where the scheduler may
switch to another process. Everything a process does between two points runs without
interruption, so the interleavings explored are exactly the orders of the points.

The coroutines are driven by hand (``coro.send(None)``), not by an event loop, so a run is a
pure function of the order in which processes are chosen: replaying the same choices gives the
same run. A bare ``None`` yielded by ``asyncio.sleep(0)`` (the enactor's zero back-off) is not
a scheduling point; the driver just resumes the coroutine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine, Generator
from typing import Any


@dataclasses.dataclass(frozen=True)
class Op:
    """What a process is about to do at a point, and which shared keys that touches.

    Keys are strings; ``"prefix:*"`` stands for every key that starts with ``"prefix:"``.
    Two ops conflict when one writes a key the other reads or writes; ops that do not conflict
    commute, which is what the partial-order reduction relies on.
    """

    label: str
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()

    def conflicts(self, other: Op) -> bool:
        return (_overlap(self.writes, other.reads | other.writes)
                or _overlap(other.writes, self.reads))


def _overlap(left: frozenset[str], right: frozenset[str]) -> bool:
    return any(_match(a, b) for a in left for b in right)


def _match(a: str, b: str) -> bool:
    if a == b:
        return True
    if a.endswith("*") and b.startswith(a[:-1]):
        return True
    return b.endswith("*") and a.startswith(b[:-1])


class Point:
    """The awaitable a process yields to the scheduler.

    With an ``op`` it is a scheduling point: the process waits until it is chosen. With only a
    ``guard`` it is a wait: the process is disabled until the guard holds, then it moves on to
    its next point without taking a step. Guards must be stable (once true, true until the
    process moves), so when a guard is evaluated does not change the run.
    """

    __slots__ = ("guard", "label", "op")

    def __init__(self, op: Op | None = None, *, guard: Callable[[], bool] | None = None,
                 label: str = "") -> None:
        if (op is None) == (guard is None):
            raise ValueError("a point has exactly one of op and guard")
        self.op = op
        self.guard = guard
        self.label = op.label if op else label

    def __await__(self) -> Generator[Point, None, None]:
        yield self


Process = Coroutine[Any, Any, object]


class Run:
    """One run of a set of processes, advanced one chosen point at a time."""

    def __init__(self, processes: dict[str, Process]) -> None:
        self.order = list(processes)
        self._coros = processes
        self.parked: dict[str, Point] = {}
        """Where each live process waits: at an op (enabled) or at a guard (disabled)."""
        self.crashed: dict[str, BaseException] = {}
        self.steps: list[tuple[str, Op]] = []
        for name in self.order:
            self._advance(name)
        self._settle()

    def enabled(self) -> list[str]:
        """Processes waiting at an op, in declaration order (so runs are reproducible)."""
        return [n for n in self.order if (p := self.parked.get(n)) is not None and p.op]

    def op(self, name: str) -> Op:
        point = self.parked[name]
        assert point.op is not None, f"{name} is not at a scheduling point"
        return point.op

    def position(self, name: str) -> str:
        """Where ``name`` is: its point's label, ``done`` or ``crashed``."""
        if name in self.crashed:
            return "crashed"
        point = self.parked.get(name)
        return point.label if point else "done"

    def step(self, name: str) -> Op:
        """Let ``name`` do the op it waits at, and run it up to its next point."""
        op = self.op(name)
        del self.parked[name]
        self.steps.append((name, op))
        self._advance(name)
        self._settle()
        return op

    def _advance(self, name: str) -> None:
        coro = self._coros[name]
        while True:
            try:
                token = coro.send(None)
            except StopIteration:
                return
            except Exception as exc:  # the process failed: it stops, the others go on
                self.crashed[name] = exc
                return
            if token is None:  # asyncio.sleep(0): not a scheduling point
                continue
            if not isinstance(token, Point):
                raise TypeError(f"{name} awaited {token!r}, which this scheduler cannot run")
            if token.guard is not None and token.guard():
                continue
            self.parked[name] = token
            return

    def _settle(self) -> None:
        """Move on every process whose guard now holds (a wake-up is not a step)."""
        moved = True
        while moved:
            moved = False
            for name in self.order:
                point = self.parked.get(name)
                if point is not None and point.guard is not None and point.guard():
                    del self.parked[name]
                    self._advance(name)
                    moved = True

    def close(self) -> None:
        """Close every unfinished coroutine (so Python does not warn about them)."""
        for coro in self._coros.values():
            coro.close()
