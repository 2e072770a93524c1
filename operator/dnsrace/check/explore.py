"""Systematic search of a model's interleavings: depth-first to cover them, breadth-first for
the shortest counterexample.

``check.model`` builds worlds, ``cli.check`` and the tests call ``search`` and ``shortest``. It
is protocol-agnostic: a world is a ``scheduler.Run`` plus a fingerprint of its state and the
property checks. Coroutines cannot be copied, so a state is reached again by replaying the
choices that led to it from a fresh world (as stateless model checkers such as CHESS do); the
depth-first search keeps going on the live world for the first choice and replays only for the
others.

Reductions, both sound for properties checked on states and on single steps:
- state hashing: a state whose fingerprint was seen is not expanded again;
- sleep sets (Godefroid's partial-order reduction): after exploring op ``a`` from a state, the
  search does not try ``a`` first again in the branches that start with an op independent of it
  (ops on different keys), since both orders reach the same state. Sleep sets prune
  transitions, never states, so every reachable state is still visited. Combined with state
  hashing, a state is remembered with its sleep set and revisited for the ops it slept on.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Hashable, Mapping

from dnsrace.check import scheduler


@dataclasses.dataclass(frozen=True)
class Found:
    """A property violated at the end of ``path`` (the processes chosen, in order)."""

    prop: str
    message: str
    path: tuple[str, ...]


class World(abc.ABC):
    """One run of a model: the scheduler's run, what its state is, and what must hold."""

    run: scheduler.Run

    @abc.abstractmethod
    def fingerprint(self) -> Hashable:
        """Equal for two worlds whose futures are the same (shared state and every process's)."""

    def symmetric(self) -> tuple[Hashable, Mapping[str, str]]:
        """The fingerprint of a canonical representative of the state's symmetry class, and how
        process names map onto that representative's (used to carry sleep sets across)."""
        return self.fingerprint(), {name: name for name in self.run.order}

    @abc.abstractmethod
    def observe(self) -> object:
        """What the step properties compare before and after a step."""

    @abc.abstractmethod
    def check(self, before: object) -> list[tuple[str, str]]:
        """(property, message) for each property the last step broke; ``before`` is
        ``observe()`` from before it. Terminal properties apply when nothing is enabled."""


Factory = Callable[[], World]


@dataclasses.dataclass
class Stats:
    states: int = 0
    transitions: int = 0
    replayed: int = 0
    """Steps re-executed to reach a state again (the price of not copying coroutines)."""
    max_depth: int = 0
    seconds: float = 0.0
    complete: bool = True
    """False when ``max_states`` stopped the search."""

    @property
    def per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass
class Outcome:
    stats: Stats
    found: dict[str, Found]
    """The first violation found of each property (not necessarily the shortest)."""


def replay(factory: Factory, path: tuple[str, ...]) -> World:
    world = factory()
    for name in path:
        world.run.step(name)
    return world


def _branch(world: World, factory: Factory, path: tuple[str, ...], i: int, name: str,
            stats: Stats) -> tuple[World, object]:
    """Step ``name`` from the state ``path`` reached: the live world for the first branch
    (cheap), a replay of the path for the others. Returns the child and what it observed
    before the step (for the properties)."""
    if i == 0:
        child = world
    else:
        child = replay(factory, path)
        stats.replayed += len(path)
    before = child.observe()
    child.run.step(name)
    stats.transitions += 1
    return child, before


def _initial(world: World) -> list[tuple[str, str]]:
    return world.check(world.observe())


def search(factory: Factory, *, max_states: int | None = None, reduce: bool = True,
           symmetry: bool = True) -> Outcome:
    """Depth-first over every reachable state, with state hashing, sleep sets (``reduce``) and
    symmetry reduction (``symmetry``: symmetric states are counted once)."""
    stats = Stats()
    found: dict[str, Found] = {}
    visited: dict[Hashable, frozenset[str]] = {}
    started = time.perf_counter()

    def record(world: World, violations: list[tuple[str, str]], path: tuple[str, ...]) -> None:
        for prop, message in violations:
            found.setdefault(prop, Found(prop, message, path))

    def visit(world: World, path: tuple[str, ...], sleep: frozenset[str]) -> None:
        if symmetry:
            key, canon = world.symmetric()
        else:
            key, canon = world.fingerprint(), {n: n for n in world.run.order}
        enabled = world.run.enabled()
        old = visited.get(key)
        asleep_c = frozenset(canon[n] for n in sleep)
        if old is not None:
            if old <= asleep_c:
                world.run.close()
                return
            # Seen before with a smaller sleep set: only the ops it slept on are new here.
            visited[key] = old & asleep_c
            sleep = sleep | frozenset(n for n in enabled if canon[n] not in old)
        else:
            if max_states is not None and stats.states >= max_states:
                stats.complete = False
                world.run.close()
                return
            visited[key] = asleep_c
            stats.states += 1
            stats.max_depth = max(stats.max_depth, len(path))
        ops = {name: world.run.op(name) for name in enabled}
        asleep = set(sleep)
        todo = [n for n in enabled if n not in sleep]
        for i, name in enumerate(todo):
            child, before = _branch(world, factory, path, i, name, stats)
            record(child, child.check(before), (*path, name))
            child_sleep = (frozenset(q for q in asleep if not ops[q].conflicts(ops[name]))
                           if reduce else frozenset())
            visit(child, (*path, name), child_sleep)
            asleep.add(name)
        if not todo:
            world.run.close()

    first = factory()
    record(first, _initial(first), ())
    visit(first, (), frozenset())
    stats.seconds = time.perf_counter() - started
    return Outcome(stats, found)


