"""The named safeguards (DESIGN.md section 4). All off reproduces the incident.

Parsed once from ``--safeguards`` / ``DNSRACE_SAFEGUARDS`` and passed to the enactor; the names are
the user-facing spelling, checked here so an unknown name is refused before anything runs.
"""

from __future__ import annotations

import dataclasses

CASCADE = ("dwfm-throttle", "propagation-throttle", "velocity-control")
"""The cascade's safeguards (docs/cascade.md): DWFM's admission by queue size, the Network
Manager's rate limiting, the NLB's cap on capacity removed per interval."""
NAMES = ("fencing", "protect-active", "no-empty", "self-heal", "single-writer", "serve-stale",
         *CASCADE)
ON = ("fencing", "protect-active", "no-empty", "self-heal", "serve-stale", *CASCADE)
"""What ``on`` switches on; single-writer is optional, as in the design."""
ENACTOR = NAMES[:5]
"""The safeguards of the control loop; serve-stale belongs to the DNS data plane."""


@dataclasses.dataclass(frozen=True)
class Safeguards:
    fencing: bool = False
    """Endpoint writes compare-and-swap the active marker and only move it forward."""
    protect_active: bool = False
    """Clean-up never deletes a plan active on any endpoint; its finalizer waits until it is not."""
    no_empty: bool = False
    """Never leave an endpoint without address records, neither by a write nor by a deletion."""
    self_heal: bool = False
    """A missing active plan, or records that no longer match it, lead to a full reconcile of the
    endpoint from the newest plan instead of a blocked enactor."""
    single_writer: bool = False
    """Enactors hold one Kubernetes Lease while they apply a plan; the others skip meanwhile.
    A holder that cannot renew (paused) loses it, so it does not replace fencing."""
    serve_stale: bool = False
    """DNS clients ask CoreDNS's serve-stale port: while the DNS etcd fails, the last answer
    is served; a record really deleted still answers NXDOMAIN (docs/safeguards.md)."""
    dwfm_throttle: bool = False
    """DWFM admits re-establish work by queue size, with jittered backoff (``core.dwfm``)."""
    propagation_throttle: bool = False
    """The launcher's launches are admitted by the Network Manager's backlog
    (``core.propagation``): refused ones fail RequestLimitExceeded."""
    velocity_control: bool = False
    """An NLB removes at most so much healthy capacity from DNS per interval (``core.nlb``)."""

    @classmethod
    def parse(cls, text: str) -> Safeguards:
        """``off``, ``on`` (all), or a comma-separated list of names."""
        words = [w.strip() for w in text.split(",") if w.strip()]
        if words in (["off"], ["none"], []):
            return cls()
        if words in (["on"], ["all"]):
            return cls(**{w.replace("-", "_"): True for w in ON})
        unknown = [w for w in words if w not in NAMES]
        if unknown:
            raise ValueError(
                f"unknown safeguard {', '.join(unknown)}: use off, on, or a comma-separated "
                f"list of {', '.join(NAMES)}"
            )
        return cls(**{w.replace("-", "_"): True for w in words})

    def names(self) -> list[str]:
        return [n for n in NAMES if getattr(self, n.replace("-", "_"))]

    def __str__(self) -> str:
        return ",".join(self.names()) or "off"

    def cascade(self) -> list[str]:
        """The names among the cascade's safeguards."""
        return [n for n in self.names() if n in CASCADE]

    def control_loop(self) -> list[str]:
        """The names among the enactors' safeguards (the race's expectation rests on these)."""
        return [n for n in self.names() if n in ENACTOR]
