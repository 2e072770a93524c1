"""The DNS Enactor's protocol, step by step, over abstract stores.

``components.enactor`` runs these steps against the API server (plans) and the DNS etcd
(records); unit tests and the coming deterministic scheduler run them against in-memory stores.
Every step is one awaitable unit, and the only waits are the fault hooks, so the interleavings
that matter are those between steps.

The protocol, as published for the incident:
1. take the newest plan, and check once that it is newer than what is already applied;
2. walk the endpoints in order; each endpoint is a change against its active plan (delete the
   active plan's records exactly, put the new plan's records, move the active marker), retried
   when the store refuses it;
3. after the last endpoint, clean up: delete plans more than ``keep`` serials older.
Deleting a plan removes its records from every endpoint on which it is active
(``remove_plan_records``, run from the DnsPlan finalizer). With the safeguards off this is the
incident's protocol; each safeguard changes one step (see ``core.safeguards``).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable

from dnsrace.core import plans, stores
from dnsrace.core.safeguards import Safeguards

Hook = Callable[[str, str | None], Awaitable[None]]
"""A fault injection point: ``await hook(step, endpoint)``; steps are those of the Fault CRD."""


async def no_fault(step: str, endpoint: str | None) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class StoredPlan:
    plan: plans.Plan
    terminating: bool = False
    """Deletion has started (finalizers still running); the plan can still be read."""


class PlanStore(abc.ABC):
    """Where plans live: the API server in production, a dict under test."""

    @abc.abstractmethod
    async def newest(self) -> plans.Plan | None:
        """The highest-serial plan that is not being deleted."""

    @abc.abstractmethod
    async def get(self, serial: int) -> StoredPlan | None:
        """The plan with ``serial`` while it exists (also while terminating)."""

    @abc.abstractmethod
    async def serials(self) -> list[int]:
        """Serials of every plan that exists and is not being deleted."""

    @abc.abstractmethod
    async def delete(self, serial: int) -> None: ...


class MemoryPlanStore(PlanStore):
    """Plans in a dict; ``delete`` calls ``on_delete`` like a finalizer would."""

    def __init__(self) -> None:
        self.plans: dict[int, StoredPlan] = {}
        self.on_delete: Callable[[plans.Plan], Awaitable[None]] | None = None

    def add(self, plan: plans.Plan) -> None:
        self.plans[plan.serial] = StoredPlan(plan)

    async def newest(self) -> plans.Plan | None:
        live = [s for s, p in self.plans.items() if not p.terminating]
        return self.plans[max(live)].plan if live else None

    async def get(self, serial: int) -> StoredPlan | None:
        return self.plans.get(serial)

    async def serials(self) -> list[int]:
        return sorted(s for s, p in self.plans.items() if not p.terminating)

    async def delete(self, serial: int) -> None:
        stored = self.plans.get(serial)
        if stored is None:
            return
        self.plans[serial] = StoredPlan(stored.plan, terminating=True)
        if self.on_delete is not None:
            await self.on_delete(stored.plan)
        self.plans.pop(serial, None)


class WriterLock(abc.ABC):
    """The single-writer safeguard's lock: one holder at a time, lost when not renewed."""

    @abc.abstractmethod
    async def acquire(self, holder: str) -> str | None:
        """Take or renew the lock; None on success, else who holds it."""

    @abc.abstractmethod
    async def release(self, holder: str) -> None: ...


class MemoryWriterLock(WriterLock):
    def __init__(self) -> None:
        self.holder: str | None = None

    async def acquire(self, holder: str) -> str | None:
        if self.holder in (None, holder):
            self.holder = holder
            return None
        return self.holder

    async def release(self, holder: str) -> None:
        if self.holder == holder:
            self.holder = None


class Result(enum.Enum):
    APPLIED = "Applied"
    UNCHANGED = "Unchanged"
    SKIPPED = "Skipped"
    HEALED = "Healed"
    BLOCKED = "Blocked"


@dataclasses.dataclass(frozen=True)
class Outcome:
    endpoint: str
    result: Result
    reason: str = ""
    message: str = ""
    attempts: int = 1


