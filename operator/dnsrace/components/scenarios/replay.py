"""The replay scenario: a checker counterexample carried out by the real enactors.

``dnsrace scenario run replay TRACE.json`` takes ``dnsrace check -o json``'s report, compiles the
chosen counterexample (``core.replay.compile_trace``) and carries the schedule out on the lab:
it creates the trace's plans itself when the trace's planner adds them (the checker's own plans,
so the records are the same), starts each enactor at its first step, and stops and resumes the
enactors with hold Faults at the hooks where the trace interleaves them. The enactors' code does
everything else. At the end it compares each endpoint with the trace's last state, in the DNS
etcd and through CoreDNS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from dnsrace import settings as settings_mod
from dnsrace.check import model
from dnsrace.components.scenarios.lab import Lab, LabParams, Report, dns_query, wait_until
from dnsrace.core import plans, replay, verdicts
from dnsrace.core.safeguards import Safeguards
from dnsrace.kube import plans as kube_plans

PORT = 18200
STEP_TIMEOUT = 30.0
"""Seconds a step's effect (or an enactor reaching its hold) may take before the replay fails."""


@dataclasses.dataclass(frozen=True)
class ReplayParams(LabParams):
    prop: str | None = None
    """The counterexample to replay (default: never-empty, else the first)."""


