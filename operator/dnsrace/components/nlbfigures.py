"""What the NLB shows: its ``dnsrace_nlb_*`` metrics and the lines of ``nlb.jsonl``.

Who calls it: ``components.nlbctl`` (its ``Runner`` samples the core every ``record_every`` s
through ``figures_lines`` and ``Exporter``), ``nlbprobe`` (``CHECKS``) and ``nlbrecord``
(``RECORD_WRITES``). Why one room: the metric names (docs/metrics.md) and the figures' fields
(docs/cascade.md, "The NLB") are the NLB's whole public face; they are read from the core's
state, never written into it.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import prometheus_client

from dnsrace.core import launching, nlb

AZS = launching.AZS
"""The AZs the Instance CRD allows: every figures sample names each, with targets or not."""

TARGETS = prometheus_client.Gauge(
    "dnsrace_nlb_targets", "Registered targets per AZ by their health-check state.",
    ["az", "state"])
PUBLISHED_CAPACITY = prometheus_client.Gauge(
    "dnsrace_nlb_published_capacity", "Capacity the NLB publishes (serves) per AZ.", ["az"])
FAILED_OVER = prometheus_client.Gauge(
    "dnsrace_nlb_failed_over", "1 while the AZ is failed over (none of its targets published).",
    ["az"])
FLIPS = prometheus_client.Counter(
    "dnsrace_nlb_flips_total", "Target health changes (healthy to unhealthy or back).")
FAILOVERS = prometheus_client.Counter(
    "dnsrace_nlb_failovers_total", "AZs failed over by automatic AZ DNS failover.")
CAPACITY_REMOVED = prometheus_client.Counter(
    "dnsrace_nlb_capacity_removed_total",
    "Healthy capacity removed from DNS by AZ failover.")
CHECKS = prometheus_client.Counter(
    "dnsrace_nlb_checks_total",
    "Health checks by outcome: ok, status, refused, reset, timeout, error.", ["result"])
AUTO_FAILOVER = prometheus_client.Gauge(
    "dnsrace_nlb_auto_failover", "1 while automatic AZ DNS failover is on.")
VELOCITY = prometheus_client.Gauge(
    "dnsrace_nlb_velocity_control", "1 while the velocity-control safeguard is on.")
RECORD_WRITES = prometheus_client.Counter(
    "dnsrace_nlb_record_writes_total",
    "Writes of the NLB's DNS record to the DNS etcd: ok, failed.", ["result"])


def _num(x: float) -> float | int:
    """Capacities as the figures write them: whole numbers without ``.0``."""
    return int(x) if float(x).is_integer() else round(x, 3)


def figures_lines(core: nlb.Nlb, now: float, *, checks: Mapping[str, int] | None = None,
                  addresses: int = 0, writes: int = 0, write_failures: int = 0,
                  ) -> list[dict[str, Any]]:
    """One figures sample of ``nlb.jsonl`` (docs/cascade.md, "The NLB"): a line per AZ
    ``{t, az, healthy, unhealthy, published, failed_over, targets}`` (capacities: healthy and
    unhealthy by the checks, published in DNS), then ``{t, az: "all", ...}`` with the totals."""
    fig = core.figures(now)
    t = round(now, 3)
    healthy: dict[str, float] = collections.defaultdict(float)
    unhealthy: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.defaultdict(int)
    for target in core.targets.values():
        (healthy if target.healthy else unhealthy)[target.az] += target.capacity
        count[target.az] += 1
    lines: list[dict[str, Any]] = []
    for az in sorted(set(AZS) | set(fig.registered)):
        lines.append({"t": t, "az": az, "healthy": _num(healthy[az]),
                      "unhealthy": _num(unhealthy[az]),
                      "published": _num(fig.healthy.get(az, 0.0)),
                      "failed_over": az in fig.failed_over, "targets": count[az]})
    checks = checks or {}
    last = core.last
    lines.append({
        "t": t, "az": "all", "flips": fig.flips, "failovers": fig.az_failovers,
        "restores": fig.az_restores, "removed": _num(fig.removed_healthy),
        "removed_unhealthy": _num(fig.removed_unhealthy),
        "removed_in_window": _num(fig.removed_in_window), "held": _num(fig.held),
        "targets": fig.targets, "unhealthy": fig.unhealthy,
        "published": len(last.targets) if last is not None else 0, "addresses": addresses,
        "fail_open": bool(last is not None and last.fail_open),
        "checks": sum(checks.values()), "checks_failed": sum(
            n for k, n in checks.items() if k != "ok"),
        "writes": writes, "write_failures": write_failures,
        "auto_failover": fig.auto_failover, "velocity_control": fig.velocity_control,
    })
    return lines


class Exporter:
    """Puts the core's state on the Prometheus metrics: gauges as they are, the core's totals
    as counter increments since the previous update (several runners in one process add up)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def _add(self, counter: prometheus_client.Counter, key: str, total: float) -> None:
        delta = total - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._last[key] = total

    def update(self, core: nlb.Nlb, now: float) -> None:
        fig = core.figures(now)
        states: dict[tuple[str, str], int] = collections.defaultdict(int)
        for target in core.targets.values():
            states[target.az, "healthy" if target.healthy else "unhealthy"] += 1
        for az in sorted(set(AZS) | set(fig.registered)):
            for state in ("healthy", "unhealthy"):
                TARGETS.labels(az, state).set(states[az, state])
            PUBLISHED_CAPACITY.labels(az).set(fig.healthy.get(az, 0.0))
            FAILED_OVER.labels(az).set(1 if az in fig.failed_over else 0)
        AUTO_FAILOVER.set(1 if fig.auto_failover else 0)
        VELOCITY.set(1 if fig.velocity_control else 0)
        self._add(FLIPS, "flips", fig.flips)
        self._add(FAILOVERS, "failovers", fig.az_failovers)
        self._add(CAPACITY_REMOVED, "removed", fig.removed_healthy)
