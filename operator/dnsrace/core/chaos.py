"""The chaos scenario's verdict: one outside fault at a time, each judged on its own window.

The runner (``components.scenarios.chaos``) keeps the planner and the enactors applying plans
with the safeguards on, and injects one fault per step: a component killed or paused (a Fault),
or a part of the control plane restarted (kube-apiserver, the DNS etcd, CoreDNS). It records when
each fault began and ended (``observed.json`` ``steps``), what it saw at the end of each step
(plans still Terminating), and the usual evidence: the prober's answers, the DNS store's
transactions, the components' restarts. ``judge`` turns those into one row per step; nothing else
decides whether a step passed, so ``dnsrace scenario judge`` gives the same result from the
folder alone.

An empty answer (no address, after the endpoint had answered with addresses) is caused by the
controllers when the store itself had no records for the endpoint then (or within one record TTL
before, as CoreDNS may cache the negative answer); otherwise by the data plane. A data-plane
empty answer to a query sent while CoreDNS had no process listening is counted apart: no
configuration can answer it (docs/safeguards.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dnsrace.core import observations, storelog, verdicts

CONVERGE_LIMIT = 10.0
"""Seconds after a fault ends within which every endpoint must be on the newest plan (the plan
that was newest when the fault ended, or a newer one)."""
TERMINATING_LIMIT = 10.0
"""Seconds after a fault ends after which no plan may still be Terminating from before."""
KINDS = ("kill", "pause", "restart")
PLANE_PARTS = ("kube-apiserver", "dns-etcd", "coredns")


@dataclasses.dataclass(frozen=True)
class Step:
    """One fault as the runner recorded it (``observed.json`` ``steps``)."""

    fault: str
    """``kind:target``, e.g. ``kill:enactor-a``, ``restart:dns-etcd``."""
    t_start: float
    t_end: float
    """When the fault was over: the kill sent, the pause ended, the part healthy again."""
    t_next: float
    """The end of this step's window (the next step's start, or the end of probing)."""
    newest_at_end: int
    """The newest plan serial when the fault ended."""
    t_down: float | None = None
    """Restart: when the part was stopped."""
    t_up: float | None = None
    """Restart: when the part answered its health check again."""
    terminating: tuple[tuple[str, float], ...] = ()
    """Plans Terminating at the end of the step, with the time their deletion began."""
    t_checked: float | None = None
    t_back: float | None = None
    """Kill: when the restarted component served its health check again (the fault's end)."""

    @property
    def kind(self) -> str:
        return self.fault.split(":", 1)[0]

    @property
    def target(self) -> str:
        return self.fault.split(":", 1)[1]

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Step:
        return cls(fault=body["fault"], t_start=body["t_start"], t_end=body["t_end"],
                   t_next=body["t_next"], newest_at_end=int(body["newest_at_end"]),
                   t_down=body.get("t_down"), t_up=body.get("t_up"),
                   terminating=tuple((str(n), float(t)) for n, t in body.get("terminating", [])),
                   t_checked=body.get("t_checked"), t_back=body.get("t_back"))


def parse_fault(text: str) -> tuple[str, str]:
    """``kind:target`` -> (kind, target), with a message naming what is wrong."""
    kind, sep, target = text.partition(":")
    if not sep or kind not in KINDS or not target:
        raise ValueError(f"fault {text!r}: expected KIND:TARGET with KIND one of "
                         f"{', '.join(KINDS)} (e.g. kill:enactor-a, restart:dns-etcd)")
    if kind == "restart" and target not in PLANE_PARTS:
        raise ValueError(f"fault {text!r}: restart takes one of {', '.join(PLANE_PARTS)}")
    if kind != "restart" and target != "planner" and not target.startswith("enactor-"):
        raise ValueError(f"fault {text!r}: {kind} takes the planner or an enactor")
    return kind, target


def _converged_at(revisions: list[storelog.Revision], zone: str, scope: str,
                  endpoints: list[str], serial: int, since: float) -> float | None:
    """The first time at or after ``since`` at which every endpoint's active serial in the store
    is ``serial`` or newer."""
    state = storelog.StoreState(zone, scope, endpoints)

    def done() -> bool:
        return all(state.serial.get(e, -1) >= serial for e in endpoints)

    checked = False
    for rev in revisions:
        if rev.t > since and not checked:
            checked = True
            if done():
                return since
        state.apply(rev)
        if rev.t >= since and done():
            return rev.t
    if not checked and done():
        return since
    return None


def _empty_answers(probes: list[observations.Observation],
                   windows: list[storelog.EmptyWindow], ttl: float
                   ) -> list[tuple[observations.Observation, bool]]:
    """Every empty answer, with whether the store had the endpoint empty then (controllers)."""
    answered: set[str] = set()
    out: list[tuple[observations.Observation, bool]] = []
    by_name: dict[str, list[storelog.EmptyWindow]] = {}
    for w in windows:
        by_name.setdefault(w.name, []).append(w)
    for o in sorted(probes, key=lambda o: o.t):
        if o.has_addresses:
            answered.add(o.name)
            continue
        if o.name not in answered:
            continue
        in_store = any(w.start <= o.t <= (w.end if w.end is not None else float("inf")) + ttl
                       for w in by_name.get(o.name, []))
        out.append((o, in_store))
    return out


def judge(observed: dict[str, Any], probes: list[observations.Observation],
          revisions: list[storelog.Revision], restarts: list[dict[str, Any]],
          query_timeout: float = 1.0) -> tuple[bool, list[str], dict[str, Any]]:
    """(passed, reasons, figures) for one chaos run; ``figures["steps"]`` has one row per fault."""
    reasons: list[str] = []
    zone, scope = observed.get("zone", ""), observed.get("scope", "")
    endpoints: list[str] = list(observed.get("endpoints", []))
    regional = observed.get("regional", "")
    ttl = float(observed.get("record_ttl", 5))
    steps = [Step.from_json(s) for s in observed.get("steps", [])]
    summary = storelog.replay(revisions, zone, scope, endpoints)
    probe_summary = observations.analyze(probes, failures_are_empty=True)
    empties = _empty_answers(probes, list(summary.windows), ttl)
    rows: list[dict[str, Any]] = []
    for step in steps:
        lo, hi = step.t_start, step.t_next
        label = step.fault
        in_window = [(o, s) for o, s in empties if lo <= o.t < hi]
        no_listener = [o for o, s in in_window if not s and step.fault == "restart:coredns"
                       and step.t_down is not None and step.t_up is not None
                       and step.t_down - query_timeout <= o.t <= step.t_up]
        by_controllers = [o for o, s in in_window if s]
        by_data_plane = [o for o, s in in_window if not s and o not in no_listener]
        regional_empty = [o for o, _ in in_window
                          if o.name == regional and o not in no_listener]
        stale = [r for r in probe_summary.regressions if lo <= r.t < hi]
        store_reg = [r for r in summary.regressions if lo <= r.t < hi]
        answers = sum(1 for o in probes if lo <= o.t < hi)
        conv = _converged_at(revisions, zone, scope, endpoints, step.newest_at_end, step.t_end)
        converge = None if conv is None else round(conv - step.t_end, 2)
        exits = [r for r in restarts if lo <= float(r["t"]) < hi]
        waited = [o for o in observed.get("outages", []) if lo <= float(o["start"]) < hi]
        own = [r for r in exits if r["component"] == step.target]
        others = sorted({r["component"] for r in exits if r["component"] != step.target})
        back: float | None
        if step.kind == "kill":
            back = (round(step.t_back - step.t_start, 2)
                    if own and step.t_back is not None else None)
        elif step.kind == "restart":
            back = None if step.t_up is None else round(step.t_up - step.t_start, 2)
        else:
            back = 0.0 if not own else None  # a paused process resumes; it must not die
        checked = step.t_checked if step.t_checked is not None else hi
        # The runner checks at least TERMINATING_LIMIT s after the fault ended; the plans the
        # enactors are finalizing in the normal churn are seconds old.
        stuck = sorted(name for name, since in step.terminating
                       if since < checked - TERMINATING_LIMIT)
        row = {
            "fault": label, "duration": round(step.t_end - step.t_start, 2),
            "answers": answers,
            "regional_empty": len(regional_empty),
            "empty_by_controllers": len(by_controllers),
            "empty_by_data_plane": len(by_data_plane),
            "empty_while_no_listener": len(no_listener),
            "stale_regressions": len(stale), "store_regressions": len(store_reg),
            "converged_after": converge, "back_after": back,
            "other_restarts": others, "stuck_terminating": stuck,
            "runner_waited": round(sum(float(o["end"]) - float(o["start"]) for o in waited), 2),
        }
        rows.append(row)
        if regional_empty:
            reasons.append(f"{label}: {len(regional_empty)} empty answers of the regional "
                           "endpoint")
        if by_controllers:
            names = sorted({o.name for o in by_controllers})
            reasons.append(f"{label}: {len(by_controllers)} empty answers caused by the "
                           f"controllers (records removed in the store) on {', '.join(names)}")
        if by_data_plane:
            names = sorted({o.name for o in by_data_plane})
            reasons.append(f"{label}: {len(by_data_plane)} empty answers from the data plane "
                           f"on {', '.join(names)}")
        if stale or store_reg:
            reasons.append(f"{label}: stale regressions, {len(stale)} through CoreDNS and "
                           f"{len(store_reg)} in the store")
        if converge is None or converge > CONVERGE_LIMIT:
            reasons.append(f"{label}: the endpoints were not all on plan {step.newest_at_end} "
                           f"or newer within {CONVERGE_LIMIT:.0f}s after the fault ended "
                           f"({'never' if converge is None else f'{converge}s'})")
        if back is None:
            reasons.append(f"{label}: {step.target} did not come back by itself"
                           + (" (it died while paused)" if step.kind == "pause" else ""))
        if stuck:
            reasons.append(f"{label}: plans still Terminating {TERMINATING_LIMIT:.0f}s after "
                           f"the fault: {', '.join(stuck)}")
        if answers == 0:
            reasons.append(f"{label}: the prober recorded no answer in this step")
    final = observed.get("final", {})
    if not steps:
        reasons.append("no fault step was recorded")
    if final.get("terminating"):
        reasons.append("plans left Terminating at the end: "
                       + ", ".join(str(n) for n in final["terminating"]))
    if not final.get("converged"):
        reasons.append("at the end, the endpoints were not all on the newest plan")
    missing = [n for n, alive in final.get("alive", {}).items() if not alive]
    if missing:
        reasons.append(f"components not running at the end: {', '.join(sorted(missing))}")
    figures: dict[str, Any] = {
        "steps": rows,
        "answers": len(probes),
        "regional_empty": sum(r["regional_empty"] for r in rows),
        "empty_while_no_listener": sum(r["empty_while_no_listener"] for r in rows),
        "stale_regressions": sum(r["stale_regressions"] for r in rows),
        "store_regressions": sum(r["store_regressions"] for r in rows),
        "converged_after_max": max((r["converged_after"] for r in rows
                                    if r["converged_after"] is not None), default=None),
        "outages": len(observed.get("outages", [])),
        "restarts": len(restarts),
        "final": final,
    }
    return not reasons, reasons, figures


def series(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fault over several runs' figures: runs, passed steps, worst figures."""
    by_fault: dict[str, list[dict[str, Any]]] = {}
    for figures in runs:
        for row in figures.get("steps", []):
            by_fault.setdefault(row["fault"], []).append(row)
    out = []
    for fault, rows in by_fault.items():
        conv = [r["converged_after"] for r in rows]
        out.append({
            "fault": fault, "runs": len(rows),
            "regional_empty": sum(r["regional_empty"] for r in rows),
            "empty_by_controllers": sum(r["empty_by_controllers"] for r in rows),
            "empty_by_data_plane": sum(r["empty_by_data_plane"] for r in rows),
            "empty_while_no_listener": sum(r["empty_while_no_listener"] for r in rows),
            "stale_regressions": sum(r["stale_regressions"] + r["store_regressions"]
                                     for r in rows),
            "converged_after_max": None if None in conv else max(conv),
            "back_after_max": max((r["back_after"] for r in rows
                                   if r["back_after"] is not None), default=None),
            "stuck_terminating": sum(len(r["stuck_terminating"]) for r in rows),
        })
    return out


EXPECTED = ("each fault: no empty answer caused by the controllers or by the data plane (bar "
            "CoreDNS's own restart), no stale regression, the component back by itself and "
            f"every endpoint on the newest plan within {CONVERGE_LIMIT:.0f}s")


def judge_record(record: verdicts.RunRecord, run_dir: str = "") -> verdicts.Verdict:
    passed, reasons, figures = judge(record.observed, record.probes, record.store,
                                     record.restarts)
    return verdicts.Verdict(safeguards=record.observed.get("safeguards", "on"),
                            expected=EXPECTED, passed=passed, reasons=reasons,
                            figures=figures, run_dir=run_dir)
