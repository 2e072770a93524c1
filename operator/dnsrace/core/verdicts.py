"""The race scenario's verdict, as a pure function over a run folder's records.

The runner (``components.scenarios.race``) only injects faults and records: the prober's answers
(``prober.jsonl``, ``core.observations``), the DNS store's own transactions (``store.jsonl``,
``core.storelog``), the Faults' injection counts (``faults.json``) and what it saw live at the end
(``observed.json``: the independent DNS query, convergence, conditions, the repair). ``judge``
turns those into figures and reasons; nothing else decides whether a run was "as expected", so
``dnsrace scenario judge RUN_DIR`` gives the same verdict again from the folder alone, and unit
tests drive every way a run must fail from small recorded folders.

Each safeguard set has its own expectation (``expectation``), derived from what each safeguard
removes from the incident's chain: the stale write (fencing, single-writer), the removal of an
active plan's records (protect-active, no-empty), the blocked automation (protect-active keeps the
plan, self-heal rebuilds the endpoint).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from dnsrace.core import ddb, observations, storelog
from dnsrace.core.safeguards import Safeguards

DEFINITE_EMPTY = ("NXDOMAIN", "NOERROR")
"""A window counts as the record being gone only when CoreDNS said so: NXDOMAIN, or NOERROR with
no address (NODATA). SERVFAIL and timeouts are the data plane failing, not the record."""

MIN_SAMPLED = 0.8
"""The prober must have sampled at least this share of the answers its rate implies."""

CLIENT_SHARE = 0.99
"""Clients: the share of requests that must succeed (before the fault, after recovery, and
throughout with the safeguards on), or fail with a DNS error while the record is empty."""
CLIENT_RECOVERY = 10.0
"""Seconds after the repair from which the clients must succeed again."""
CLIENT_MIN_REQUESTS = 20
"""A share over fewer requests than this is no evidence."""


@dataclasses.dataclass(frozen=True)
class Expectation:
    text: str
    outage: bool
    """The incident must happen: the regional record empties, stays empty, blocks; repair helps."""
    may_empty: bool
    """An endpoint's records may be removed (only when no safeguard stops the removal)."""
    may_regress: bool
    """An endpoint's active serial may go down (the stale write lands)."""
    may_block: bool
    """An endpoint may be left on a deleted plan, so the enactors stay blocked until repair."""


def expectation(sg: Safeguards) -> Expectation:
    """What the race's faults may and must do under ``sg`` (docs/safeguards.md says why)."""
    stale_write = not (sg.fencing or sg.single_writer)
    removal = stale_write and not (sg.protect_active or sg.no_empty)
    block = stale_write and not (sg.protect_active or sg.self_heal)
    if not sg.control_loop():
        # serve-stale alone changes nothing here: a deleted record is NXDOMAIN all the same.
        return Expectation(
            "the regional endpoint goes empty (NXDOMAIN) and stays empty while plans keep "
            "coming; the enactors stay blocked; repair restores it",
            outage=True, may_empty=True, may_regress=True, may_block=True)
    if not stale_write:
        text = ("no empty answer and no stale serial, in the store or through CoreDNS; every "
                "endpoint on the newest plan")
    elif removal:
        text = ("the regional endpoint may empty, then heals by itself: every empty window "
                "closes and every endpoint reaches the newest plan without repair")
    elif block:
        text = ("never empty; the stale write may land, and its deleted plan may leave the "
                "endpoint blocked on stale addresses until repair")
    else:
        text = ("never empty; the stale write may land (a stale serial for a while), then the "
                "endpoint moves on; every endpoint on the newest plan")
    return Expectation(text, outage=False, may_empty=removal, may_regress=stale_write,
                       may_block=block)


