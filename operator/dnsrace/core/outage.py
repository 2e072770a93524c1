"""The ``outage-2025`` scenario's verdict: the cascade's six phases, detected from measurements.

Who calls it: ``components.scenarios.outage`` (after a run, over the run folder's records) and
``dnsrace scenario judge``; the unit tests call it on hand-made series. Why pure: a phase's start
and end must follow from what the components recorded (the prober's answers, the DynamoDB
clients' requests, ``dwfm.jsonl``, ``launcher.jsonl``, ``netmanager.jsonl``, ``nlb.jsonl``), by
criteria stated here, never from what the runner did or meant to do.

The phases, in the published order (DESIGN.md section 2), and how each is detected:

1. ``dns-empty``: the prober got NXDOMAIN/NODATA for the regional endpoint through CoreDNS;
   from the first such answer to the last.
2. ``leases-expiring``: DWFM holds fewer valid leases than droplets; from the first such sample
   until DynamoDB is reachable again (``reachable``: the DynamoDB clients' first success after
   their failures began).
3. ``dwfm-collapse``: moonpool's yardstick: once DynamoDB has been reachable for
   ``METASTABLE_AFTER`` s, DWFM's goodput (useful share of the finished work) is below
   ``METASTABLE_GOODPUT`` while leases are missing; from when that first holds until every lease
   is back.
4. ``network-backlog``: the Network Manager holds more states than ``propagation-throttle``
   lets it (``BACKLOG_BOUND``), or its oldest has waited longer than ``BACKLOG_AGE`` s
   (instances running without connectivity that long); first to last such sample.
5. ``nlb-flapping``: targets flip between healthy and unhealthy and healthy capacity is removed
   from the NLB's record (AZ failover); from the first flip to the last flip or removal.
6. ``recovery``: from DynamoDB's return (the record repaired, or the backend back) until
   every signal is back to normal (all leases valid, the backlog within its bounds, no
   unhealthy target, no AZ failed over) and stays so for ``SETTLED_FOR`` s. It overlaps the
   phases it ends; its place in the order is its end, after every other phase's.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dnsrace.core import ddb, observations

DNS_EMPTY = "dns-empty"
LEASES = "leases-expiring"
COLLAPSE = "dwfm-collapse"
BACKLOG = "network-backlog"
FLAPPING = "nlb-flapping"
RECOVERY = "recovery"
PHASES = (DNS_EMPTY, LEASES, COLLAPSE, BACKLOG, FLAPPING, RECOVERY)
"""In the published order of their starts."""

METASTABLE_AFTER = 15.0
"""Seconds DynamoDB must have been reachable before DWFM's goodput is judged (moonpool's)."""
METASTABLE_GOODPUT = 0.2
"""Goodput below this share, that long after recovery, is metastable: a collapse."""
BACKLOG_AGE = 15.0
"""Seconds a network state may wait before the backlog counts: ``propagation-throttle`` keeps
the wait under about 10 s (docs/cascade.md, section 3); older means instances ran without
connectivity for long."""
BACKLOG_BOUND = 22
"""States the backlog may hold with ``propagation-throttle`` on: its ``max_backlog`` (20) and
the two launches a poll of ``/admit`` may let through at once. More, or a state older than
``BACKLOG_AGE``, is the backlog phase."""
ORDER_SLACK = 15.0
"""Seconds a phase may start before the one published before it: the backlog (5:28 AM) and
the flapping (5:30 AM) began together, and a flip needs two failed checks 5 s apart before it
shows; the NLB's detection time, not a change of order."""
SETTLED_FOR = 10.0
"""Seconds every signal must stay normal for the recovery to count as done."""


@dataclasses.dataclass(frozen=True)
class Span:
    start: float
    end: float | None
    """None: still going when the run ended."""

    def to_json(self) -> dict[str, Any]:
        return {"start": round(self.start, 3),
                "end": None if self.end is None else round(self.end, 3)}


@dataclasses.dataclass(frozen=True)
class Records:
    """What the phases are detected from (unix times; the JSON lines as the components wrote
    them, docs/run-format.md)."""

    t_fault: float
    t_end: float
    empty_windows: Sequence[tuple[float, float]] = ()
    """The regional endpoint's NXDOMAIN/NODATA windows through CoreDNS (the prober)."""
    client_outcomes: Sequence[tuple[float, str]] = ()
    """The DynamoDB clients' requests: (sent, outcome), in time order."""
    dwfm: Sequence[Mapping[str, Any]] = ()
    launcher: Sequence[Mapping[str, Any]] = ()
    network: Sequence[Mapping[str, Any]] = ()
    nlb: Sequence[Mapping[str, Any]] = ()
    injected: Mapping[str, int] | None = None
    """The race's Faults and how often each acted (``faults.json``); None: no race."""


