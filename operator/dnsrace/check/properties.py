"""The properties ``dnsrace check`` holds the enactor protocol to, each with a name.

Called by ``check.model`` after every step of a run. Each property is a plain function of what
the DNS store and the plan store hold (a ``Snapshot``), before and after one step:

- ``active-plan-exists``: no endpoint's active plan has been deleted (the invariant of the
  published Spin model). A plan whose deletion has started but whose finalizers have not all
  run still exists: it can be read, and with protect-active it keeps its records.
- ``never-empty``: a step never takes an endpoint's last address away.
- ``serial-monotonic``: a step never moves an endpoint's active serial down (or removes it).
- ``not-blocked``: once nothing can move (the planner has stopped and every enactor and
  finalizer is idle), every endpoint is on the newest plan with addresses: the automation
  repaired itself, with no ``dnsrace repair``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

ACTIVE_PLAN_EXISTS = "active-plan-exists"
NEVER_EMPTY = "never-empty"
SERIAL_MONOTONIC = "serial-monotonic"
NOT_BLOCKED = "not-blocked"
NAMES = (ACTIVE_PLAN_EXISTS, NEVER_EMPTY, SERIAL_MONOTONIC, NOT_BLOCKED)

@dataclasses.dataclass(frozen=True)
class Snapshot:
    active: Mapping[str, int | None]
    """Endpoint -> the serial of its active plan, None without a marker."""
    addressed: Mapping[str, bool]
    """Endpoint -> whether it has at least one address record."""
    plans: frozenset[int]
    """Serials of the plans that exist (terminating ones included)."""


def after_step(before: Snapshot, after: Snapshot) -> list[tuple[str, str]]:
    out = []
    for name, serial in after.active.items():
        if serial is not None and serial not in after.plans:
            out.append((ACTIVE_PLAN_EXISTS, f"{name} is on plan {serial}, which was deleted"))
        if before.addressed[name] and not after.addressed[name]:
            out.append((NEVER_EMPTY, f"{name} has no address left"))
        old = before.active[name]
        if old is not None and (serial is None or serial < old):
            out.append((SERIAL_MONOTONIC, f"{name} went from plan {old} to plan {serial}"))
    return out


def at_rest(now: Snapshot, newest: int, short: Callable[[str], str] = str
            ) -> list[tuple[str, str]]:
    stuck = [f"{short(n)} on plan {s}" + ("" if now.addressed[n] else " with no address")
             for n, s in now.active.items() if s != newest or not now.addressed[n]]
    if not stuck:
        return []
    return [(NOT_BLOCKED, f"at rest, not on the newest plan {newest}: {'; '.join(stuck)}")]