async def run_replay(cfg: settings_mod.Settings, trace: dict[str, Any], params: ReplayParams,
                     run_dir: Path, report: Report) -> verdicts.Verdict:
    schedule = replay.compile_trace(trace, params.prop)
    params = dataclasses.replace(params, safeguards=Safeguards.parse(schedule.safeguards),
                                 keep=schedule.keep)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "trace.json").write_text(json.dumps(trace, indent=1))
    zone = cfg.dns.zone
    full = {e: f"{e}.{zone}" for e in schedule.endpoints}
    plan_endpoints = tuple(full[e] for e in schedule.endpoints)
    steps_seen: list[dict[str, Any]] = []
    async with Lab(cfg, params, run_dir, report) as lab:
        await lab.reset()
        lab.mark("lab reset", prop=schedule.prop, actions=len(schedule.actions))
        await lab.follow_lifecycle()
        await lab.start("prober", "prober", "--out", str(run_dir / "prober.jsonl"),
                        "--rate", str(params.probe_rate), port=PORT + 5)
        store = kube_plans.KubePlanStore(lab.api, lab.ns, zone)
        for action in schedule.actions:
            t0 = time.time()
            await _carry_out(lab, store, action, plan_endpoints, full)
            steps_seen.append({"action": action.kind, "process": action.process,
                               "steps": list(action.steps), "t": t0,
                               "seconds": round(time.time() - t0, 2),
                               "holds": [dataclasses.asdict(h) for h in action.holds]})
            lab.mark(f"{action.kind} {action.process}".strip(), steps=list(action.steps),
                     serials=list(action.serials) or None,
                     holds=[h.name for h in action.holds] or None)
        # CoreDNS caches an answer for the record TTL: the end state is read through it after.
        await asyncio.sleep(plans.DEFAULT_TTL + 1)
        end: dict[str, Any] = {}
        live = {int(p["spec"]["serial"]) for p in await lab.plan_objects()
                if not p["metadata"].get("deletionTimestamp")}
        for short, name in full.items():
            state = await lab.call("read endpoint", functools.partial(lab.store.read, name))
            rcode, addrs = await dns_query(cfg, name)
            end[short] = {
                "serial": state.marker.serial if state.marker else None,
                "addresses": sum(1 for r in state.records.values() if r.host),
                "plan_exists": bool(state.marker and state.marker.serial in live),
                "dns": {"rcode": rcode, "addresses": addrs}}
        await lab.delete_faults()  # every hold: the enactors may go on and stop cleanly
        await lab.stop("prober")
        await lab.stop_recorder()
        (run_dir / "timeline.json").write_text(json.dumps(lab.timeline, indent=1))
        (run_dir / "events.json").write_text(json.dumps(await lab.events(), indent=1))
        observed = {"scenario": "replay", "safeguards": str(params.safeguards),
                    "property": schedule.prop, "trace_final": schedule.final, "end": end,
                    "actions": steps_seen, "zone": zone, "scope": lab.ns,
                    "restarts": lab.write_restarts(), "outages": lab.outages}
        (run_dir / "observed.json").write_text(json.dumps(observed, indent=1))
    verdict = judge(observed, str(run_dir))
    (run_dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
    return verdict


def judge(observed: dict[str, Any], run_dir: str = "") -> verdicts.Verdict:
    """The real endpoints must end as the trace's do, and show its violation through CoreDNS."""
    reasons: list[str] = []
    final: dict[str, Any] = observed.get("trace_final", {})
    end: dict[str, Any] = observed.get("end", {})
    for name, (serial, addresses) in sorted(final.items()):
        got = end.get(name)
        if got is None:
            reasons.append(f"{name}: not read at the end")
            continue
        if got["serial"] != serial:
            reasons.append(f"{name}: on plan {got['serial']}, the trace ends on plan {serial}")
        if (got["addresses"] == 0) != (addresses == 0):
            reasons.append(f"{name}: {got['addresses']} address(es) in the DNS etcd, the trace "
                           f"ends with {addresses}")
        answered = bool(got["dns"]["addresses"])
        if answered != (addresses > 0):
            reasons.append(f"{name}: CoreDNS answered {got['dns']}, the trace ends with "
                           f"{addresses} address(es)")
    prop = observed.get("property")
    if prop == "never-empty" and not any(
            e["dns"]["rcode"] in ("NXDOMAIN", "NOERROR") and not e["dns"]["addresses"]
            for e in end.values()):
        reasons.append("no endpoint answered NXDOMAIN or NODATA through CoreDNS")
    if prop == "active-plan-exists" and not any(
            e["serial"] is not None and not e["plan_exists"] for e in end.values()):
        reasons.append("no endpoint is on a deleted plan")
    return verdicts.Verdict(
        safeguards=observed.get("safeguards", "off"),
        expected=f"the trace's {prop} violation, and its end state, on the real components",
        passed=not reasons, reasons=reasons,
        figures={"property": prop, "end": end, "trace_final": final,
                 "actions": len(observed.get("actions", []))},
        run_dir=run_dir)


async def _carry_out(lab: Lab, store: kube_plans.KubePlanStore, action: replay.Action,
                     endpoints: tuple[str, ...], full: dict[str, str]) -> None:
    if action.kind == "plans":
        for serial in action.serials:
            plan = model.make_plan(serial, endpoints)
            await lab.call(f"create plan {serial}", functools.partial(_create, store, plan))
    elif action.kind == "start":
        i = lab.cfg.lab.enactors.index(action.process) if action.process in \
            lab.cfg.lab.enactors else len(lab.cfg.lab.enactors)
        await lab.start(action.process, "enactor", "--name", action.process,
                        port=PORT + 1 + i)
    elif action.kind == "hold":
        for hold in action.holds:
            spec: dict[str, Any] = {"target": hold.enactor, "action": "hold",
                                    "step": hold.step, "count": 1, "skip": hold.skip}
            if hold.endpoint:
                spec["endpoints"] = [full[hold.endpoint]]
            await lab.create_fault_spec(hold.name, spec)
    elif action.kind == "release":
        for hold in action.holds:
            await lab.delete_fault(hold.name)
    elif action.kind == "await":
        await _await(lab, action, full)
    else:
        raise ValueError(f"unknown action {action.kind!r}")


async def _create(store: kube_plans.KubePlanStore, plan: plans.Plan) -> None:
    try:
        await store.create(plan)
    except client.ApiException as exc:
        if exc.status != 409:
            raise


async def _await(lab: Lab, action: replay.Action, full: dict[str, str]) -> None:
    what = f"steps {action.steps[0]}-{action.steps[1]} ({action.process})"

    async def effects_seen() -> bool:
        for kind, subject, serial in action.effects:
            if kind == "marker":
                if (await lab.markers()).get(full[subject]) != serial:
                    return False
            elif kind == "addresses":
                state = await lab.store.read(full[subject])
                if sum(1 for r in state.records.values() if r.host) != serial:
                    return False
            elif kind in ("terminating", "finalized"):
                objs = {int(p["spec"]["serial"]): p for p in await lab.plan_objects()}
                obj = objs.get(serial)
                if obj is None:
                    continue
                if kind == "terminating" and not obj["metadata"].get("deletionTimestamp"):
                    return False
                if kind == "finalized" and any(
                        subject in f for f in obj["metadata"].get("finalizers") or []):
                    return False
        return True

    if not await wait_until(effects_seen, STEP_TIMEOUT, interval=0.1):
        raise RuntimeError(f"{what}: the trace's effects {list(action.effects)} were not seen "
                           f"within {STEP_TIMEOUT:.0f}s")
    if action.holds and action.reach:
        names = {h.name for h in action.holds}

        async def reached() -> bool:
            return any(int(f["status"].get("injected") or 0) >= 1
                       for f in await lab.faults() if f["name"] in names)

        if not await wait_until(reached, STEP_TIMEOUT, interval=0.1):
            steps = " or ".join(h.step for h in action.holds)
            raise RuntimeError(f"{what}: {action.process} did not reach its hold at {steps} "
                               f"within {STEP_TIMEOUT:.0f}s")
