"""The enactor protocol as a checkable world: the project's own ``core.enacting.Enactor`` run by
the deterministic scheduler over in-memory stores whose every operation is a scheduling point.

Called by ``check.explore`` (through ``factory``) for ``dnsrace check``. Nothing here re-states
the protocol: the enactors' cycles, their clean-up and their finalizers are the production
methods; this module only supplies the stores, the processes around those methods, and the
fingerprint of a state.

Processes, as in the lab:
- ``planner`` adds plans 1..P, one per step (real ``Plan`` objects from ``core.planning``, each
  serial on its own load-balancer address, so plans' records differ);
- one enactor process per enactor runs ``Enactor.cycle`` whenever a plan newer than the one it
  last took exists (production polls; polls that find nothing new change nothing, so they are
  left out), catching a failed cycle as ``components.enactor`` does;
- one finalizer process per (enactor, plan): deleting a plan only marks it terminating, with a
  finalizer per enactor, as the DnsPlan finalizers do. Each finalizer runs that enactor's
  ``remove_plan_records`` and then drops its finalizer; the plan is gone when the last one is
  dropped. Under protect-active ``StillActive`` keeps the finalizer and it tries again once the
  records have changed (a retry on unchanged records would give the same answer).

Each endpoint lives in its own ``MemoryRecordStore``: fencing compares a marker's revision only
with an earlier revision of the same marker, so per-endpoint revisions behave like etcd's global
one, and writes to different endpoints then commute exactly, which the partial-order reduction
needs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Hashable

from dnsrace.check import explore, properties, scheduler
from dnsrace.core import enacting, planning, plans, records, stores
from dnsrace.core.safeguards import Safeguards

ZONE = "sim.internal"
PLANNER = "planner"


@dataclasses.dataclass(frozen=True)
class Bounds:
    enactors: int = 2
    plans: int = 3
    endpoints: int = 2
    keep: int = 1
    """Clean-up deletes plans more than ``keep`` serials older than the one applied."""
    retries: int = 1
    """Retries of a refused endpoint change (production's default is 3)."""
    safeguards: Safeguards = dataclasses.field(default_factory=Safeguards)

    def __post_init__(self) -> None:
        if not 1 <= self.enactors <= 8:
            raise ValueError("enactors: 1 to 8")
        if not 1 <= self.plans <= 50:
            raise ValueError("plans: 1 to 50")
        if not 1 <= self.endpoints <= len(planning.lab_endpoints(ZONE)):
            raise ValueError(f"endpoints: 1 to {len(planning.lab_endpoints(ZONE))}")
        if self.keep < 0 or self.retries < 0:
            raise ValueError("keep and retries cannot be negative")


def endpoint_names(count: int) -> list[str]:
    """The last ``count`` lab endpoints, so the regional endpoint is always there, last."""
    return planning.lab_endpoints(ZONE)[-count:]


def short(name: str) -> str:
    return name.removesuffix("." + ZONE)


def enactor_name(i: int) -> str:
    return f"enactor-{chr(ord('a') + i)}"


@functools.cache
def make_plan(serial: int, endpoints: tuple[str, ...]) -> plans.Plan:
    """Plans are immutable, so every replay of a run shares them."""
    node = planning.Node(name=f"lb-{serial}", address=f"127.0.10.{serial}", capacity=100)
    plan = planning.make_plan(serial, list(endpoints), [node], per_endpoint=1)
    assert plan is not None
    return plan


class History:
    """A digest of what one process has observed since its last reset.

    A process is deterministic, so its local state is a function of where it started (the reset
    value) and the results of its store calls since: the digest stands for that local state in
    the fingerprint. Processes reset it where their local state is small (an idle enactor holds
    only the serial it last took).
    """

    def __init__(self) -> None:
        self.digest = 0

    def reset(self, base: Hashable) -> None:
        self.digest = hash(("reset", base))

    def add(self, entry: Hashable) -> None:
        self.digest = hash((self.digest, entry))


@dataclasses.dataclass
class Entry:
    plan: plans.Plan
    finalizers: frozenset[str] = frozenset()
    """Finalizers still to run; a non-empty set once deletion has started."""
    terminating: bool = False


class Shared:
    """The state every process sees: the DNS store, the plans, the writer lock."""

    def __init__(self, endpoints: list[str], finalizers: list[str], narrate: bool) -> None:
        self.narrate = narrate
        """Keep a line per step for the counterexample table (not while searching)."""
        self.endpoints = endpoints
        self.finalizers = frozenset(finalizers)
        self.records = {name: stores.MemoryRecordStore() for name in endpoints}
        self.plans: dict[int, Entry] = {}
        self.lock = enacting.MemoryWriterLock()
        self.planner_done = False
        self._cache: dict[str, tuple[int, tuple[Hashable, ...], int | None, bool]] = {}
        self.notes: list[str] = []
        """What each step did, one line per step, for the counterexample table."""

    def endpoint(self, name: str) -> tuple[int, tuple[Hashable, ...], int | None, bool]:
        """The endpoint's (revision, contents, active serial, has an address), cached per
        revision. Contents leave out which enactor wrote the marker: no step reads that."""
        store = self.records[name]
        cached = self._cache.get(name)
        if cached is not None and cached[0] == store.revision:
            return cached
        marker_key = records.active_key(name)
        contents: list[Hashable] = []
        serial = None
        addressed = False
        for key, (value, rev) in sorted(store.kv.items()):
            if key == marker_key:
                serial = stores.ActiveMarker.decode(value).serial
                contents.append(("marker", serial, rev))
            else:
                addressed = addressed or b'"host"' in value
                contents.append((key, value, rev))
        view = (store.revision, tuple(contents), serial, addressed)
        self._cache[name] = view
        return view

    def note(self, text: str) -> None:
        if self.narrate:
            self.notes.append(text)

    def newest(self) -> int:
        return max((s for s, e in self.plans.items() if not e.terminating), default=0)

    def records_version(self) -> int:
        return sum(store.revision for store in self.records.values())


def _ep(name: str) -> frozenset[str]:
    return frozenset({f"ep:{name}"})


ALL_EPS = frozenset({"ep:*"})
ALL_PLANS = frozenset({"plan:*"})


def _plan(serial: int) -> frozenset[str]:
    return frozenset({f"plan:{serial}"})


def _state_note(state: stores.EndpointState) -> str:
    on = f"plan {state.marker.serial}" if state.marker else "no plan"
    addresses = sum(1 for r in state.records.values() if r.host)
    return f"on {on}, {addresses} address(es), marker rev {state.marker_revision}"


class RecordView(stores.RecordStore):
    """One process's door to the DNS store: each call is a scheduling point."""

    def __init__(self, shared: Shared, history: History) -> None:
        self.shared = shared
        self.history = history

    async def read(self, name: str) -> stores.EndpointState:
        await scheduler.Point(scheduler.Op(f"read {short(name)}", reads=_ep(name)))
        state = await self.shared.records[name].read(name)
        self.history.add(("read", name, self.shared.endpoint(name)[1]))
        if self.shared.narrate:
            self.shared.note(_state_note(state))
        return state

    async def apply(self, change: stores.Change) -> None:
        what = ("delete all, " if change.delete_all else
                f"delete {len(change.delete)}, " if change.delete else "")
        what += f"put {len(change.put)}" if change.put else "put nothing"
        if change.marker is not None:
            what += f", mark plan {change.marker.serial}"
        if change.fence_revision is not None:
            what += f", if marker rev {change.fence_revision}"
        await scheduler.Point(scheduler.Op(f"write {short(change.name)}: {what}",
                                           writes=_ep(change.name)))
        try:
            await self.shared.records[change.name].apply(change)
        except stores.ChangeRejected:
            self.history.add(("apply", change.name, False))
            self.shared.note("refused")
            raise
        self.history.add(("apply", change.name, True))
        if self.shared.narrate:
            self.shared.note(_state_note(await self.shared.records[change.name].read(change.name)))

    async def markers(self) -> dict[str, tuple[stores.ActiveMarker, int]]:
        await scheduler.Point(scheduler.Op("read all markers", reads=ALL_EPS))
        out: dict[str, tuple[stores.ActiveMarker, int]] = {}
        for store in self.shared.records.values():
            out.update(await store.markers())
        summary = tuple(sorted((n, m.serial, rev) for n, (m, rev) in out.items()))
        self.history.add(("markers", summary))
        self.shared.note(
            ", ".join(f"{short(n)}: {s}" for n, s, _ in summary) or "no markers")
        return out


class PlanView(enacting.PlanStore):
    """One process's door to the plans (the DnsPlan objects)."""

    def __init__(self, shared: Shared, history: History) -> None:
        self.shared = shared
        self.history = history

    async def newest(self) -> plans.Plan | None:
        await scheduler.Point(scheduler.Op("read newest plan", reads=ALL_PLANS))
        serial = self.shared.newest()
        self.history.add(("newest", serial))
        self.shared.note(f"plan {serial}" if serial else "none")
        return self.shared.plans[serial].plan if serial else None

    async def get(self, serial: int) -> enacting.StoredPlan | None:
        await scheduler.Point(scheduler.Op(f"read plan {serial}", reads=_plan(serial)))
        entry = self.shared.plans.get(serial)
        self.history.add(("get", serial, entry.terminating if entry else None))
        self.shared.note("gone" if entry is None else
                                 "terminating" if entry.terminating else "exists")
        if entry is None:
            return None
        return enacting.StoredPlan(entry.plan, terminating=entry.terminating)

    async def serials(self) -> list[int]:
        await scheduler.Point(scheduler.Op("list plans", reads=ALL_PLANS))
        out = sorted(s for s, e in self.shared.plans.items() if not e.terminating)
        self.history.add(("serials", tuple(out)))
        self.shared.note(", ".join(map(str, out)) or "none")
        return out

    async def delete(self, serial: int) -> None:
        await scheduler.Point(scheduler.Op(f"delete plan {serial}", writes=_plan(serial)))
        entry = self.shared.plans.get(serial)
        if entry is not None and not entry.terminating:
            entry.terminating = True
            entry.finalizers = self.shared.finalizers
        self.history.add(("delete", serial))
        self.shared.note("terminating, finalizers pending" if entry else "gone")


class LockView(enacting.WriterLock):
    """The single-writer lock; acquiring and releasing are scheduling points."""

    def __init__(self, shared: Shared, history: History) -> None:
        self.shared = shared
        self.history = history

    async def acquire(self, holder: str) -> str | None:
        await scheduler.Point(scheduler.Op("take writer lock", writes=frozenset({"lock"})))
        other = await self.shared.lock.acquire(holder)
        self.history.add(("acquire", other is None))
        self.shared.note(f"held by {other}" if other else "taken")
        return other

    async def release(self, holder: str) -> None:
        await scheduler.Point(scheduler.Op("release writer lock", writes=frozenset({"lock"})))
        await self.shared.lock.release(holder)
        self.history.add(("release",))
        self.shared.note("released")


async def _planner(shared: Shared, count: int) -> None:
    for serial in range(1, count + 1):
        await scheduler.Point(scheduler.Op(f"add plan {serial}", writes=_plan(serial)))
        shared.plans[serial] = Entry(make_plan(serial, tuple(shared.endpoints)))
        shared.note("created")
    shared.planner_done = True


async def _enactor(shared: Shared, enactor: enacting.Enactor, history: History) -> None:
    while True:
        history.reset(("idle", enactor.last_taken))
        await scheduler.Point(
            guard=lambda: shared.newest() > enactor.last_taken or shared.planner_done,
            label="idle")
        if shared.newest() <= enactor.last_taken:
            return  # the planner is done and nothing new will come
        try:
            await enactor.cycle()
        except Exception as exc:  # components.enactor logs it and polls again
            history.add(("failed", type(exc).__name__))


def _changed(shared: Shared, seen: int) -> bool:
    return shared.records_version() != seen


async def _finalizer(shared: Shared, enactor: enacting.Enactor, history: History,
                     serial: int) -> None:
    def pending() -> bool:
        entry = shared.plans.get(serial)
        return entry is not None and enactor.name in entry.finalizers

    history.reset(("waiting", serial))
    await scheduler.Point(guard=pending, label="waiting")
    plan = shared.plans[serial].plan  # kopf hands the finalizer the object's body
    while True:
        seen = shared.records_version()
        history.reset(("finalizing", serial, seen))
        try:
            await enactor.remove_plan_records(plan)
            break
        except enacting.StillActive:
            history.reset(("kept", serial, seen))
            await scheduler.Point(guard=functools.partial(_changed, shared, seen), label="kept")
    await scheduler.Point(scheduler.Op(f"drop finalizer of plan {serial}", writes=_plan(serial)))
    entry = shared.plans[serial]
    entry.finalizers = entry.finalizers - {enactor.name}
    if entry.finalizers:
        shared.note(f"{len(entry.finalizers)} finalizer(s) left")
    else:
        del shared.plans[serial]
        shared.note(f"plan {serial} deleted")


class EnactorWorld(explore.World):
    """One run of the planner, the enactors and their finalizers within ``bounds``."""

    def __init__(self, bounds: Bounds, narrate: bool = False) -> None:
        self.bounds = bounds
        self.names = names = [enactor_name(i) for i in range(bounds.enactors)]
        self.shared = Shared(endpoint_names(bounds.endpoints), names, narrate)
        self.histories: dict[str, History] = {}
        processes: dict[str, scheduler.Process] = {
            PLANNER: _planner(self.shared, bounds.plans)}
        for name in names:
            processes[name] = _enactor(self.shared, self._enactor(name, name), self.histories[name])
        for name in names:
            for serial in range(1, bounds.plans + 1):
                proc = f"{name}/finalizer-{serial}"
                processes[proc] = _finalizer(self.shared, self._enactor(name, proc),
                                             self.histories[proc], serial)
        self.run = scheduler.Run(processes)

    def _enactor(self, name: str, proc: str) -> enacting.Enactor:
        history = self.histories.setdefault(proc, History())
        return enacting.Enactor(
            name, RecordView(self.shared, history), PlanView(self.shared, history),
            self.bounds.safeguards, keep=self.bounds.keep, retries=self.bounds.retries,
            retry_backoff=0, hook=enacting.no_fault, lock=LockView(self.shared, history))

    def _shared_key(self) -> Hashable:
        s = self.shared
        return (
            tuple(s.endpoint(name)[:2] for name in s.endpoints),
            tuple((serial, e.terminating) for serial, e in sorted(s.plans.items())),
            s.lock.holder is not None,
            self.run.position(PLANNER),
        )

    def _enactor_key(self, name: str) -> Hashable:
        """Everything about one enactor and its finalizers, without its name."""
        procs = [name, *(f"{name}/finalizer-{s}" for s in range(1, self.bounds.plans + 1))]
        return (
            tuple((self.run.position(p), self.histories[p].digest) for p in procs),
            tuple(name in e.finalizers for _, e in sorted(self.shared.plans.items())),
            self.shared.lock.holder == name,
        )

    def fingerprint(self) -> Hashable:
        return self._shared_key(), tuple(self._enactor_key(n) for n in self.names)

    def symmetric(self) -> tuple[Hashable, dict[str, str]]:
        """Enactors run the same code and differ only by name, so states that differ by a
        renaming of the enactors are one state: sort the enactors by what they hold."""
        keyed = sorted((self._enactor_key(n), n) for n in self.names)
        canon = {PLANNER: PLANNER}
        for rank, (_, name) in enumerate(keyed):
            canon[name] = f"#{rank}"
            for serial in range(1, self.bounds.plans + 1):
                canon[f"{name}/finalizer-{serial}"] = f"#{rank}/finalizer-{serial}"
        return (self._shared_key(), tuple(k for k, _ in keyed)), canon

    def observe(self) -> properties.Snapshot:
        s = self.shared
        views = {name: s.endpoint(name) for name in s.endpoints}
        return properties.Snapshot(
            active={n: v[2] for n, v in views.items()},
            addressed={n: v[3] for n, v in views.items()},
            plans=frozenset(s.plans),
        )

    def check(self, before: object) -> list[tuple[str, str]]:
        assert isinstance(before, properties.Snapshot)
        after = self.observe()
        out = properties.after_step(before, after)
        if not self.run.enabled():
            out += properties.at_rest(after, self.shared.newest(), short)
        return [(p, m.replace("." + ZONE, "")) for p, m in out]

    def table(self) -> list[tuple[int, str, str, str]]:
        """The steps so far: (number, process, what it did, what it saw or left)."""
        return [(i + 1, proc, op.label, note) for i, ((proc, op), note)
                in enumerate(zip(self.run.steps, self.shared.notes, strict=True))]


def factory(bounds: Bounds, narrate: bool = False) -> explore.Factory:
    return lambda: EnactorWorld(bounds, narrate)