@dataclasses.dataclass
class CycleReport:
    serial: int
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    cleaned: list[int] = dataclasses.field(default_factory=list)
    skipped: str = ""
    """Why the plan was not applied at all (the one-time check, or the plan vanished)."""

    @property
    def blocked(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result is Result.BLOCKED]

    @property
    def complete(self) -> bool:
        return not self.skipped and not self.blocked

    def verdict(self) -> tuple[str, str, str]:
        """(phase, reason, message) for logs, status and Events: what the cycle really did.

        A plan that fencing skipped on every endpoint it would have changed (newer plans were
        active there) is "Skipped", never "Applied", though the cycle is complete.
        """
        if self.skipped:
            return "Skipped", "NotApplied", self.skipped
        if self.blocked:
            return ("Blocked", self.blocked[0].reason,
                    "; ".join(o.message for o in self.blocked))
        written = [o for o in self.outcomes if o.result in (Result.APPLIED, Result.HEALED)]
        passed = [o for o in self.outcomes if o.result is Result.SKIPPED]
        if passed and not written:
            return ("Skipped", "NewerPlanActive",
                    f"plan {self.serial} skipped: a newer plan is active on "
                    f"{len(passed)} of {len(self.outcomes)} endpoints")
        message = f"applied {len(written)} of {len(self.outcomes)} endpoints"
        if passed:
            message += f" ({len(passed)} skipped: a newer plan was active)"
        healed = [o.endpoint for o in written if o.result is Result.HEALED]
        if healed:
            message += f"; healed {', '.join(healed)}"
        if self.cleaned:
            message += f"; deleted plans {self.cleaned[0]}..{self.cleaned[-1]}"
        return "Applied", "Applied", message


class PlanGone(Exception):
    """The plan being applied was deleted while the enactor walked it."""


class StillActive(Exception):
    """protect-active: the plan is active on an endpoint, so its records stay for now."""


