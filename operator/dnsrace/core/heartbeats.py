"""Which enactors' finalizers another enactor may finish: those whose heartbeat expired.

Every enactor puts its own finalizer on every plan, so a deleted plan goes only when each enactor
has removed that plan's records and dropped its entry. An enactor that died for good (or was
scaled away) would hold every plan it ever saw Terminating. So each enactor renews a heartbeat
(a Lease of its own, ``kube.leases.Heartbeat``), and on each relist the others finish the
finalizer of any enactor whose heartbeat is missing or expired: the same idempotent step
(``Enactor.remove_plan_records``), then that enactor's entry removed. Pure: the enactor passes
the heartbeats it read and the time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

FINALIZER_SUFFIX = ".dnsrace.io/finalizer"


def finalizer_of(enactor: str) -> str:
    return enactor + FINALIZER_SUFFIX


def owner_of(finalizer: str) -> str | None:
    """The enactor whose finalizer this is; None for anyone else's (kopf's, a user's)."""
    if not finalizer.endswith(FINALIZER_SUFFIX) or "/" in finalizer.removesuffix(
            FINALIZER_SUFFIX):
        return None
    return finalizer.removesuffix(FINALIZER_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    renewed: float
    """Unix time of the last renewal."""
    duration: float
    """Seconds it is valid after a renewal."""

    def expired(self, now: float) -> bool:
        return now > self.renewed + self.duration


def orphaned(finalizers: Iterable[str], me: str, beats: Mapping[str, Heartbeat | None],
             now: float) -> list[str]:
    """Enactors (other than ``me``) holding one of ``finalizers`` whose heartbeat is missing
    (None, or absent from ``beats``) or expired at ``now``."""
    out = []
    for fin in finalizers:
        owner = owner_of(fin)
        if owner is None or owner == me:
            continue
        beat = beats.get(owner)
        if beat is None or beat.expired(now):
            out.append(owner)
    return sorted(out)