def _lines(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's objects (none if it is missing); a torn last line is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def load(run_dir: Path, t_end: float | None = None) -> tuple[Records, Steps, str]:
    """The records of an ``outage-2025`` run folder (also while it runs: ``t_end`` then is
    now), the runner's steps and the expectation's kind, from ``observed.json``."""
    obs = json.loads((run_dir / "observed.json").read_text()) \
        if (run_dir / "observed.json").exists() else {}
    t_fault = float(obs.get("t_fault", 0.0))
    probes = run_dir / "prober.jsonl"
    summary = observations.analyze(observations.load(probes) if probes.exists() else [],
                                   since=t_fault, failures_are_empty=False)
    regional = summary.endpoints.get(str(obs.get("regional", "")))
    windows = [(w.start, w.end) for w in regional.windows] if regional else []
    clients = run_dir / "ddb-client.jsonl"
    requests = sorted(ddb.load_requests(clients), key=lambda r: r.t) if clients.exists() else []
    rec = Records(
        t_fault=t_fault, t_end=float(obs.get("t_end", t_end or 0.0)), empty_windows=windows,
        client_outcomes=[(r.t, r.outcome) for r in requests],
        dwfm=_lines(run_dir / "dwfm.jsonl"), launcher=_lines(run_dir / "launcher.jsonl"),
        network=_lines(run_dir / "netmanager.jsonl"), nlb=_lines(run_dir / "nlb.jsonl"),
        injected=_injected(run_dir / "faults.json"))
    steps = Steps(**{k: v for k, v in (obs.get("steps") or {}).items()
                     if k in {f.name for f in dataclasses.fields(Steps)}})
    return rec, steps, str(obs.get("kind", CASCADE))


def _injected(path: Path) -> dict[str, int] | None:
    if not path.exists():
        return None
    return {str(f["name"]): int((f.get("status") or {}).get("injected") or 0)
            for f in json.loads(path.read_text())}


def _after(rows: Sequence[Mapping[str, Any]], t: float) -> list[Mapping[str, Any]]:
    return sorted((r for r in rows if float(r["t"]) >= t), key=lambda r: float(r["t"]))


def reachable_again(rec: Records) -> float | None:
    """When DynamoDB answered a client again after the clients' failures began (after the
    fault); None if they never failed or never succeeded again."""
    failed = False
    for t, outcome in rec.client_outcomes:
        if t < rec.t_fault:
            continue
        if outcome != "ok":
            failed = True
        elif failed:
            return t
    return None


def dns_empty(rec: Records) -> Span | None:
    spans = [(s, e) for s, e in rec.empty_windows if e >= rec.t_fault]
    if not spans:
        return None
    return Span(min(s for s, _ in spans), max(e for _, e in spans))


def leases_expiring(rec: Records, reachable: float | None) -> Span | None:
    for row in _after(rec.dwfm, rec.t_fault):
        if int(row["leases_valid"]) < int(row["droplets"]):
            return Span(float(row["t"]), reachable)
    return None


def dwfm_collapse(rec: Records, reachable: float | None) -> tuple[Span | None, float | None]:
    """The collapse, and when goodput first rose to the yardstick again (None: never)."""
    if reachable is None:
        return None, None
    rows = _after(rec.dwfm, reachable + METASTABLE_AFTER)
    if not rows:
        return None, None
    judged = rows[0]
    if (int(judged["leases_valid"]) >= int(judged["droplets"])
            or float(judged["goodput"]) >= METASTABLE_GOODPUT):
        return None, None
    start = float(judged["t"])
    good = next((float(r["t"]) for r in rows if float(r["goodput"]) >= METASTABLE_GOODPUT),
                None)
    whole = next((float(r["t"]) for r in rows if int(r["leases_valid"]) >= int(r["droplets"])),
                 None)
    return Span(start, whole), good


def _backlogged(row: Mapping[str, Any]) -> bool:
    return int(row["backlog"]) > BACKLOG_BOUND or float(row["oldest_age"]) > BACKLOG_AGE


def network_backlog(rec: Records) -> Span | None:
    over = [float(r["t"]) for r in _after(rec.network, rec.t_fault) if _backlogged(r)]
    return Span(over[0], _next_sample(rec.network, over[-1])) if over else None


def _next_sample(rows: Sequence[Mapping[str, Any]], t: float) -> float | None:
    """The first sample after ``t`` (the signal's end), None if ``t`` was the last."""
    return min((float(r["t"]) for r in rows if float(r["t"]) > t), default=None)


def _totals(rec: Records) -> list[Mapping[str, Any]]:
    return sorted((r for r in rec.nlb if r.get("az") == "all"), key=lambda r: float(r["t"]))


def nlb_flapping(rec: Records) -> tuple[Span | None, int, float]:
    """The flapping, the flips and the healthy capacity removed after the fault."""
    rows = _totals(rec)
    before = [r for r in rows if float(r["t"]) < rec.t_fault]
    base_flips = int(before[-1]["flips"]) if before else 0
    base_removed = float(before[-1]["removed"]) if before else 0.0
    after = [r for r in rows if float(r["t"]) >= rec.t_fault]
    if not after:
        return None, 0, 0.0
    flips = int(after[-1]["flips"]) - base_flips
    removed = float(after[-1]["removed"]) - base_removed
    first = next((float(r["t"]) for r in after if int(r["flips"]) > base_flips), None)
    if first is None or removed <= 0:
        return None, flips, removed
    last_flips, last_removed = int(after[-1]["flips"]), float(after[-1]["removed"])
    last_change = next(float(r["t"]) for r in after
                       if int(r["flips"]) == last_flips and float(r["removed"]) == last_removed)
    return Span(first, last_change), flips, removed


def _normal_at(rec: Records) -> list[tuple[float, bool]]:
    """(t, every signal normal) at each sample time of any signal, from the latest sample of
    each; a signal not sampled yet counts as normal (the component is not in the run)."""
    events: list[tuple[float, str, Mapping[str, Any]]] = []
    for name, rows in (("dwfm", rec.dwfm), ("network", rec.network)):
        events += [(float(r["t"]), name, r) for r in rows]
    events += [(float(r["t"]), f"nlb:{r.get('az')}", r) for r in rec.nlb if r.get("az") != "all"]
    events.sort(key=lambda e: e[0])
    latest: dict[str, Mapping[str, Any]] = {}
    out: list[tuple[float, bool]] = []
    for t, name, row in events:
        latest[name] = row
        ok = True
        for key, r in latest.items():
            if key == "dwfm":
                ok &= int(r["leases_valid"]) >= int(r["droplets"])
            elif key == "network":
                ok &= not _backlogged(r)
            else:
                ok &= int(r.get("unhealthy", 0)) == 0 and not r.get("failed_over")
        out.append((t, ok))
    return out


def recovery(rec: Records, start: float, after: float) -> Span:
    """From ``start`` until every signal has been normal for ``SETTLED_FOR`` s, counting from
    ``after`` (the last other phase's end) on; end None if not by the run's end."""
    since: float | None = None
    for t, ok in _normal_at(rec):
        if t < after:
            continue
        if not ok:
            since = None
            continue
        since = t if since is None else since
        if t - since >= SETTLED_FOR:
            return Span(start, since)
    return Span(start, None)


@dataclasses.dataclass(frozen=True)
class Detected:
    phases: dict[str, Span]
    """The phases that appeared."""
    figures: dict[str, Any]


def detect(rec: Records) -> Detected:
    reachable = reachable_again(rec)
    found: dict[str, Span | None] = {DNS_EMPTY: dns_empty(rec)}
    found[LEASES] = leases_expiring(rec, reachable)
    collapse, good_again = dwfm_collapse(rec, reachable)
    found[COLLAPSE] = collapse
    found[BACKLOG] = network_backlog(rec)
    flapping, flips, removed = nlb_flapping(rec)
    found[FLAPPING] = flapping
    phases = {k: v for k, v in found.items() if v is not None}
    ends = [s.end if s.end is not None else rec.t_end for s in phases.values()]
    if phases:
        last = max(ends)
        phases[RECOVERY] = recovery(rec, min(reachable or last, last), last)
    dwfm_after = _after(rec.dwfm, rec.t_fault)
    net_after = _after(rec.network, rec.t_fault)
    figures: dict[str, Any] = {
        "reachable_again": reachable,
        "goodput_again": good_again,
        "leases_lowest": min((int(r["leases_valid"]) for r in dwfm_after), default=None),
        "backlog_largest": max((int(r["backlog"]) for r in net_after), default=None),
        "backlog_oldest": max((float(r["oldest_age"]) for r in net_after), default=None),
        "flips": flips,
        "capacity_removed": removed,
        "launch_failures": _launch_failures(rec),
    }
    return Detected(phases, figures)


def _launch_failures(rec: Records) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rec.launcher:
        outcome = str(r.get("outcome", ""))
        if float(r["t"]) >= rec.t_fault and outcome not in ("Launched", "pending"):
            out[outcome] = out.get(outcome, 0) + int(r.get("count", 0))
    return out


def goodput_until(rec: Records, start: float, until: float) -> float | None:
    """DWFM's highest goodput from ``start`` until before ``until`` (None: no sample)."""
    values = [float(r["goodput"]) for r in rec.dwfm if start <= float(r["t"]) < until]
    return max(values) if values else None


def largest_removal(rec: Records, interval: float) -> float:
    """The most healthy capacity the NLB removed within any ``interval`` s (cumulative
    ``removed`` samples, so the sampling period adds at most one sample's removals)."""
    rows = [(float(r["t"]), float(r["removed"])) for r in _totals(rec)]
    most = 0.0
    for i, (t0, r0) in enumerate(rows):
        base = rows[i - 1][1] if i else r0
        for t1, r1 in rows[i:]:
            if t1 - t0 > interval:
                break
            most = max(most, r1 - base)
    return most


def order_problems(phases: Mapping[str, Span]) -> list[str]:
    """Each phase must start no earlier than the one published before it (``ORDER_SLACK``);
    the recovery must end after every other phase."""
    problems = []
    rec_span = phases.get(RECOVERY)
    if rec_span is not None and rec_span.end is not None:
        late = [p for p, s in phases.items()
                if p != RECOVERY and s.end is not None and s.end > rec_span.end]
        problems += [f"{p} ended after the recovery" for p in late]
    present = [p for p in PHASES[:-1] if p in phases]
    for before, after in itertools.pairwise(present):
        if phases[after].start < phases[before].start - ORDER_SLACK:
            problems.append(f"{after} began {phases[before].start - phases[after].start:.1f}s "
                            f"before {before}, against the published order")
    return problems


STALL_FAULT = "enactor-a-stall"
"""The race's stall Fault (``components.scenarios.racefaults``)."""

CASCADE = "cascade"
"""Safeguards off: the race empties the record and every phase follows."""
CONTAINED = "contained"
"""The control loop's safeguards on, the same faults: the record never empties, nothing
follows."""
OUTSIDE = "outside-fault"
"""The cascade's safeguards on and DynamoDB made unreachable from outside (the backend
stopped): the leases expire, and the fleet recovers without a collapse, within bounds."""

EXPECTED = {
    CASCADE: "the regional record goes empty and the six phases follow in the published order; "
             "DWFM stays collapsed until the manual restart; everything recovers",
    CONTAINED: "the regional record never goes empty and no later phase starts",
    OUTSIDE: "the leases expire while DynamoDB is stopped; DWFM re-establishes every lease "
             "without a collapse, the network backlog stays bounded, no NLB removes more "
             "capacity per interval than the velocity cap; everything recovers",
}


@dataclasses.dataclass(frozen=True)
class Steps:
    """What the runner did, when (unix times; None: not done)."""

    t_dwfm_restart: float | None = None
    t_failover_off: float | None = None
    recovery_bound: float = 95.5
    """Seconds after DynamoDB is back within which the throttled fleet holds every lease
    (``core.dwfm.recovery_bound``)."""
    velocity_cap: float = 5.0
    velocity_interval: float = 60.0


@dataclasses.dataclass(frozen=True)
class Judged:
    kind: str
    passed: bool
    reasons: list[str]
    phases: dict[str, Span]
    figures: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "expected": EXPECTED[self.kind], "passed": self.passed,
                "reasons": self.reasons,
                "phases": {k: v.to_json() for k, v in self.phases.items()},
                "figures": self.figures}


