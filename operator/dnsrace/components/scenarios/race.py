"""The race scenario: start the lab, inject the faults, observe, judge, repair, keep the evidence.

Called by ``dnsrace scenario run race`` and by the e2e tests. It only starts components, injects
Faults and observes; the empty record, the blocked enactors and the stale answers come from the
components' own logic. The faults are those of the incident: every enactor's endpoint writes and
clean-up are a little slow (as Route 53 changes and a clean-up through many plans are), and
enactor-a stalls before its last endpoint, the regional one, long enough for its plan to become
one that clean-up deletes, while the planner keeps producing plans. Whether its stale write lands
inside another enactor's clean-up, and so empties the endpoint, is left to timing: each of
enactor-a's cycles is one attempt, with a jittered stall.

The lab (``scenarios.lab``) starts, supervises and watches the components; the verdict is
``core.verdicts.judge`` over the run folder (docs/run-format.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

from dnsrace import settings as settings_mod
from dnsrace.components import repairing
from dnsrace.components.scenarios import lab
from dnsrace.components.scenarios.lab import Lab, Report, dns_query, wait_until
from dnsrace.core import ddb, plans, scrape, verdicts
from dnsrace.localplane import dynamodb, prometheus
from dnsrace.report import write_report


@dataclasses.dataclass(frozen=True)
class RaceParams(lab.LabParams):
    write_delay: float = 0.03
    """Every enactor's per-endpoint write latency (a Fault on each)."""
    cleanup_delay: float = 0.5
    """Every enactor's clean-up latency (a Fault on each): the time between its last endpoint
    write and its deletes, which is when a stale write can slip in."""
    stall: float | None = None
    """enactor-a's extra delay on the regional endpoint; None: derived from measurements."""
    observe: float = 120.0
    """Seconds after the faults within which the empty record must show (safeguards off).
    Each enactor-a cycle is one attempt. With 60 s, 9 of 10 runs emptied the record after 1 to
    3 stalls, and the tenth served 19 stalls (13 stale writes landed) without one falling
    inside a clean-up that deleted its plan (docs/benchmarks.md); 120 s gives such a run twice
    the attempts. A run that succeeds is not lengthened: the wait ends at the first NXDOMAIN
    plus the hold."""
    hold: float = 10.0
    """Seconds the record must stay empty while the planner keeps producing plans."""
    window: float = 40.0
    """Seconds observed under the faults with safeguards on."""
    settle: float = 30.0
    """Seconds allowed for convergence once the faults are removed and the planner stops."""
    client_workers: int = 4
    """DynamoDB client workers (local mode): they resolve the regional endpoint through CoreDNS
    and reach DynamoDB Local through the LB nodes, so the empty record is theirs too."""
    client_rate: float = 10.0
    """Requests per second per client worker."""
    after_repair: float = 15.0
    """Seconds the clients keep going after the repair (their recovery is judged from
    ``verdicts.CLIENT_RECOVERY`` s on)."""

    def stall_seconds(self, lifetime: list[float], to_regional: list[float],
                      cycle: float) -> tuple[float, float]:
        """enactor-a's stall before the regional endpoint, as (centre, jitter).

        enactor-a's write must land after the last regional write before the clean-up that
        deletes its plan, and before that delete: in the last ``win`` seconds of the plan's
        life, where ``win`` is the clean-up delay, shortened when another enactor's regional
        write falls inside that clean-up. Both ends are measured under the same slow writes
        and clean-up, before the stall: ``lifetime`` is each plan's time from creation until
        its deletion began, ``to_regional`` each applied plan's time from creation to its
        first regional write (take, walk), and ``cycle`` one enactor cycle. Jitter (as
        netem's delay jitter) spans the spread of lifetimes, so successive attempts (one per
        enactor-a cycle) sample across the window even when load moves it.
        """
        if self.stall is not None:
            return self.stall, 0.0
        d = self.cleanup_delay
        win = d * (1 - d / (2 * cycle)) if cycle > d else d / 2
        centre = statistics.median(lifetime) - statistics.median(to_regional) - win / 2
        q = statistics.quantiles(lifetime, n=5)
        return max(0.0, centre), max(0.25, (q[3] - q[0]) / 2)

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

        port = 18200  # clear of the local plane's ports (CoreDNS ready is 18181)
        front_door: list[str] = []
        if not lab.cluster:
            lab.backend = await dynamodb.start(cfg, run_dir / "logs" / "dynamodb-local.log")
            lab.mark("DynamoDB Local started", started_in=round(lab.backend.started_in, 2))
            front_door = ["--backend", f"{lab.backend.host}:{lab.backend.port}"]
        await lab.start_components(port, front_door)
        clients = run_dir / "ddb-client.jsonl"
        if lab.backend is not None:
            # Started with the others (a client's start-up is slow); its requests fail with DNS
            # errors until the first plan is applied, and the verdict counts from its first
            # success.
            await lab.start("ddb-client", "ddb-client", "--out", str(clients),
                            "--workers", str(params.client_workers),
                            "--rate", str(params.client_rate), port=port + 6)
        lab.mark("components started", enactors=list(cfg.lab.enactors))
        prom: prometheus.Handle | None = None
        if not lab.cluster and prometheus.locate() is not None:
            # Every component's /metrics, scraped as a user's Prometheus would (docs/metrics.md);
            # what it held at the end goes to scrape.json.
            prom = await prometheus.start(cfg, run_dir, scrape.lab_targets(
                cfg.lab.enactors, base_port=port, lb_nodes=cfg.lab.lb_nodes,
                ddb_client=lab.backend is not None), lab=run_dir.name)
            lab.mark("Prometheus started", url=prom.url, started_in=round(prom.started_in, 2))
        elif not lab.cluster:
            lab.mark("no Prometheus (make setup-prometheus installs it): no scrape.json")

        await lab.regional_answering()
        if lab.backend is not None:

            async def clients_succeed() -> bool:
                done = ddb.load_requests(clients) if clients.exists() else []
                return sum(r.outcome == "ok" for r in done) >= verdicts.CLIENT_MIN_REQUESTS

            if not await wait_until(clients_succeed, 60):
                raise RuntimeError("the DynamoDB clients made no successful request during "
                                   f"warm-up; see {run_dir}/logs/ddb-client.log")
            lab.mark("DynamoDB clients succeed", workers=params.client_workers,
                     rate=params.client_rate)
        # Every enactor's writes and clean-up get slow first (as Route 53 changes are); the plan
        # period and the enactors' cycle are then measured under that load, and set how old
        # enactor-a's plan is after a given stall.
        t_slow = lab.mark("slow writes and clean-up injected", write_delay=params.write_delay,
                          cleanup_delay=params.cleanup_delay)
        await lab.slow_down(params.write_delay, params.cleanup_delay)
        await asyncio.sleep(2)
        s0, c0, t0 = await lab.newest_serial(), await lab.cycles(port + 2), time.monotonic()
        w0 = time.time()
        await asyncio.sleep(10)
        s1, c1, t1 = await lab.newest_serial(), await lab.cycles(port + 2), time.monotonic()
        period = (t1 - t0) / max(1, s1 - s0)
        # Where the enactors' metrics cannot be read (a cluster), a cycle is taken to be the
        # clean-up delay plus a walk of one plan period.
        cycle = ((t1 - t0) / max(1.0, c1 - c0) if c0 is not None and c1 is not None
                 else params.cleanup_delay + period)

        async def plans_measured() -> bool:
            # A plan lives about keep plan periods plus a clean-up: on a loaded machine longer
            # than the 10 s above, so the plans seen in its first 6 s may still be alive.
            lifetime, to_regional = lab.measured(w0, w0 + 6)
            return len(lifetime) >= 3 and bool(to_regional)

        await wait_until(plans_measured, 30)
        lifetime, to_regional = lab.measured(w0, w0 + 6)
        if len(lifetime) < 3 or not to_regional:
            raise RuntimeError(f"too few plans measured under the slow writes ({len(lifetime)} "
                               f"deleted, {len(to_regional)} applied); see {run_dir}/logs")
        stall, jitter = params.stall_seconds(lifetime, to_regional, cycle)
        figures["plan_period"] = round(period, 3)
        figures["enactor_cycle"] = round(cycle, 3)
        figures["plan_lifetime_median"] = round(statistics.median(lifetime), 3)
        figures["plan_to_regional_median"] = round(statistics.median(to_regional), 3)
        figures["stall"] = round(stall, 3)
        figures["stall_jitter"] = round(jitter, 3)
        t_fault = lab.mark("stall injected", stall=round(stall, 3), jitter=round(jitter, 3))
        await lab.create_fault("enactor-a-stall", "enactor-a", stall, [lab.regional], jitter)
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
            await _await_regional_empty(lab, params, t_fault, hold=expect.outage, cycle=cycle)
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
            (run_dir / "scrape.json").write_text(json.dumps(await _scraped(prom), indent=1))
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
    started = time.monotonic()
    try:
        out = write_report([run_dir], run_dir / "report.html")
    except Exception as exc:  # the verdict stands without its pictures; say why they are missing
        report(f"report not written: {exc!r}")
    else:
        report(f"report: {out} ({time.monotonic() - started:.1f}s)")
    return verdict