@dataclasses.dataclass
class Verdict:
    safeguards: str
    expected: str
    passed: bool
    reasons: list[str]
    figures: dict[str, Any]
    run_dir: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """Everything a verdict reads, as loaded from a run folder."""

    observed: dict[str, Any]
    probes: list[observations.Observation]
    store: list[storelog.Revision]
    faults: list[dict[str, Any]]
    clients: list[ddb.Request] = dataclasses.field(default_factory=list)
    restarts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        def read(name: str, default: Any) -> Any:
            path = run_dir / name
            return json.loads(path.read_text()) if path.exists() else default

        probes_path, store_path = run_dir / "prober.jsonl", run_dir / "store.jsonl"
        clients_path = run_dir / "ddb-client.jsonl"
        return cls(
            observed=read("observed.json", {}),
            probes=observations.load(probes_path) if probes_path.exists() else [],
            store=storelog.load(store_path) if store_path.exists() else [],
            faults=read("faults.json", []),
            clients=ddb.load_requests(clients_path) if clients_path.exists() else [],
            restarts=read("restarts.json", []),
        )


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def judge(record: RunRecord, run_dir: str = "") -> Verdict:
    """Figures and reasons for one race run; ``passed`` when there is no reason against."""
    obs = record.observed
    sg = Safeguards.parse(obs.get("safeguards", "off"))
    exp = expectation(sg)
    t_fault = float(obs.get("t_fault", 0.0))
    regional = str(obs.get("regional", ""))
    figures: dict[str, Any] = dict(obs.get("calibration", {}))
    reasons: list[str] = []

    # -- through CoreDNS (the prober) ---------------------------------------------------------
    every = observations.analyze(record.probes, since=t_fault)
    definite = observations.analyze(record.probes, since=t_fault, failures_are_empty=False)
    reg = definite.endpoints.get(regional)
    reg_windows = [w for w in (reg.windows if reg else ()) if set(w.rcodes) <= set(
        DEFINITE_EMPTY)]
    reg_longest = max((w.duration for w in reg_windows), default=0.0)
    figures["answers"] = every.answers
    probe_span = float(obs.get("t_probe_end", t_fault)) - t_fault
    expected_answers = (float(obs.get("probe_rate", 0)) * len(obs.get("endpoints", []))
                        * probe_span)
    figures["answers_expected"] = round(expected_answers)
    figures["empty_answers"] = every.empty
    figures["nxdomain_or_nodata_answers"] = definite.empty
    figures["failed_answers"] = every.empty - definite.empty
    figures["endpoints_empty"] = sorted(e for e, s in every.endpoints.items() if s.empty)
    figures["endpoints_nxdomain"] = sorted(e for e, s in definite.endpoints.items() if s.empty)
    figures["time_to_first_empty"] = _round(
        reg.first_empty - t_fault if reg and reg.first_empty is not None else None)
    figures["regional_empty_window"] = round(reg_longest, 2)
    longest = every.longest
    figures["longest_empty_window"] = round(longest.duration, 2) if longest else 0.0
    figures["stale_regressions"] = len(every.regressions)
    figures["stale_regression_pairs"] = [(r.name, r.from_serial, r.to_serial)
                                         for r in every.regressions[:20]]

    # -- in the store (the DNS etcd's own transactions) ----------------------------------------
    store = storelog.replay(record.store, obs.get("zone", ""), obs.get("scope", ""),
                            obs.get("endpoints"))
    after = [w for w in store.windows if w.start >= t_fault]
    reg_removed = next((w for w in after if w.name == regional), None)
    figures["store_revisions"] = store.revisions
    figures["store_endpoints_emptied"] = sorted({w.name for w in after})
    figures["store_empty_at_end"] = store.empty_at_end()
    figures["time_to_records_removed"] = _round(
        reg_removed.start - t_fault if reg_removed else None)
    figures["store_regressions"] = len(store.regressions)
    figures["store_regression_pairs"] = [(r.name, r.from_serial, r.to_serial, r.enactor)
                                         for r in store.regressions[:20]]
    figures["regional_marker_writes"] = len(store.writes_of(regional))

    # -- the faults and the end state ----------------------------------------------------------
    injected = {f["name"]: int((f.get("status") or {}).get("injected") or 0)
                for f in record.faults}
    figures["fault_injections"] = injected
    for key in ("direct_query_regional", "converged", "enactor_phases_on_newest",
                "conditions_on_newest", "endpoints_on_deleted_plans", "blocked_warnings",
                "plans_during_faults", "newest_serial", "repair_changed", "repair_restored",
                "time_to_restore", "stall_attempts", "stall_retunes"):
        if key in obs:
            figures[key] = obs[key]
    on_deleted = list(obs.get("endpoints_on_deleted_plans", []))
    converged = bool(obs.get("converged"))
    figures["blocked"] = bool(on_deleted) and not converged

    # -- evidence that the run measured anything ------------------------------------------------
    excused = starved_faults(record.faults, store.writes, sg, obs.get("t_faults_live"))
    figures["faults_idle_without_the_lease"] = excused
    if not record.faults or not all(c for n, c in injected.items() if n not in excused):
        idle = sorted(n for n, c in injected.items() if not c and n not in excused) \
            or ["(no Fault recorded)"]
        reasons.append(f"faults never injected: {', '.join(idle)}")
    if expected_answers <= 0 or every.answers < MIN_SAMPLED * expected_answers:
        reasons.append(f"the prober sampled {every.answers} answers, fewer than "
                       f"{MIN_SAMPLED:.0%} of the {expected_answers:.0f} its rate implies")
    if store.revisions < 2:
        reasons.append("the store recorder saw no transaction after its snapshot")
    figures["outages"] = [f"{o['call']}: {o['end'] - o['start']:.1f}s"
                          for o in obs.get("outages", [])]
    restarts = obs.get("restarts", [])
    figures["component_restarts"] = [f"{r['component']} {r['how']}" for r in restarts]
    if restarts and not obs.get("restarts_expected"):
        # The race injects no kill: a component that died did so by itself (or by an outside
        # hand), and what the run measured is not the race alone.
        reasons.append(f"components died during the run: "
                       f"{', '.join(figures['component_restarts'])} (restarted)")

    if exp.outage:
        _judge_outage(obs, figures, reasons, regional, reg_longest, reg_removed is not None)
    else:
        _judge_safeguarded(exp, figures, reasons, converged, on_deleted)
    if obs.get("clients"):
        _judge_clients(record.clients, obs, exp, figures, reasons)
    return Verdict(safeguards=str(sg), expected=exp.text, passed=not reasons, reasons=reasons,
                   figures=figures, run_dir=run_dir)


