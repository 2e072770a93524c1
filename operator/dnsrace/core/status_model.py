"""The data of ``dnsrace status``'s snapshot: what ``build`` reads (``Inputs`` and its parts) and
what it returns (``Snapshot`` and its sections), with the constants they name.

Apart from ``status`` so the per-section builders (``status_sections``) can make these without
importing the module that calls them; everything here is re-exported by ``core.status``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from dnsrace.core import stores
from dnsrace.core.status_metrics import Scrape

SCHEMA = 1
"""Version of ``Snapshot.to_json()``'s layout; bumped when a key changes meaning or goes."""

ENACTOR_STATES = ("down", "paused", "unresponsive", "held", "blocked", "cleaning-up",
                  "applying", "skipped", "idle", "unknown")
"""Every value of ``EnactorStatus.state``, in order of precedence."""

TIMEOUT = "TIMEOUT"
"""A DNS query or a scrape with no answer."""


# -- inputs ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DnsAnswer:
    """What CoreDNS answered for one endpoint: the A query's rcode (``TIMEOUT`` when none came
    back) and addresses, and the plan serial of its TXT record."""

    rcode: str
    addresses: tuple[str, ...] = ()
    serial: int | None = None

    @property
    def kind(self) -> str:
        """``NOERROR`` with addresses, ``NODATA`` (NOERROR, none), else the rcode."""
        if self.rcode == "NOERROR":
            return "NOERROR" if self.addresses else "NODATA"
        return self.rcode




@dataclasses.dataclass(frozen=True)
class Lease:
    """A coordination.k8s.io Lease as read: holder, last renewal (unix time), duration (s)."""

    holder: str
    renewed: float
    duration: float

    def valid(self, now: float) -> bool:
        return now <= self.renewed + self.duration


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything ``build`` needs, already fetched. None for a source means it was unreachable
    (its error is in ``errors``); an empty mapping means it was read and held nothing."""

    now: float
    namespace: str
    plans: Sequence[Mapping[str, Any]] | None
    """DnsPlan objects as the API server returns them (metadata, spec, status)."""
    faults: Sequence[Mapping[str, Any]] | None
    """Fault objects as the API server returns them."""
    markers: Mapping[str, tuple[stores.ActiveMarker, int]] | None
    """``EtcdRecordStore.markers()``: endpoint -> (active marker, its mod revision)."""
    store_addresses: Mapping[str, Sequence[str]] | None = None
    """endpoint -> the hosts of its address records in the DNS etcd."""
    answers: Mapping[str, DnsAnswer] | None = None
    """endpoint -> CoreDNS's answer right now."""
    metrics: Mapping[str, Scrape] = dataclasses.field(default_factory=dict)
    """component (``planner``, ``enactor-a``, ``prober``, ``dwfm``, ``launcher``,
    ``network-manager``, ``nlb``) -> its ``/metrics``."""
    heartbeats: Mapping[str, Lease | None] | None = None
    """enactor -> its heartbeat Lease (None: it never had one)."""
    writer_lease: Lease | None = None
    """The single-writer safeguard's Lease, when it exists."""
    enactors: Sequence[str] = ()
    """The enactors the lab is configured with; others seen in plans or heartbeats are added."""
    safeguards: Sequence[str] = ()
    """The safeguards named by this command's configuration."""
    safeguards_source: str = "default"
    """Where ``safeguards`` came from: ``--safeguards``, ``DNSRACE_SAFEGUARDS`` or ``default``."""
    errors: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """source (``api``, ``dns-etcd``, ``dns``) -> why it could not be read."""


# -- outputs --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PlansStatus:
    newest_serial: int | None
    """Highest serial among plans not being deleted; None when there is none."""
    live: int
    """Plans not being deleted."""
    oldest_serial: int | None
    terminating: list[int]
    """Serials whose deletion began (finalizers still running)."""
    newest_endpoints: int
    """Endpoints in the newest plan."""
    planner_serial: int | None
    """``dnsrace_planner_last_serial`` when the planner's ``/metrics`` was read."""


@dataclasses.dataclass(frozen=True)
class Report:
    """An enactor's entry in one plan's ``status.enactors`` and its condition there."""

    serial: int
    phase: str
    reason: str
    message: str
    applied_endpoints: int | None
    endpoint_count: int | None
    updated_at: str | None


@dataclasses.dataclass(frozen=True)
class Progress:
    """The plan an enactor is walking, as the DNS etcd shows it: its markers of ``serial``."""

    serial: int
    written: int
    """Endpoints whose active marker is this enactor's, of ``serial``."""
    endpoints: int | None
    """Endpoints in that plan (None when the plan is gone or unknown)."""
    last_endpoint_written: bool
    """The plan's last endpoint (the regional one) carries it: the walk is over."""


@dataclasses.dataclass(frozen=True)
class EnactorStatus:
    name: str
    state: str
    """One of ``ENACTOR_STATES``."""
    why: str
    """One line: the reason for ``state``."""
    last: Report | None
    """Its report on the highest-serial plan it reported on."""
    applied_serial: int | None
    """The highest serial it reported Applied (or its metric, if higher)."""
    behind: int | None
    """Newest plan serial minus ``applied_serial``."""
    progress: Progress | None
    faults: list[str]
    """Faults aimed at it that are still acting."""
    delayed_by: list[str]
    """Of those, the delay Faults: what slows it."""
    heartbeat_age: float | None
    """Seconds since its heartbeat Lease was renewed; None without one."""
    heartbeat_valid: bool | None
    metrics: str
    """``ok``, ``refused``, ``timeout``, ``not scraped`` or an error."""
    cycles: dict[str, float]
    """``dnsrace_enactor_cycles_total`` by outcome."""
    blocked_endpoints: float | None
    """``dnsrace_enactor_blocked_endpoints``: endpoints blocked in its last cycle."""
    endpoints_marked: int
    """Endpoints whose active marker this enactor wrote."""


