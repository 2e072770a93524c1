"""The sections of ``dnsrace status``'s snapshot, each from its part of the inputs: the plans,
each enactor's reports and state, each endpoint, each Fault, the cascade. ``core.status.build``
calls them in turn; what each state means is in ``core.status``'s docstring.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from dnsrace.core.status_metrics import Scrape, metric, parse_metrics, scrape_state
from dnsrace.core.status_model import (
    TIMEOUT,
    CascadeStatus,
    EnactorStatus,
    EndpointStatus,
    FaultStatus,
    Inputs,
    LauncherStatus,
    NetworkStatus,
    NlbStatus,
    PlansStatus,
    Progress,
    Report,
)


def _unix(stamp: Any) -> float | None:
    """An RFC 3339 time as the API server writes it, as unix time."""
    if not stamp:
        return None
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def plan_serial(plan: Mapping[str, Any]) -> int | None:
    try:
        return int((plan.get("spec") or {})["serial"])
    except (KeyError, TypeError, ValueError):
        return None


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def endpoint_names(plan: Mapping[str, Any] | None) -> list[str]:
    if plan is None:
        return []
    return [str(e["name"]) for e in (plan.get("spec") or {}).get("endpoints") or []
            if isinstance(e, Mapping) and e.get("name")]


def plans_status(items: Sequence[Mapping[str, Any]], planner: Scrape | None) -> PlansStatus:
    serials = [(s, is_terminating(p)) for p in items if (s := plan_serial(p)) is not None]
    live = sorted(s for s, gone in serials if not gone)
    terminating = sorted(s for s, gone in serials if gone)
    newest = live[-1] if live else None
    newest_plan = next((p for p in items
                        if plan_serial(p) == newest and not is_terminating(p)), None)
    planner_serial = None
    if planner is not None and planner.text is not None:
        value = metric(parse_metrics(planner.text), "dnsrace_planner_last_serial")
        planner_serial = int(value) if value is not None else None
    return PlansStatus(newest_serial=newest, live=len(live),
                       oldest_serial=live[0] if live else None, terminating=terminating,
                       newest_endpoints=len(endpoint_names(newest_plan)),
                       planner_serial=planner_serial)


def enactor_reports(items: Sequence[Mapping[str, Any]]) -> dict[str, list[Report]]:
    """enactor -> its reports, one per plan it reported on, by serial."""
    out: dict[str, list[Report]] = {}
    for plan in items:
        serial = plan_serial(plan)
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


def fault_status(obj: Mapping[str, Any], now: float) -> FaultStatus:
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
    if is_terminating(obj):
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


def enactor_status(
    name: str, inputs: Inputs, reports: list[Report], faults: list[FaultStatus],
    plans_by_serial: Mapping[int, Mapping[str, Any]], newest: int | None,
) -> EnactorStatus:
    now = inputs.now
    last = reports[-1] if reports else None
    scrape = inputs.metrics.get(name)
    samples = parse_metrics(scrape.text) if scrape is not None and scrape.text else []
    cycles = {lab.get("outcome", ""): v for n, lab, v in samples
              if n == "dnsrace_enactor_cycles_total" and lab.get("enactor") == name}
    blocked_endpoints = metric(samples, "dnsrace_enactor_blocked_endpoints", enactor=name)
    metric_applied = metric(samples, "dnsrace_enactor_last_applied_serial", enactor=name)
    applied = max([r.serial for r in reports if r.phase == "Applied"]
                  + ([int(metric_applied)] if metric_applied else []), default=None)
    behind = newest - applied if newest is not None and applied is not None else None

    # Its markers in the store: the plan it is walking, when newer than its last report.
    mine = {ep: m.serial for ep, (m, _) in (inputs.markers or {}).items() if m.enactor == name}
    progress = None
    current = max(mine.values(), default=None)
    if current is not None and (last is None or current > last.serial):
        plan = plans_by_serial.get(current)
        names = endpoint_names(plan)
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
    metrics_state = scrape_state(scrape)
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


def endpoint_status(name: str, inputs: Inputs, newest_names: set[str],
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
        prober_empty=bool(empty) if (empty := metric(prober, "dnsrace_prober_empty",
                                                      endpoint=name)) is not None else None,
        flags=flags,
    )


def _samples(scrape: Scrape | None) -> list[tuple[str, dict[str, str], float]]:
    return parse_metrics(scrape.text) if scrape is not None and scrape.text else []


def _flag(value: float | None) -> bool | None:
    return bool(value) if value is not None else None


def launcher(scrape: Scrape | None) -> LauncherStatus:
    """Launches by outcome (``launching``'s names: Launched, Failed by reason, GaveUp)."""
    samples = _samples(scrape)
    attempts = "dnsrace_launcher_attempts_total"
    return LauncherStatus(
        metrics=scrape_state(scrape),
        launched=metric(samples, attempts, outcome="Launched"),
        insufficient_capacity=metric(samples, attempts, outcome="Failed",
                                     reason="InsufficientCapacity"),
        request_limit_exceeded=metric(samples, attempts, outcome="Failed",
                                      reason="RequestLimitExceeded"),
        gave_up=metric(samples, attempts, outcome="GaveUp"),
        pending=metric(samples, "dnsrace_launcher_pending"),
        oldest_pending_seconds=metric(samples, "dnsrace_launcher_oldest_pending_seconds"),
        instances=metric(samples, "dnsrace_launcher_instances"),
    )


def network(scrape: Scrape | None) -> NetworkStatus:
    samples = _samples(scrape)
    return NetworkStatus(
        metrics=scrape_state(scrape), backlog=metric(samples, "dnsrace_network_backlog"),
        oldest_age_seconds=metric(samples, "dnsrace_network_oldest_age_seconds"),
        propagated=metric(samples, "dnsrace_network_propagated_total"),
        throttle=_flag(metric(samples, "dnsrace_network_throttle")),
    )


def nlb(scrape: Scrape | None) -> NlbStatus:
    samples = _samples(scrape)
    healthy: dict[str, float] = {}
    unhealthy: dict[str, float] = {}
    failed_over = []
    for name, labels, value in samples:
        az = labels.get("az", "")
        if name == "dnsrace_nlb_targets" and labels.get("state") == "healthy":
            healthy[az] = healthy.get(az, 0.0) + value
        elif name == "dnsrace_nlb_targets" and labels.get("state") == "unhealthy":
            unhealthy[az] = unhealthy.get(az, 0.0) + value
        elif name == "dnsrace_nlb_failed_over" and value:
            failed_over.append(az)
    return NlbStatus(
        metrics=scrape_state(scrape), healthy=dict(sorted(healthy.items())),
        unhealthy=dict(sorted(unhealthy.items())), failed_over=sorted(failed_over),
        capacity_removed=metric(samples, "dnsrace_nlb_capacity_removed_total"),
        failovers=metric(samples, "dnsrace_nlb_failovers_total"),
    )


def cascade(metrics: Mapping[str, Scrape]) -> CascadeStatus:
    """The cascade's figures from ``Inputs.metrics`` (``dwfm``, ``launcher``,
    ``network-manager``, ``nlb``)."""
    scrape = metrics.get("dwfm")
    samples = _samples(scrape)

    def get(name: str) -> float | None:
        return metric(samples, name)

    throttle = get("dnsrace_dwfm_throttle")
    return CascadeStatus(
        dwfm=scrape_state(scrape), droplets=get("dnsrace_dwfm_droplets"),
        leases_valid=get("dnsrace_dwfm_leases_valid"), queue_depth=get("dnsrace_dwfm_queue_depth"),
        in_service=get("dnsrace_dwfm_in_service"),
        queue_oldest_age_seconds=get("dnsrace_dwfm_queue_oldest_age_seconds"),
        goodput_ratio=get("dnsrace_dwfm_goodput_ratio"),
        throttle=_flag(throttle), launcher=launcher(metrics.get("launcher")),
        network_manager=network(metrics.get("network-manager")), nlb=nlb(metrics.get("nlb")),
    )