def starved_faults(faults: list[dict[str, Any]], writes: tuple[storelog.MarkerWrite, ...],
                   sg: Safeguards, live: list[float] | None) -> list[str]:
    """Faults never injected because their enactor never wrote while they were live.

    Under single-writer an enactor applies only while it holds the writer Lease, which has no
    fairness: one can lose every race for it through a whole run, and then its slow-write and
    clean-up Faults have nothing to slow. The store shows it: no marker write of that enactor
    between the Faults' creation and removal (``live``). Anywhere else, or with such a write, an
    idle Fault is a fault machinery that did not work."""
    if not sg.single_writer or not live:
        return []
    lo, hi = live
    wrote = {w.enactor for w in writes if lo <= w.t <= hi}
    return sorted(f["name"] for f in faults
                  if not int((f.get("status") or {}).get("injected") or 0)
                  and f["spec"].get("target") not in wrote
                  and f["name"] != "enactor-a-stall")


def _judge_outage(obs: dict[str, Any], figures: dict[str, Any], reasons: list[str],
                  regional: str, reg_longest: float, removed_in_store: bool) -> None:
    hold, observe = float(obs.get("hold", 0)), float(obs.get("observe", 0))
    first = figures["time_to_first_empty"]
    if first is None:
        reasons.append(f"the regional endpoint did not answer NXDOMAIN/NODATA within {observe}s")
    elif first > observe:
        reasons.append(f"the first empty answer came {first}s after the stall, later than the "
                       f"{observe}s observation window")
    if reg_longest < hold:
        reasons.append(f"the regional endpoint's NXDOMAIN/NODATA window lasted "
                       f"{reg_longest:.2f}s, less than the {hold}s hold")
    if figures["endpoints_nxdomain"] != [regional]:
        reasons.append(f"endpoints answering NXDOMAIN/NODATA were {figures['endpoints_nxdomain']}"
                       f", not the regional endpoint alone")
    if figures["store_endpoints_emptied"] != [regional]:
        reasons.append(f"endpoints emptied in the store were "
                       f"{figures['store_endpoints_emptied']}, not the regional endpoint alone")
    if not removed_in_store:
        reasons.append("the regional records' removal was not seen in the store")
    direct = obs.get("direct_query_regional") or {}
    if direct.get("rcode") not in DEFINITE_EMPTY or direct.get("addresses"):
        reasons.append(f"the independent query at the end of the hold answered {direct}, not "
                       f"NXDOMAIN or NODATA")
    if not figures["blocked"]:
        reasons.append("the enactors were not left blocked")
    if not any(c.get("status") == "False" and c.get("reason") == "ActivePlanMissing"
               for c in obs.get("conditions_on_newest", [])):
        reasons.append("no enactor condition on the newest plan says why it is blocked")
    if not obs.get("repair_restored"):
        reasons.append("repair did not restore the regional endpoint")


