"""The lab's state at one moment, assembled from what was read: ``dnsrace status``'s snapshot.

Who calls it: ``components.status`` fetches the inputs (the DnsPlans and Faults as the API
server returns them, the active-plan markers and record addresses from the DNS etcd, CoreDNS's
answers, the components' ``/metrics`` text, the enactors' heartbeat Leases) and passes them to
``build``; the CLI renders the ``Snapshot`` (rich) or prints ``Snapshot.to_json()``. Pure: no
client, no clock (``now`` is an input), so every state it derives is tested from hand-built
inputs.

What it derives, and from what:
- the newest plan serial (live plans; Terminating ones are listed apart);
- each enactor's state, in this order of precedence: ``down`` (its ``/metrics`` refused and its
  heartbeat expired), ``paused`` (a pause Fault aimed at it is within its duration),
  ``unresponsive`` (``/metrics`` timed out and the heartbeat expired: stopped by something
  else), ``held`` (a hold Fault stopped it at a step), ``blocked`` (its last report on a plan,
  ``status.enactors[]``, says Blocked: the reason, e.g. ``ActivePlanMissing``, and message),
  ``cleaning-up`` / ``applying`` (the DNS etcd holds its marker of a plan newer than its last
  report: on the plan's last endpoint, the walk is done and clean-up runs; else the walk is
  under way), ``skipped``, ``idle`` (its last report is Applied), ``unknown``. Delay Faults
  aimed at it are listed with every state (``delayed_by``): a delay slows it without stopping it;
- each endpoint's active serial and writer in the store, its addresses in the store, whether its
  active plan still exists, and CoreDNS's answer (rcode, addresses, TXT serial), with flags for
  what disagrees;
- each Fault's effect and whether it is still acting;
- the cascade's DWFM figures when its ``/metrics`` was read.

``to_json()``'s keys are a stable interface (``SCHEMA``, documented in docs/report.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dnsrace.core import stores

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
class Scrape:
    """One ``/metrics`` read: its text, or why there is none (``refused``, ``timeout``, or an
    error's text). Both None: not scraped (no port configured)."""

    text: str | None = None
    error: str | None = None

    @property
    def attempted(self) -> bool:
        return self.text is not None or self.error is not None


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
    """component (``planner``, ``enactor-a``, ``prober``, ``dwfm``) -> its ``/metrics``."""
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
class CascadeStatus:
    """DWFM's figures from its ``/metrics``; every field None when it was not read."""

    dwfm: str
    """``ok``, ``refused``, ``timeout``, ``not scraped`` or an error."""
    droplets: float | None
    leases_valid: float | None
    queue_depth: float | None
    in_service: float | None
    queue_oldest_age_seconds: float | None
    goodput_ratio: float | None
    throttle: bool | None


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


# -- metrics text ---------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of Prometheus text exposition: (name, labels, value); comments skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        try:
            value = float(match.group(4))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\")
                  for k, v in _LABEL.findall(match.group(3) or "")}
        out.append((match.group(1), labels, value))
    return out


def _metric(samples: Iterable[tuple[str, dict[str, str], float]], name: str,
            **labels: str) -> float | None:
    """The sum of ``name``'s samples whose labels include ``labels``; None when there is none."""
    found = [v for n, lab, v in samples
             if n == name and all(lab.get(k) == want for k, want in labels.items())]
    return sum(found) if found else None


def _scrape_state(scrape: Scrape | None) -> str:
    if scrape is None or not scrape.attempted:
        return "not scraped"
    return "ok" if scrape.text is not None else str(scrape.error)


# -- assembling -----------------------------------------------------------------------------


def _unix(stamp: Any) -> float | None:
    """An RFC 3339 time as the API server writes it, as unix time."""
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _serial(plan: Mapping[str, Any]) -> int | None:
    try:
        return int((plan.get("spec") or {})["serial"])
    except (KeyError, TypeError, ValueError):
        return None


def _terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _endpoint_names(plan: Mapping[str, Any] | None) -> list[str]:
    if plan is None:
        return []
    return [str(e["name"]) for e in (plan.get("spec") or {}).get("endpoints") or []
            if isinstance(e, Mapping) and e.get("name")]