def judge(rec: Records, kind: str, steps: Steps) -> Judged:
    if kind not in EXPECTED:
        raise ValueError(f"unknown expectation {kind!r}: one of {', '.join(EXPECTED)}")
    found = detect(rec)
    phases, figures = found.phases, dict(found.figures)
    reasons: list[str] = []
    if not rec.client_outcomes:
        reasons.append("no DynamoDB client request recorded")
    if not rec.dwfm:
        reasons.append("no DWFM sample recorded (dwfm.jsonl)")
    if kind in (CASCADE, CONTAINED):
        figures["fault_injections"] = dict(rec.injected or {})
        if not (rec.injected or {}).get(STALL_FAULT):
            reasons.append(f"the race's stall ({STALL_FAULT}) never acted: its faults did not "
                           "reach the enactors")
    if kind == CASCADE:
        reasons += [f"phase {p} did not appear" for p in PHASES if p not in phases]
        reasons += order_problems(phases)
        _judge_collapse_held(rec, phases, steps, figures, reasons)
        if RECOVERY in phases and phases[RECOVERY].end is None:
            reasons.append("the run ended before every signal was back to normal")
        if not figures["launch_failures"].get("InsufficientCapacity"):
            reasons.append("no launch failed InsufficientCapacity while the leases were gone")
    elif kind == CONTAINED:
        reasons += [f"phase {p} appeared: {phases[p].to_json()}" for p in PHASES[:-1]
                    if p in phases]
    else:
        _judge_outside(rec, phases, steps, figures, reasons)
    return Judged(kind, not reasons, reasons, phases, figures)