def _judge_safeguarded(exp: Expectation, figures: dict[str, Any], reasons: list[str],
                       converged: bool, on_deleted: list[str]) -> None:
    if not exp.may_empty:
        if figures["store_endpoints_emptied"]:
            reasons.append(f"records emptied in the store on "
                           f"{', '.join(figures['store_endpoints_emptied'])}")
        if figures["empty_answers"]:
            reasons.append(f"{figures['empty_answers']} empty answers on "
                           f"{', '.join(figures['endpoints_empty'])}")
    elif figures["store_empty_at_end"]:
        reasons.append(f"still empty in the store at the end: "
                       f"{', '.join(figures['store_empty_at_end'])}")
    if not exp.may_regress:
        if figures["store_regressions"]:
            reasons.append(f"{figures['store_regressions']} active-serial regressions in the "
                           f"store")
        if figures["stale_regressions"]:
            reasons.append(f"{figures['stale_regressions']} stale regressions through CoreDNS")
    if not exp.may_block:
        if not converged:
            reasons.append("the endpoints did not converge on the newest plan")
        if on_deleted:
            reasons.append(f"endpoints left on deleted plans: {', '.join(on_deleted)}")
    elif not converged and not figures.get("repair_restored"):
        reasons.append("the endpoints were left blocked and repair did not restore them")


SERIES_RANGES = ("time_to_records_removed", "time_to_first_empty", "stall_attempts",
                 "regional_empty_window", "time_to_restore", "plans_during_faults",
                 "regional_marker_writes", "answers", "client_requests",
                 "client_ok_before_fault", "client_dns_share_while_empty",
                 "client_time_to_recover", "client_ok_after_recovery", "client_ok_after_fault")
SERIES_TOTALS = ("empty_answers", "failed_answers", "stale_regressions", "store_regressions",
                 "client_dns_errors")
SERIES_COUNTS = ("blocked", "converged", "repair_restored")