def _plans_status(items: Sequence[Mapping[str, Any]], planner: Scrape | None) -> PlansStatus:
    live = sorted(s for p in items if (s := _serial(p)) is not None and not _terminating(p))
    terminating = sorted(s for p in items if (s := _serial(p)) is not None and _terminating(p))
    newest = live[-1] if live else None
    newest_plan = next((p for p in items if _serial(p) == newest and not _terminating(p)), None)
    planner_serial = None
    if planner is not None and planner.text is not None:
        value = _metric(parse_metrics(planner.text), "dnsrace_planner_last_serial")
        planner_serial = int(value) if value is not None else None
    return PlansStatus(newest_serial=newest, live=len(live),
                       oldest_serial=live[0] if live else None, terminating=terminating,
                       newest_endpoints=len(_endpoint_names(newest_plan)),
                       planner_serial=planner_serial)


def _reports(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Report]]:
    """enactor -> its reports, one per plan it reported on, by serial."""
    out: dict[str, list[Report]] = {}
    for plan in items:
        serial = _serial(plan)
        if serial is None:
            continue
        status = plan.get("status") or {}
        conditions = {str(c.get("type")): c for c in status.get("conditions") or []
                      if isinstance(c, Mapping)}
        names = {str(e.get("name")) for e in status.get("enactors") or []
                 if isinstance(e, Mapping) and e.get("name")}
        names |= {t.removesuffix(".dnsrace.io/Applied") for t in conditions
                  if t.endswith(".dnsrace.io/Applied")}
        entries = {str(e.get("name")): e for e in status.get("enactors") or []
                   if isinstance(e, Mapping)}
        for name in names:
            entry = entries.get(name) or {}
            cond = conditions.get(f"{name}.dnsrace.io/Applied") or {}
            phase = str(entry.get("phase") or (
                "Applied" if cond.get("status") == "True" else cond.get("reason") or "Unknown"))
            applied = entry.get("appliedEndpoints")
            count = status.get("endpointCount")
            out.setdefault(name, []).append(Report(
                serial=serial, phase=phase,
                reason=str(cond.get("reason") or entry.get("phase") or ""),
                message=str(entry.get("message") or cond.get("message") or ""),
                applied_endpoints=int(applied) if applied is not None else None,
                endpoint_count=int(count) if count is not None else None,
                updated_at=entry.get("updatedAt") or cond.get("lastTransitionTime"),
            ))
    for reports in out.values():
        reports.sort(key=lambda r: r.serial)
    return out


def _fault_status(obj: Mapping[str, Any], now: float) -> FaultStatus:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    action = str(spec.get("action", ""))
    step = spec.get("step")
    delay = spec.get("delaySeconds")
    jitter = spec.get("jitterSeconds")
    duration = spec.get("durationSeconds")
    injected = int(status.get("injected") or 0)
    phase = status.get("phase")
    last = status.get("lastInjectedAt")
    endpoints = [str(e) for e in spec.get("endpoints") or []]
    where = f" at {', '.join(endpoints)}" if endpoints else ""
    if _terminating(obj):
        active = False
    elif action in ("delay", "hold"):
        active = phase != "Done"
    elif action == "pause":
        since = _unix(last)
        length = float(duration if duration is not None else (delay or 5.0))
        # Written just before the process stops itself (Fault timestamps are whole seconds).
        active = since is not None and injected > 0 and now <= since + length + 1.0
    else:  # kill: one-shot, the lab's supervisor restarts the process
        active = False
    if action == "delay":
        effect = f"delays {step} by {float(delay or 0):g}s"
        if jitter:
            effect += f" ±{float(jitter):g}s"
        effect += where
    elif action == "hold":
        effect = f"holds at {step}{where} until deleted"
    elif action == "pause":
        length = float(duration if duration is not None else (delay or 5.0))
        effect = f"pauses the process for {length:g}s"
    else:
        effect = "kills the process"
    return FaultStatus(
        name=str((obj.get("metadata") or {}).get("name", "")), target=str(spec.get("target", "")),
        action=action, step=str(step) if step is not None else None,
        delay_seconds=float(delay) if delay is not None else None,
        jitter_seconds=float(jitter) if jitter is not None else None,
        endpoints=endpoints, injected=injected, phase=str(phase) if phase else None,
        last_injected_at=str(last) if last else None, active=active, effect=effect,
    )