@dataclasses.dataclass(frozen=True)
class EndpointStatus:
    name: str
    in_newest_plan: bool
    store_serial: int | None
    """Serial of the active marker in the DNS etcd; None without one."""
    store_enactor: str | None
    """Who wrote that marker (an enactor, or ``repair``)."""
    store_addresses: list[str] | None
    """Hosts of its address records in the DNS etcd; None when not read."""
    active_plan_exists: bool | None
    """Whether the marker's plan is still a live DnsPlan (False: ``ActivePlanMissing``)."""
    dns: str | None
    """CoreDNS's answer kind: NOERROR, NODATA, NXDOMAIN, SERVFAIL, TIMEOUT; None: not asked."""
    dns_addresses: list[str]
    dns_serial: int | None
    """Serial in the TXT record CoreDNS answered."""
    prober_empty: bool | None
    """The prober's ``dnsrace_prober_empty``: it resolves to nothing after having resolved
    (10 probes a second, so brief empty answers this one query missed show here); None when
    the prober's ``/metrics`` was not read or does not name the endpoint."""
    flags: list[str]
    """What is wrong: ``empty-in-dns``, ``empty-in-store``, ``active-plan-missing``,
    ``dns-differs-from-store`` (CoreDNS's serial is not the store's: its cache, or a
    transition), ``behind-newest``."""


@dataclasses.dataclass(frozen=True)
class FaultStatus:
    name: str
    target: str
    action: str
    step: str | None
    delay_seconds: float | None
    jitter_seconds: float | None
    endpoints: list[str]
    injected: int
    phase: str | None
    last_injected_at: str | None
    active: bool
    """Still acting: a delay/hold not Done; a pause within its duration; a deletion not begun."""
    effect: str
    """One line saying what it does."""


@dataclasses.dataclass(frozen=True)
class SafeguardsStatus:
    configured: list[str]
    source: str
    writer_lease_holder: str | None
    """Holder of the single-writer Lease while it is valid."""


@dataclasses.dataclass(frozen=True)
class LauncherStatus:
    """The launcher's figures from its ``/metrics`` (``dnsrace_launcher_*``); every figure None
    when it was not read."""

    metrics: str
    """``ok``, ``refused``, ``timeout``, ``not scraped`` or an error."""
    launched: float | None
    """Attempts that launched an instance (outcome ``Launched``)."""
    insufficient_capacity: float | None
    """Attempts that failed with ``InsufficientCapacity`` (no droplet with a valid lease)."""
    request_limit_exceeded: float | None
    """Attempts that failed with ``RequestLimitExceeded`` (refused by propagation-throttle)."""
    gave_up: float | None
    """Requests given up on (outcome ``GaveUp``), whatever the reason."""
    pending: float | None
    """Requests not placed yet, waiting to be tried again."""
    oldest_pending_seconds: float | None
    instances: float | None
    """Instances it launched that are running."""


@dataclasses.dataclass(frozen=True)
class NetworkStatus:
    """The Network Manager's figures from its ``/metrics`` (``dnsrace_network_*``)."""

    metrics: str
    backlog: float | None
    """Network states waiting to propagate."""
    oldest_age_seconds: float | None
    propagated: float | None
    throttle: bool | None
    """propagation-throttle is on."""


@dataclasses.dataclass(frozen=True)
class NlbStatus:
    """The NLB's figures from its ``/metrics`` (``dnsrace_nlb_*``); per AZ, in AZ order."""

    metrics: str
    healthy: dict[str, float]
    """AZ -> its registered targets the health checks pass."""
    unhealthy: dict[str, float]
    failed_over: list[str]
    """AZs failed over: none of their targets published, healthy ones included."""
    capacity_removed: float | None
    """Healthy capacity AZ failover removed from DNS (a counter)."""
    failovers: float | None


@dataclasses.dataclass(frozen=True)
class CascadeStatus:
    """The cascade's components' figures from their ``/metrics``: DWFM's fields flat (the keys
    it had first), the launcher's, the Network Manager's and the NLB's each in its own part;
    every figure None when its component was not read."""

    dwfm: str
    """``ok``, ``refused``, ``timeout``, ``not scraped`` or an error."""
    droplets: float | None
    leases_valid: float | None
    queue_depth: float | None
    in_service: float | None
    queue_oldest_age_seconds: float | None
    goodput_ratio: float | None
    throttle: bool | None
    launcher: LauncherStatus
    network_manager: NetworkStatus
    nlb: NlbStatus


@dataclasses.dataclass(frozen=True)
class Snapshot:
    time: float
    namespace: str
    sources: dict[str, str]
    """``api``, ``dns-etcd``, ``dns`` -> ``ok``, or why it could not be read."""
    plans: PlansStatus
    enactors: list[EnactorStatus]
    endpoints: list[EndpointStatus]
    faults: list[FaultStatus]
    safeguards: SafeguardsStatus
    cascade: CascadeStatus

    @property
    def api_reachable(self) -> bool:
        return self.sources.get("api") == "ok"

    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data; keys are stable (``SCHEMA``)."""
        body = dataclasses.asdict(self)
        return {"schema": SCHEMA, **body}