class Enactor:
    """One independent enactor. It shares nothing with the others but the two stores."""

    def __init__(
        self,
        name: str,
        record_store: stores.RecordStore,
        plan_store: PlanStore,
        safeguards: Safeguards,
        *,
        keep: int = 10,
        retries: int = 3,
        retry_backoff: float = 0.05,
        hook: Hook = no_fault,
        lock: WriterLock | None = None,
    ) -> None:
        self.name = name
        self.records = record_store
        self.plans = plan_store
        self.safeguards = safeguards
        self.keep = keep
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.hook = hook
        self.lock = lock or MemoryWriterLock()
        self.last_taken = 0
        """Serial of the last plan this enactor took; it never takes the same plan twice."""

    # -- step 1: take the newest plan, check once ---------------------------------------------

    async def take(self) -> plans.Plan | None:
        """The newest plan, if this enactor has not taken it yet."""
        plan = await self.plans.newest()
        if plan is None or plan.serial <= self.last_taken:
            return None
        self.last_taken = plan.serial
        return plan

    async def newer_than_applied(self, plan: plans.Plan) -> bool:
        """The one-time check: is ``plan`` newer than every plan applied anywhere right now?"""
        markers = await self.records.markers()
        applied = max((m.serial for m, _ in markers.values()), default=0)
        return plan.serial > applied

    # -- step 2: one endpoint ----------------------------------------------------------------

    def _marker(self, plan: plans.Plan) -> stores.ActiveMarker:
        return stores.ActiveMarker(serial=plan.serial, enactor=self.name, uid=plan.uid)

    async def _heal(self, state: stores.EndpointState, why: str) -> Outcome:
        """self-heal: rebuild the endpoint from the newest plan, whatever it holds now."""
        newest = await self.plans.newest()
        endpoint = newest.endpoint(state.name) if newest else None
        if newest is None or endpoint is None:
            return Outcome(state.name, Result.BLOCKED, "NoPlanToHealFrom", why)
        change = stores.Change(
            name=state.name, delete_all=True, put=endpoint.records(newest.serial),
            marker=self._marker(newest), fence_revision=state.marker_revision,
        )
        await self.records.apply(change)
        return Outcome(state.name, Result.HEALED, "Reconciled",
                       f"{why}; rebuilt from plan {newest.serial}")

    async def _change_for(
        self, plan: plans.Plan, endpoint: plans.Endpoint, state: stores.EndpointState
    ) -> stores.Change | Outcome:
        """The change batch that moves ``state`` to ``plan``, or the outcome when there is none."""
        sg = self.safeguards
        new = endpoint.records(plan.serial)
        fence = state.marker_revision if sg.fencing else None
        if state.marker is None:
            return stores.Change(name=endpoint.name, put=new, marker=self._marker(plan),
                                 delete_all=bool(state.records), fence_revision=fence)
        active_serial = state.marker.serial
        if active_serial == plan.serial:
            return Outcome(endpoint.name, Result.UNCHANGED)
        if sg.fencing and active_serial > plan.serial:
            return Outcome(endpoint.name, Result.SKIPPED, "NewerPlanActive",
                           f"plan {active_serial} is active; {plan.serial} would go backwards")
        active = await self.plans.get(active_serial)
        if active is None:
            why = (f"endpoint {endpoint.name}: its active plan {active_serial} no longer "
                   f"exists, so the change against it cannot be computed")
            if sg.self_heal:
                return await self._heal(state, why)
            return Outcome(endpoint.name, Result.BLOCKED, "ActivePlanMissing", why)
        old_endpoint = active.plan.endpoint(endpoint.name)
        old = old_endpoint.records(active_serial) if old_endpoint else {}
        return stores.Change(name=endpoint.name, delete=old, put=new,
                             marker=self._marker(plan), fence_revision=fence)

    async def apply_endpoint(self, plan: plans.Plan, endpoint: plans.Endpoint) -> Outcome:
        """Apply one endpoint, retrying a refused change; raises PlanGone if the plan vanished."""
        # The CRD and ``Plan.check`` refuse such a plan before any enactor sees it; plans built
        # in code (the checker, tests, a future source) reach this check only.
        if self.safeguards.no_empty and not any(t.weight > 0 for t in endpoint.targets):
            return Outcome(endpoint.name, Result.BLOCKED, "WouldEmpty",
                           f"plan {plan.serial} has no usable target for {endpoint.name}")
        last_error = ""
        for attempt in range(1, self.retries + 2):
            await self.hook("endpoint-write", endpoint.name)
            # The plan is re-read before each write, as the enactor fetches the endpoint's entry;
            # one being deleted is not written.
            current = await self.plans.get(plan.serial)
            if current is None or current.terminating:
                raise PlanGone(f"plan {plan.serial} was deleted while {self.name} applied it")
            # Between the check and the write: where the published race's enactor was slow.
            await self.hook("endpoint-read", endpoint.name)
            state = await self.records.read(endpoint.name)
            try:
                # A heal inside _change_for writes too; its refusal is retried like any other.
                change = await self._change_for(plan, endpoint, state)
                if isinstance(change, Outcome):
                    return dataclasses.replace(change, attempts=attempt)
                # The change is decided; sending it is the slow call (Route 53's).
                await self.hook("endpoint-change", endpoint.name)
                await self.records.apply(change)
                return Outcome(endpoint.name, Result.APPLIED, attempts=attempt)
            except stores.ChangeRejected as exc:
                last_error = str(exc)
                await asyncio.sleep(self.retry_backoff * attempt)
        if self.safeguards.self_heal:
            state = await self.records.read(endpoint.name)
            try:
                return await self._heal(state, last_error)
            except stores.ChangeRejected as exc:
                last_error = str(exc)
        return Outcome(endpoint.name, Result.BLOCKED, "ChangeRejected",
                       f"{last_error} (after {self.retries + 1} attempts)", self.retries + 1)

    # -- step 3: clean-up --------------------------------------------------------------------

    async def cleanup(self, applied: plans.Plan) -> list[int]:
        """Delete plans more than ``keep`` serials older than ``applied``.

        With protect-active the clean-up skips plans active anywhere, but it reads the markers
        and then deletes, not atomically: a stale write that lands in between makes a deleted
        plan active. What protects the records then is the finalizer
        (``remove_plan_records`` raises ``StillActive`` and the plan stays Terminating until no
        endpoint is on it); the clean-up's check only saves the finalizer that wait.
        """
        await self.hook("clean-up", None)
        doomed = [s for s in await self.plans.serials() if s < applied.serial - self.keep]
        if self.safeguards.protect_active:
            active = {m.serial for m, _ in (await self.records.markers()).values()}
            doomed = [s for s in doomed if s not in active]
        for serial in doomed:
            await self.plans.delete(serial)
        return doomed

    # -- the whole cycle ---------------------------------------------------------------------

    async def cycle(self) -> CycleReport | None:
        """Take the newest plan and apply it; None when there is nothing new."""
        plan = await self.take()
        if plan is None:
            return None
        report = CycleReport(serial=plan.serial)
        if self.safeguards.single_writer:
            holder = await self.lock.acquire(self.name)
            if holder is not None:
                report.skipped = f"the writer lease is held by {holder}"
                return report
        try:
            await self._apply(plan, report)
        finally:
            if self.safeguards.single_writer:
                await self.lock.release(self.name)
        return report

    async def _apply(self, plan: plans.Plan, report: CycleReport) -> None:
        await self.hook("before-apply", None)
        if not await self.newer_than_applied(plan):
            report.skipped = f"plan {plan.serial} is not newer than the applied plan"
            return
        try:
            for endpoint in plan.endpoints:
                report.outcomes.append(await self.apply_endpoint(plan, endpoint))
        except PlanGone as exc:
            report.skipped = str(exc)
            return
        if report.complete:
            report.cleaned = await self.cleanup(plan)

    # -- deleting a plan (the finalizer) -----------------------------------------------------

    async def remove_plan_records(self, plan: plans.Plan) -> list[str]:
        """Remove ``plan``'s records from every endpoint where it is active.

        The marker stays: the endpoint keeps pointing at the deleted plan, which is the
        inconsistent state that blocks later changes in the incident. Returns the endpoints
        whose records were removed.
        """
        prefix = f"p{plan.serial}-"
        removed = []
        for name, (marker, revision) in (await self.records.markers()).items():
            # The UID, when both carry one, tells this plan from an earlier one of the same
            # serial (a namespace's plans recreated, or a lab reset).
            if marker.serial != plan.serial or (marker.uid and plan.uid
                                                and marker.uid != plan.uid):
                continue
            if self.safeguards.protect_active:
                raise StillActive(f"plan {plan.serial} is active on {name}")
            state = await self.records.read(name)
            own = {leaf: rec for leaf, rec in state.records.items() if leaf.startswith(prefix)}
            rest = [rec for leaf, rec in state.records.items() if leaf not in own]
            if self.safeguards.no_empty and not any(r.host for r in rest):
                continue
            try:
                await self.records.apply(
                    stores.Change(name=name, delete=own, fence_revision=revision)
                )
            except stores.ChangeRejected:
                continue  # the endpoint moved on since the read: nothing of this plan to remove
            removed.append(name)
        return removed


async def repair(
    record_store: stores.RecordStore, plan_store: PlanStore, operator: str = "repair"
) -> list[tuple[str, int | None, int]]:
    """The manual intervention: put every endpoint of the newest plan on it, whatever it holds.

    Returns (endpoint, serial it was on, serial it is on now) for every endpoint changed.
    """
    newest = await plan_store.newest()
    if newest is None:
        return []
    changed = []
    for endpoint in newest.endpoints:
        state = await record_store.read(endpoint.name)
        has_own = any(leaf.startswith(f"p{newest.serial}-") for leaf in state.records)
        if state.marker and state.marker.serial == newest.serial and has_own:
            continue
        await record_store.apply(stores.Change(
            name=endpoint.name, delete_all=True, put=endpoint.records(newest.serial),
            marker=stores.ActiveMarker(newest.serial, operator, newest.uid),
            fence_revision=state.marker_revision,
        ))
        changed.append((endpoint.name, state.marker.serial if state.marker else None,
                        newest.serial))
    return changed