def _judge_collapse_held(rec: Records, phases: Mapping[str, Span], steps: Steps,
                         figures: dict[str, Any], reasons: list[str]) -> None:
    collapse = phases.get(COLLAPSE)
    if collapse is None or steps.t_dwfm_restart is None:
        if steps.t_dwfm_restart is None:
            reasons.append("the manual DWFM restart was not taken")
        return
    held = goodput_until(rec, collapse.start, steps.t_dwfm_restart)
    figures["goodput_until_restart"] = held
    if steps.t_dwfm_restart < collapse.start:
        reasons.append("the manual DWFM restart came before the collapse was judged")
    elif held is None or held >= METASTABLE_GOODPUT:
        reasons.append(f"DWFM's goodput rose to {held} before the manual restart: the collapse "
                       "did not hold by itself")


def _judge_outside(rec: Records, phases: Mapping[str, Span], steps: Steps,
                   figures: dict[str, Any], reasons: list[str]) -> None:
    if DNS_EMPTY in phases:
        reasons.append("the regional record went empty: the outside fault was to leave DNS be")
    if LEASES not in phases:
        reasons.append("no lease expired: DynamoDB's outage did not reach DWFM")
    if COLLAPSE in phases:
        reasons.append(f"DWFM collapsed despite dwfm-throttle: {phases[COLLAPSE].to_json()}")
    reachable = figures.get("reachable_again")
    whole = next((float(r["t"]) for r in _after(rec.dwfm, reachable or rec.t_end)
                  if int(r["leases_valid"]) >= int(r["droplets"])), None)
    figures["all_leases_after"] = None if whole is None or reachable is None \
        else round(whole - reachable, 3)
    if reachable is None:
        reasons.append("the DynamoDB clients never succeeded again after the outage")
    elif whole is None or whole - reachable > steps.recovery_bound:
        reasons.append(f"not every lease was back within {steps.recovery_bound:g}s of DynamoDB's "
                       f"return (took {figures['all_leases_after']})")
    largest, oldest = figures.get("backlog_largest"), figures.get("backlog_oldest")
    if largest is None:
        reasons.append("no Network Manager sample recorded (netmanager.jsonl)")
    elif largest > BACKLOG_BOUND or (oldest or 0) > BACKLOG_AGE:
        reasons.append(f"the network backlog reached {largest} states, the oldest {oldest}s "
                       f"(bound {BACKLOG_BOUND} states, {BACKLOG_AGE:g}s)")
    removal = largest_removal(rec, steps.velocity_interval)
    figures["largest_removal_per_interval"] = removal
    if removal > steps.velocity_cap:
        reasons.append(f"the NLB removed {removal:g} healthy capacity within "
                       f"{steps.velocity_interval:g}s, over the velocity cap "
                       f"{steps.velocity_cap:g}")
    if RECOVERY in phases and phases[RECOVERY].end is None:
        reasons.append("the run ended before every signal was back to normal")