def _enactor_status(
    name: str, inputs: Inputs, reports: list[Report], faults: list[FaultStatus],
    plans_by_serial: Mapping[int, Mapping[str, Any]], newest: int | None,
) -> EnactorStatus:
    now = inputs.now
    last = reports[-1] if reports else None
    scrape = inputs.metrics.get(name)
    samples = parse_metrics(scrape.text) if scrape is not None and scrape.text else []
    cycles = {lab.get("outcome", ""): v for n, lab, v in samples
              if n == "dnsrace_enactor_cycles_total" and lab.get("enactor") == name}
    blocked_endpoints = _metric(samples, "dnsrace_enactor_blocked_endpoints", enactor=name)
    metric_applied = _metric(samples, "dnsrace_enactor_last_applied_serial", enactor=name)
    applied = max([r.serial for r in reports if r.phase == "Applied"]
                  + ([int(metric_applied)] if metric_applied else []), default=None)
    behind = newest - applied if newest is not None and applied is not None else None

    # Its markers in the store: the plan it is walking, when newer than its last report.
    mine = {ep: m.serial for ep, (m, _) in (inputs.markers or {}).items() if m.enactor == name}
    progress = None
    current = max(mine.values(), default=None)
    if current is not None and (last is None or current > last.serial):
        plan = plans_by_serial.get(current)
        names = _endpoint_names(plan)
        progress = Progress(
            serial=current, written=sum(1 for s in mine.values() if s == current),
            endpoints=len(names) if plan is not None else None,
            last_endpoint_written=bool(names) and mine.get(names[-1]) == current)

    beat = (inputs.heartbeats or {}).get(name) if inputs.heartbeats is not None else None
    heartbeat_age = now - beat.renewed if beat is not None else None
    heartbeat_valid = beat.valid(now) if beat is not None else (
        None if inputs.heartbeats is None else False)

    aimed = [f for f in faults if f.target == name and f.active]
    delayed_by = [f.name for f in aimed if f.action == "delay"]
    pause = next((f for f in aimed if f.action == "pause"), None)
    hold = next((f for f in aimed if f.action == "hold" and f.injected > 0), None)
    metrics_state = _scrape_state(scrape)
    dead_beat = heartbeat_valid is False

    if metrics_state == "refused" and dead_beat:
        state, why = "down", "/metrics refused and heartbeat expired"
    elif pause is not None:
        state, why = "paused", f"Fault {pause.name}: {pause.effect}"
    elif metrics_state == TIMEOUT.lower() and dead_beat:
        state, why = "unresponsive", "/metrics timed out and heartbeat expired (stopped?)"
    elif hold is not None:
        state, why = "held", f"Fault {hold.name}: {hold.effect}"
    elif inputs.plans is None:
        state, why = "unknown", "its reports are unknown: the API server could not be read"
    elif last is not None and last.phase == "Blocked":
        state = "blocked"
        why = f"{last.reason}: {last.message}" if last.message else last.reason
    elif progress is not None:
        total = f"/{progress.endpoints}" if progress.endpoints is not None else ""
        if progress.last_endpoint_written:
            state = "cleaning-up"
            why = f"plan {progress.serial} written to its last endpoint; clean-up and report next"
        else:
            state = "applying"
            why = f"plan {progress.serial}: {progress.written}{total} endpoints carry its marker"
    elif last is not None and last.phase == "Skipped":
        state, why = "skipped", last.message or last.reason
    elif last is not None and last.phase == "Applied":
        state, why = "idle", last.message or f"plan {last.serial} applied"
    elif last is not None:  # a condition without an entry: a plan it refused (InvalidPlan)
        state = "unknown"
        why = f"plan {last.serial}: {last.reason}" + (f": {last.message}" if last.message
                                                     else "")
    else:
        state, why = "unknown", "no report on any plan yet"
    if delayed_by:
        why += f" (delayed by {', '.join(delayed_by)})"
    return EnactorStatus(
        name=name, state=state, why=why, last=last, applied_serial=applied, behind=behind,
        progress=progress, faults=[f.name for f in aimed], delayed_by=delayed_by,
        heartbeat_age=round(heartbeat_age, 3) if heartbeat_age is not None else None,
        heartbeat_valid=heartbeat_valid, metrics=metrics_state, cycles=cycles,
        blocked_endpoints=blocked_endpoints, endpoints_marked=len(mine),
    )