async def _scraped(prom: prometheus.Handle) -> dict[str, Any]:
    """Each target's health and the metric names Prometheus holds per job."""
    targets = await prom.targets()
    jobs = sorted({t["labels"].get("job", "") for t in targets})
    return {
        "url": prom.url,
        "targets": [{"job": t["labels"].get("job"), "process": t["labels"].get("process"),
                     "instance": t["labels"].get("instance"), "health": t["health"],
                     "last_error": t.get("lastError", "")} for t in targets],
        "names": {job: sorted(await prom.metric_names(f'{{job="{job}"}}')) for job in jobs},
    }


async def _await_regional_empty(lab: Lab, params: RaceParams, t_fault: float,
                                hold: bool, cycle: float) -> None:
    """Wait until the regional records are removed in the store, at most ``observe`` s; with
    ``hold``, also until CoreDNS has answered NXDOMAIN/NODATA for ``hold`` s (the incident: the
    record stays empty while the planner keeps producing plans)."""
    judged: float | None = None
    deadline = t_fault + params.observe
    retuned = t_fault
    while True:
        await asyncio.sleep(0.5)
        if (lab.attempts_at_empty is None and params.stall is None
                and time.time() - retuned >= RETUNE_AFTER):
            retuned = time.time()
            await _retune_stall(lab, params, cycle)
        if lab.attempts_at_empty is None and lab.regional_empty_in_store():
            lab.mark("regional records removed in the DNS etcd")
            stall = [f for f in await lab.faults() if f["name"] == "enactor-a-stall"]
            lab.attempts_at_empty = int(stall[0]["status"].get("injected") or 0) if stall else 0
            if not hold:
                return
        if hold and judged is None:
            summ = lab.observations(since=t_fault, failures_are_empty=False)
            regional = summ.endpoints.get(lab.regional)
            if regional is not None and regional.first_empty is not None:
                judged = regional.first_empty
                lab.mark("regional endpoint answers empty")
        if judged is not None and time.time() - judged >= params.hold:
            return
        if judged is None and time.time() >= deadline:
            return


