"""The checker's scheduler and search on toy protocols, where the answers can be counted by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from dnsrace.check import explore, scheduler


def op(label: str, *, reads: set[str] | None = None, writes: set[str] | None = None
       ) -> scheduler.Point:
    return scheduler.Point(scheduler.Op(label, frozenset(reads or ()), frozenset(writes or ())))


class Toy(explore.World):
    """Processes that each take ``steps`` points on their own key; nothing is shared."""

    def __init__(self, steps: dict[str, int], distinct_paths: bool) -> None:
        self.distinct_paths = distinct_paths
        self.run = scheduler.Run({name: self.proc(name, n) for name, n in steps.items()})

    @staticmethod
    async def proc(name: str, steps: int) -> None:
        for i in range(steps):
            await op(f"{name}{i}", writes={name})
            await asyncio.sleep(0)  # a bare yield: not a scheduling point

    def fingerprint(self) -> Hashable:
        if self.distinct_paths:  # no two runs merge: the search enumerates interleavings
            return tuple(name for name, _ in self.run.steps)
        return tuple(self.run.position(n) for n in self.run.order)

    def observe(self) -> object:
        return None

    def check(self, before: object) -> list[tuple[str, str]]:
        if self.run.enabled():
            return []
        return [("finished", "".join(op.label for _, op in self.run.steps))]


def runs(steps: dict[str, int]) -> set[str]:
    """Every complete interleaving, by searching with no merging and no reduction."""
    finished: set[str] = set()

    class Recording(Toy):
        def check(self, before: object) -> list[tuple[str, str]]:
            out = super().check(before)
            finished.update(m for _, m in out)
            return out

    explore.search(lambda: Recording(steps, True), reduce=False, symmetry=False)
    return finished


def test_every_interleaving_of_two_tiny_coroutines() -> None:
    # a0 a1 and b0 b1 b2 interleave in C(5, 2) = 10 ways, keeping each process's order.
    got = runs({"a": 2, "b": 3})
    assert len(got) == 10
    assert "a0a1b0b1b2" in got
    assert "b0a0b1a1b2" in got
    assert all(r.index("a0") < r.index("a1") and r.index("b1") < r.index("b2") for r in got)


def test_state_hashing_visits_each_state_once() -> None:
    # The state is the pair of positions: 3 x 4 = 12 states for 2 and 3 steps.
    out = explore.search(lambda: Toy({"a": 2, "b": 3}, False), reduce=False, symmetry=False)
    assert out.stats.states == 12
    assert out.stats.complete


def test_sleep_sets_prune_transitions_not_states() -> None:
    plain = explore.search(lambda: Toy({"a": 2, "b": 3}, False), reduce=False, symmetry=False)
    reduced = explore.search(lambda: Toy({"a": 2, "b": 3}, False), symmetry=False)
    assert reduced.stats.states == plain.stats.states
    assert reduced.stats.transitions < plain.stats.transitions


class Counter(explore.World):
    """Two processes increment a shared counter; ``atomic`` decides whether read and write are
    one point (correct) or two (the planted bug: a lost update)."""

    def __init__(self, atomic: bool) -> None:
        self.x = 0
        self.local: dict[str, int] = {}
        self.run = scheduler.Run({p: self.incr(p, atomic) for p in ("p", "q")})

    async def incr(self, me: str, atomic: bool) -> None:
        if atomic:
            await op("increment x", writes={"x"})
            self.x += 1
            return
        await op("read x", reads={"x"})
        self.local[me] = self.x
        await op("write x", writes={"x"})
        self.x = self.local[me] + 1

    def fingerprint(self) -> Hashable:
        return (self.x, tuple(sorted(self.local.items())),
                tuple(self.run.position(n) for n in self.run.order))

    def observe(self) -> object:
        return self.x

    def check(self, before: object) -> list[tuple[str, str]]:
        if not self.run.enabled() and self.x != 2:
            return [("both-counted", f"x is {self.x}")]
        return []


def test_the_planted_lost_update_is_found_with_the_shortest_trace() -> None:
    out = explore.search(lambda: Counter(atomic=False))
    assert set(out.found) == {"both-counted"}
    short = explore.shortest(lambda: Counter(atomic=False), {"both-counted"})
    path = short["both-counted"].path
    assert len(path) == 4
    assert path[0] != path[1], "both read before either writes"


def test_the_atomic_increment_holds() -> None:
    out = explore.search(lambda: Counter(atomic=True))
    assert out.found == {}
    assert out.stats.complete


def test_a_preemption_bound_of_zero_runs_each_process_to_its_end() -> None:
    out = explore.search_bounded(lambda: Counter(atomic=False), 0)
    assert out.found == {}, "the lost update needs a preemption"
    assert explore.search_bounded(lambda: Counter(atomic=False), 1).found


def test_a_guard_disables_a_process_until_it_holds() -> None:
    flag: list[bool] = []

    async def waiter() -> None:
        await scheduler.Point(guard=lambda: bool(flag), label="waiting")
        await op("after")

    async def setter() -> None:
        await op("set")
        flag.append(True)

    run = scheduler.Run({"w": waiter(), "s": setter()})
    assert run.enabled() == ["s"]
    assert run.position("w") == "waiting"
    run.step("s")
    assert run.enabled() == ["w"]
    run.step("w")
    assert run.enabled() == []
    assert [name for name, _ in run.steps] == ["s", "w"]


def test_ops_on_different_keys_commute_and_wildcards_match() -> None:
    a = scheduler.Op("a", writes=frozenset({"ep:x"}))
    b = scheduler.Op("b", writes=frozenset({"ep:y"}))
    every = scheduler.Op("all", reads=frozenset({"ep:*"}))
    assert not a.conflicts(b)
    assert a.conflicts(every)
    assert every.conflicts(b)
    assert not every.conflicts(scheduler.Op("reader", reads=frozenset({"ep:x"})))
