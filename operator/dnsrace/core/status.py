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
- the cascade's figures, each component's when its ``/metrics`` was read: DWFM's leases and
  queue, the launcher's launches by outcome and pending requests, the Network Manager's backlog,
  the NLB's targets per AZ by health, the AZs failed over and the capacity that removed.

``to_json()``'s keys are a stable interface (``SCHEMA``, documented in docs/report.md).

Where: the data in ``status_model``, the ``/metrics`` reading in ``status_metrics``, the sections
in ``status_sections``; this module assembles them, and every name is importable from here.
"""

from __future__ import annotations

from dnsrace.core import status_sections as sections
from dnsrace.core.status_metrics import Scrape, parse_metrics
from dnsrace.core.status_model import (
    ENACTOR_STATES,
    SCHEMA,
    TIMEOUT,
    CascadeStatus,
    DnsAnswer,
    EnactorStatus,
    EndpointStatus,
    FaultStatus,
    Inputs,
    LauncherStatus,
    Lease,
    NetworkStatus,
    NlbStatus,
    PlansStatus,
    Progress,
    Report,
    SafeguardsStatus,
    Snapshot,
)

__all__ = [
    "ENACTOR_STATES", "SCHEMA", "TIMEOUT", "CascadeStatus", "DnsAnswer", "EnactorStatus",
    "EndpointStatus", "FaultStatus", "Inputs", "LauncherStatus", "Lease", "NetworkStatus",
    "NlbStatus", "PlansStatus", "Progress", "Report", "SafeguardsStatus", "Scrape", "Snapshot",
    "build", "parse_metrics",
]


def build(inputs: Inputs) -> Snapshot:
    """The snapshot of the lab from what was read (see the module's docstring)."""
    items = list(inputs.plans or [])
    plans = sections.plans_status(items, inputs.metrics.get("planner"))
    live = {s: p for p in items
            if (s := sections.plan_serial(p)) is not None and not sections.is_terminating(p)}
    every = {s: p for p in items if (s := sections.plan_serial(p)) is not None}
    faults = sorted((sections.fault_status(f, inputs.now) for f in inputs.faults or []),
                    key=lambda f: f.name)
    reports = sections.enactor_reports(items)

    names = list(dict.fromkeys([
        *inputs.enactors, *sorted(reports),
        *sorted((inputs.heartbeats or {}).keys()),
        *sorted({m.enactor for m, _ in (inputs.markers or {}).values()
                 if m.enactor.startswith("enactor-")}),
        *sorted({f.target for f in faults if f.target.startswith("enactor-")}),
    ]))
    enactors = [sections.enactor_status(n, inputs, reports.get(n, []), faults, every,
                                plans.newest_serial) for n in names]

    newest_names = sections.endpoint_names(live.get(plans.newest_serial)
                                   if plans.newest_serial is not None else None)
    others = sorted((set(inputs.markers or {}) | set(inputs.answers or {}))
                    - set(newest_names))
    prober = inputs.metrics.get("prober")
    probed = parse_metrics(prober.text) if prober is not None and prober.text else []
    endpoints = [sections.endpoint_status(n, inputs, set(newest_names), set(live),
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
        cascade=sections.cascade(inputs.metrics),
    )