def series(judged: list[Verdict]) -> dict[str, str]:
    """A series of runs summed up: the figures docs/benchmarks.md quotes, computed here."""
    out = {"runs as expected": f"{sum(v.passed for v in judged)}/{len(judged)}"}
    for v in judged:
        v.figures.setdefault("stall_injections", (v.figures.get("fault_injections") or {}).get(
            "enactor-a-stall"))
    for key in (*SERIES_RANGES, "stall_injections"):
        values = sorted(float(v.figures[key]) for v in judged
                        if isinstance(v.figures.get(key), int | float))
        if values:
            mid = values[len(values) // 2] if len(values) % 2 else (
                values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
            out[key] = f"{values[0]:g}-{values[-1]:g} (median {mid:g}, {len(values)} runs)"
    for key in SERIES_TOTALS:
        out[f"{key} (total)"] = str(sum(int(v.figures.get(key) or 0) for v in judged))
    for key in SERIES_COUNTS:
        out[f"{key} (runs)"] = f"{sum(bool(v.figures.get(key)) for v in judged)}/{len(judged)}"
    emptied = sorted({e for v in judged for e in v.figures.get("store_endpoints_emptied", [])})
    out["endpoints emptied in the store (any run)"] = ", ".join(emptied) or "none"
    return out


def _share(requests: list[ddb.Request], outcome: str) -> float | None:
    if not requests:
        return None
    return round(sum(r.outcome == outcome for r in requests) / len(requests), 4)


def _judge_clients(requests: list[ddb.Request], obs: dict[str, Any], exp: Expectation,
                   figures: dict[str, Any], reasons: list[str]) -> None:
    """The DynamoDB clients' view (``ddb-client.jsonl``): what the empty record did to them."""
    t_fault = float(obs.get("t_fault", 0.0))
    ttl = float(obs.get("record_ttl", 5))
    first_ok = next((r.t for r in sorted(requests, key=lambda r: r.t) if r.outcome == "ok"),
                    None)
    before = [r for r in requests if first_ok is not None and first_ok <= r.t < t_fault]
    after = [r for r in requests if r.t >= t_fault]
    outcomes: dict[str, int] = {}
    for r in requests:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    figures["client_requests"] = len(requests)
    figures["client_outcomes"] = dict(sorted(outcomes.items()))
    figures["client_ok_before_fault"] = _share(before, "ok")
    figures["client_dns_errors"] = sum(r.outcome == "dns" for r in after)
    figures["client_ok_after_fault"] = _share(after, "ok")
    if len(before) < CLIENT_MIN_REQUESTS:
        reasons.append(f"the clients made {len(before)} requests before the fault, too few "
                       f"to judge (need {CLIENT_MIN_REQUESTS})")
    elif (figures["client_ok_before_fault"] or 0) < CLIENT_SHARE:
        reasons.append(f"before the fault only {figures['client_ok_before_fault']:.2%} of "
                       f"client requests succeeded")
    if exp.outage:
        first_empty = figures.get("time_to_first_empty")
        t_repair = obs.get("t_repair")
        if first_empty is None or t_repair is None:
            reasons.append("no empty window and repair to judge the clients by")
            return
        empty = [r for r in requests if t_fault + first_empty + ttl <= r.t < t_repair]
        recovered = [r for r in requests if r.t >= t_repair + CLIENT_RECOVERY]
        failing = [r.t for r in requests if r.t >= t_repair and r.outcome != "ok"]
        figures["client_dns_share_while_empty"] = _share(empty, "dns")
        figures["client_dns_details_while_empty"] = sorted({r.detail for r in empty
                                                            if r.outcome == "dns"})
        figures["client_ok_after_recovery"] = _share(recovered, "ok")
        figures["client_time_to_recover"] = round(max(failing) - t_repair, 2) if failing \
            else 0.0
        if len(empty) < CLIENT_MIN_REQUESTS:
            reasons.append(f"only {len(empty)} client requests while the record was empty")
        elif (figures["client_dns_share_while_empty"] or 0) < CLIENT_SHARE:
            reasons.append(f"while the record was empty only "
                           f"{figures['client_dns_share_while_empty']:.2%} of client requests "
                           f"failed with a DNS error")
        if len(recovered) < CLIENT_MIN_REQUESTS:
            reasons.append(f"only {len(recovered)} client requests from {CLIENT_RECOVERY:g}s "
                           f"after the repair")
        elif (figures["client_ok_after_recovery"] or 0) < CLIENT_SHARE:
            reasons.append(f"{CLIENT_RECOVERY:g}s after the repair only "
                           f"{figures['client_ok_after_recovery']:.2%} of client requests "
                           f"succeeded")
    elif not exp.may_empty:
        if figures["client_dns_errors"]:
            reasons.append(f"{figures['client_dns_errors']} client requests failed with a DNS "
                           f"error")
        if len(after) < CLIENT_MIN_REQUESTS:
            reasons.append(f"only {len(after)} client requests under the faults")
        elif (figures["client_ok_after_fault"] or 0) < CLIENT_SHARE:
            reasons.append(f"only {figures['client_ok_after_fault']:.2%} of client requests "
                           f"succeeded under the faults")