RETUNE_AFTER = 30.0
"""Seconds without the regional records' removal after which enactor-a's stall is measured
again: the plans' lifetime moves with the machine's load once the stall has begun."""


async def _retune_stall(lab: Lab, params: RaceParams, cycle: float) -> None:
    """Re-centre enactor-a's stall on the lifetimes of the plans of the last half minute and
    widen its jitter with each retune, so the attempts sample a wider span around the window.
    The race must still happen by itself: only the stall's length changes, as a user tuning
    ``kubectl edit fault enactor-a-stall`` would."""
    now = time.time()
    lifetime, to_regional = lab.measured(now - RETUNE_AFTER - 10, now - 10)
    if len(lifetime) < 3 or not to_regional:
        return
    stall, jitter = params.stall_seconds(lifetime, to_regional, cycle)
    jitter *= 1 + 0.5 * (len(lab.stall_retunes) + 1)
    await lab.patch_fault("enactor-a-stall", {"delaySeconds": round(stall, 3),
                                              "jitterSeconds": round(jitter, 3)})
    t = lab.mark("stall retuned", stall=round(stall, 3), jitter=round(jitter, 3),
                 plans_measured=len(lifetime))
    lab.stall_retunes.append({"t": round(t, 3), "stall": round(stall, 3),
                              "jitter": round(jitter, 3)})


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