def _endpoint_status(name: str, inputs: Inputs, newest_names: set[str],
                     live_serials: set[int], newest: int | None,
                     api_read: bool, prober: Sequence[tuple[str, dict[str, str], float]]
                     ) -> EndpointStatus:
    marker = (inputs.markers or {}).get(name)
    serial = marker[0].serial if marker else None
    addresses = None
    if inputs.store_addresses is not None:
        addresses = sorted(inputs.store_addresses.get(name, ()))
    answer = inputs.answers.get(name) if inputs.answers is not None else None
    exists = (serial in live_serials) if serial is not None and api_read else None
    flags = []
    if answer is not None and answer.kind in ("NXDOMAIN", "NODATA"):
        flags.append("empty-in-dns")
    if addresses is not None and marker is not None and not addresses:
        flags.append("empty-in-store")
    if exists is False:
        flags.append("active-plan-missing")
    if answer is not None and serial is not None and answer.rcode != TIMEOUT \
            and answer.serial != serial:
        flags.append("dns-differs-from-store")
    if serial is not None and newest is not None and serial < newest:
        flags.append("behind-newest")
    return EndpointStatus(
        name=name, in_newest_plan=name in newest_names, store_serial=serial,
        store_enactor=marker[0].enactor if marker else None, store_addresses=addresses,
        active_plan_exists=exists, dns=answer.kind if answer is not None else None,
        dns_addresses=list(answer.addresses) if answer is not None else [],
        dns_serial=answer.serial if answer is not None else None,
        prober_empty=bool(empty) if (empty := _metric(prober, "dnsrace_prober_empty",
                                                      endpoint=name)) is not None else None,
        flags=flags,
    )


def _cascade(scrape: Scrape | None) -> CascadeStatus:
    samples = parse_metrics(scrape.text) if scrape is not None and scrape.text else []

    def get(metric: str) -> float | None:
        return _metric(samples, metric)

    throttle = get("dnsrace_dwfm_throttle")
    return CascadeStatus(
        dwfm=_scrape_state(scrape), droplets=get("dnsrace_dwfm_droplets"),
        leases_valid=get("dnsrace_dwfm_leases_valid"), queue_depth=get("dnsrace_dwfm_queue_depth"),
        in_service=get("dnsrace_dwfm_in_service"),
        queue_oldest_age_seconds=get("dnsrace_dwfm_queue_oldest_age_seconds"),
        goodput_ratio=get("dnsrace_dwfm_goodput_ratio"),
        throttle=bool(throttle) if throttle is not None else None,
    )


def build(inputs: Inputs) -> Snapshot:
    """The snapshot of the lab from what was read (see the module's docstring)."""
    items = list(inputs.plans or [])
    plans = _plans_status(items, inputs.metrics.get("planner"))
    live = {s: p for p in items if (s := _serial(p)) is not None and not _terminating(p)}
    every = {s: p for p in items if (s := _serial(p)) is not None}
    faults = sorted((_fault_status(f, inputs.now) for f in inputs.faults or []),
                    key=lambda f: f.name)
    reports = _reports(items)

    names = list(dict.fromkeys([
        *inputs.enactors, *sorted(reports),
        *sorted((inputs.heartbeats or {}).keys()),
        *sorted({m.enactor for m, _ in (inputs.markers or {}).values()
                 if m.enactor.startswith("enactor-")}),
        *sorted({f.target for f in faults if f.target.startswith("enactor-")}),
    ]))
    enactors = [_enactor_status(n, inputs, reports.get(n, []), faults, every,
                                plans.newest_serial) for n in names]

    newest_names = _endpoint_names(live.get(plans.newest_serial)
                                   if plans.newest_serial is not None else None)
    others = sorted((set(inputs.markers or {}) | set(inputs.answers or {}))
                    - set(newest_names))
    prober = inputs.metrics.get("prober")
    probed = parse_metrics(prober.text) if prober is not None and prober.text else []
    endpoints = [_endpoint_status(n, inputs, set(newest_names), set(live),
                                  plans.newest_serial, inputs.plans is not None, probed)
                 for n in [*newest_names, *others]]

    sources = {}
    for source, data in (("api", inputs.plans), ("dns-etcd", inputs.markers),
                         ("dns", inputs.answers)):
        error = inputs.errors.get(source)
        sources[source] = "ok" if data is not None and not error else (error or "not read")
    holder = None
    if inputs.writer_lease is not None and inputs.writer_lease.valid(inputs.now):
        holder = inputs.writer_lease.holder
    return Snapshot(
        time=inputs.now, namespace=inputs.namespace, sources=sources, plans=plans,
        enactors=enactors, endpoints=endpoints, faults=faults,
        safeguards=SafeguardsStatus(configured=list(inputs.safeguards),
                                    source=inputs.safeguards_source,
                                    writer_lease_holder=holder),
        cascade=_cascade(inputs.metrics.get("dwfm")),
    )
