"""The race scenario: start the lab, inject the faults, observe, judge, repair, keep the evidence.

Called by ``dnsrace scenario run race`` and by the e2e tests. It only starts components, injects
Faults and observes; the empty record, the blocked enactors and the stale answers come from the
components' own logic. The faults are those of the incident (``scenarios.racefaults``, shared
with ``outage-2025``).

The lab (``scenarios.lab``) starts, supervises and watches the components; the verdict is
``core.verdicts.judge`` over the run folder (docs/run-format.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from dnsrace import settings as settings_mod
from dnsrace.components import repairing
from dnsrace.components.scenarios import racefaults
from dnsrace.components.scenarios.lab import (
    Lab,
    Report,
    dns_query,
    wait_until,
    write_run_report,
)
from dnsrace.core import plans, verdicts


@dataclasses.dataclass(frozen=True)
class RaceParams(racefaults.RaceFaultParams):
    window: float = 40.0
    """Seconds observed under the faults with safeguards on."""
    settle: float = 30.0
    """Seconds allowed for convergence once the faults are removed and the planner stops."""
    after_repair: float = 15.0
    """Seconds the clients keep going after the repair (their recovery is judged from
    ``verdicts.CLIENT_RECOVERY`` s on)."""

    @property
    def expectation(self) -> verdicts.Expectation:
        return verdicts.expectation(self.safeguards)


Verdict = verdicts.Verdict



async def run_race(cfg: settings_mod.Settings, params: RaceParams, run_dir: Path,
                   report: Report) -> Verdict:
    if params.safeguards.serve_stale:
        # Every DNS client of the run (prober, DynamoDB clients, the direct query) asks the
        # serve-stale port; the enactors write the same store either way.
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns,
                                                               server=cfg.dns.stale_server))
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sg = str(params.safeguards)
    figures: dict[str, Any] = {"safeguards": sg, "planner_interval": params.planner_interval,
                               "keep": params.keep, "write_delay": params.write_delay}
    async with Lab(cfg, params, run_dir, report) as lab:
        figures["endpoints"] = len(lab.endpoints)
        await lab.reset()
        lab.mark("lab reset")
        await lab.follow_lifecycle()

        prom = await racefaults.start_data_path(lab, params)
        cal = await racefaults.calibrate(lab, params)
        t_slow = cal.t_slow
        figures.update(cal.figures())
        t_fault = await racefaults.inject_stall(lab, cal)
        serial_at_fault = await lab.newest_serial()
        observed: dict[str, Any] = {
            "safeguards": sg, "t_fault": t_fault, "regional": lab.regional,
            "endpoints": lab.endpoints, "zone": cfg.dns.zone, "scope": lab.ns,
            "probe_rate": params.probe_rate, "hold": params.hold, "observe": params.observe,
            "window": params.window, "calibration": figures,
            "clients": lab.backend is not None, "record_ttl": plans.DEFAULT_TTL,
        }
        expect = params.expectation
        if expect.outage or expect.may_empty:
            await racefaults.await_regional_empty(lab, params, t_fault, hold=expect.outage,
                                                  cycle=cal.cycle)
            observed["stall_retunes"] = lab.stall_retunes
        if not expect.outage:
            await asyncio.sleep(params.window)
        observed["stall_attempts"] = lab.attempts_at_empty
        observed["plans_during_faults"] = await lab.newest_serial() - serial_at_fault
        direct_rcode, direct_addrs = await dns_query(cfg, lab.regional)
        observed["direct_query_regional"] = {"rcode": direct_rcode, "addresses": direct_addrs}
        lab.mark("direct query", endpoint=lab.regional, rcode=direct_rcode,
                 addresses=direct_addrs)

        if prom is not None:  # before the planner is stopped on purpose
            await racefaults.write_scrape(prom, run_dir)
        fault_status = await lab.faults()
        await lab.delete_faults()
        observed["t_faults_live"] = [t_slow, lab.mark("faults removed; planner stopped")]
        await lab.stop("planner")
        newest = await lab.newest_serial()
        observed["newest_serial"] = newest
        await _observe_convergence(lab, params, newest, observed)

        if expect.may_block and not observed["converged"]:
            t_repair = lab.mark("repair")
            changed = await lab.call("repair", lambda: repairing.repair(cfg))
            observed["repair_changed"] = len(changed)

            async def regional_answers_again() -> bool:
                rcode, addrs = await dns_query(cfg, lab.regional)
                return rcode == "NOERROR" and bool(addrs)

            restored = await wait_until(regional_answers_again, 20, interval=0.2)
            observed["t_repair"] = t_repair
            observed["repair_restored"] = restored
            observed["time_to_restore"] = round(time.time() - t_repair, 2) if restored else None
            lab.mark("repaired", changed=len(changed), restored=restored)
            await asyncio.sleep(params.after_repair - (time.time() - t_repair)
                                if lab.backend is not None else 1.5)

        if prom is not None:
            await prom.stop()
        await lab.stop("ddb-client")

        await lab.stop("prober")
        observed["t_probe_end"] = time.time()
        await lab.stop_recorder()
        events = await lab.events()
        observed["blocked_warnings"] = len([
            e for e in events if e["type"] == "Warning"
            and e["reason"] in ("ActivePlanMissing", "ChangeRejected")])

        await lab.write_records(events, fault_status)
        observed["restarts"] = lab.write_restarts()
        observed["outages"] = lab.outages
        (run_dir / "observed.json").write_text(json.dumps(observed, indent=1))

    verdict = verdicts.judge(verdicts.RunRecord.load(run_dir), str(run_dir))
    (run_dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
    write_run_report(run_dir, report)
    return verdict


async def _observe_convergence(lab: Lab, params: RaceParams, newest: int,
                               observed: dict[str, Any]) -> None:
    """Wait up to ``settle`` s for every endpoint and every enactor to be on the newest plan,
    and record what the end state was."""
    phases: dict[str, str] = {}
    conditions: list[dict[str, Any]] = []

    async def converged() -> bool:
        plan = next((p for p in await lab.plan_objects()
                     if int(p["spec"]["serial"]) == newest), {})
        phases.clear()
        phases.update({e["name"]: e.get("phase", "")
                       for e in plan.get("status", {}).get("enactors", [])})
        conditions[:] = [
            {k: c.get(k) for k in ("type", "status", "reason")}
            for c in plan.get("status", {}).get("conditions", [])]
        marks = await lab.markers()
        if not all(marks.get(e) == newest for e in lab.endpoints):
            return False
        return all(phases.get(n) in ("Applied", "Skipped") for n in lab.cfg.lab.enactors)

    observed["converged"] = await wait_until(converged, params.settle)
    observed["enactor_phases_on_newest"] = dict(phases)
    observed["conditions_on_newest"] = list(conditions)
    markers = await lab.markers()
    live = {int(p["spec"]["serial"]) for p in await lab.plan_objects()}
    observed["endpoints_on_deleted_plans"] = sorted(
        e for e, s in markers.items() if s not in live)
    (lab.run_dir / "markers.json").write_text(json.dumps(markers, indent=1))