def search_bounded(factory: Factory, preemptions: int, *, max_states: int | None = None,
                   symmetry: bool = True, free: frozenset[str] = frozenset()) -> Outcome:
    """Depth-first over every run with at most ``preemptions`` preemptions (CHESS's
    iterative context bounding): switching away from a process that could go on costs one;
    switching when it waits or has finished is free, and so is switching away from a process
    in ``free`` (a background process, such as a planner that runs on its own clock). Used
    where the full space is too large.

    States are remembered with the budget left and the running process; a state is expanded
    again only with more budget. Sleep sets are not combined with the bound (that needs more
    care than it is worth here)."""
    stats = Stats()
    found: dict[str, Found] = {}
    best: dict[Hashable, int] = {}
    distinct: set[Hashable] = set()
    started = time.perf_counter()

    def visit(world: World, path: tuple[str, ...], current: str | None, budget: int) -> None:
        key, canon = world.symmetric() if symmetry else (
            world.fingerprint(), {n: n for n in world.run.order})
        slot = (key, canon[current] if current else None)
        if best.get(slot, -1) >= budget:
            world.run.close()
            return
        if key not in distinct:
            if max_states is not None and len(distinct) >= max_states:
                stats.complete = False
                world.run.close()
                return
            distinct.add(key)
            stats.states += 1
            stats.max_depth = max(stats.max_depth, len(path))
        best[slot] = budget
        enabled = world.run.enabled()
        running = current in enabled and current not in free
        # Going on with the running process first keeps the live world for the cheap branch.
        order = sorted(enabled, key=lambda n: n != current)
        todo = [n for n in order if not (running and n != current and budget == 0)]
        for i, name in enumerate(todo):
            child, before = _branch(world, factory, path, i, name, stats)
            for prop, message in child.check(before):
                found.setdefault(prop, Found(prop, message, (*path, name)))
            visit(child, (*path, name), name,
                  budget - (1 if running and name != current else 0))
        if not todo:
            world.run.close()

    first = factory()
    for prop, message in _initial(first):
        found.setdefault(prop, Found(prop, message, ()))
    visit(first, (), None, preemptions)
    stats.seconds = time.perf_counter() - started
    return Outcome(stats, found)


def shortest(factory: Factory, props: set[str], *, preemptions: int | None = None,
             max_depth: int | None = None, max_states: int | None = None,
             symmetry: bool = True, free: frozenset[str] = frozenset()) -> dict[str, Found]:
    """Breadth-first, so the first violation found of each property in ``props`` has the
    fewest steps (among runs with at most ``preemptions`` preemptions when that is given).
    Stops when all are found, or at ``max_depth`` steps or ``max_states`` states."""
    found: dict[str, Found] = {}
    first = factory()
    for prop, message in _initial(first):
        if prop in props:
            found.setdefault(prop, Found(prop, message, ()))
    first.run.close()
    budget0 = -1 if preemptions is None else preemptions
    best: dict[Hashable, int] = {}
    # A node is a path, the process that ran last and the preemptions left (-1: unbounded).
    frontier: list[tuple[tuple[str, ...], str | None, int]] = [((), None, budget0)]
    depth = 0
    while frontier and props - found.keys():
        if max_depth is not None and depth >= max_depth:
            break
        depth += 1
        level: list[tuple[tuple[str, ...], str | None, int]] = []
        for path, current, budget in frontier:
            base = replay(factory, path)
            enabled = base.run.enabled()
            running = current in enabled and current not in free
            todo = [n for n in enabled if not (running and n != current and budget == 0)]
            for i, name in enumerate(todo):
                child = base if i == 0 else replay(factory, path)
                before = child.observe()
                child.run.step(name)
                for prop, message in child.check(before):
                    if prop in props and prop not in found:
                        found[prop] = Found(prop, message, (*path, name))
                left = budget - 1 if budget > 0 and running and name != current else budget
                key, canon = child.symmetric() if symmetry else (
                    child.fingerprint(), {n: n for n in child.run.order})
                child.run.close()
                slot = (key, canon[name])
                if best.get(slot, -2) < left:
                    best[slot] = left
                    level.append(((*path, name), name, left))
            if not todo:
                base.run.close()
            if max_states is not None and len(best) >= max_states:
                return found
        frontier = level
    return found
