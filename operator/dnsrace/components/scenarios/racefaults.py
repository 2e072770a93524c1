"""The race's faults, shared by the scenarios that start with the race (``race``, ``outage-2025``).

Every enactor's endpoint writes and clean-up are made a little slow (as Route 53 changes and a
clean-up through many plans are); the plan period and the enactors' cycle are measured under
that load; then enactor-a stalls before its last endpoint, the regional one, long enough for its
plan to become one that clean-up deletes, while the planner keeps producing plans. Whether its
stale write lands inside another enactor's clean-up, and so empties the endpoint, is left to
timing: each of enactor-a's cycles is one attempt, with a jittered stall.

Also the lab's data path start, which both scenarios need before the faults: DynamoDB Local
behind the LB nodes, the control loop's components, the DynamoDB clients and Prometheus.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from pathlib import Path

from dnsrace.components.scenarios import lab
from dnsrace.components.scenarios.lab import Lab, wait_until
from dnsrace.core import ddb, scrape, verdicts
from dnsrace.localplane import dynamodb, prometheus

PORT = 18200
"""The lab components' first metrics port, clear of the local plane's (CoreDNS ready is 18181);
component ``i`` serves on ``PORT + i`` (docs/run-format.md)."""


@dataclasses.dataclass(frozen=True)
class RaceFaultParams(lab.LabParams):
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
    client_workers: int = 4
    """DynamoDB client workers (local mode): they resolve the regional endpoint through CoreDNS
    and reach DynamoDB Local through the LB nodes, so the empty record is theirs too."""
    client_rate: float = 10.0
    """Requests per second per client worker."""

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


async def start_data_path(lab: Lab, params: RaceFaultParams, cascade: bool = False,
                          ) -> prometheus.Handle | None:
    """DynamoDB Local behind the LB nodes (local mode), the control loop's components, the
    DynamoDB clients and Prometheus; returns once the regional endpoint answers and the clients
    succeed. ``cascade``: Prometheus scrapes the cascade's components too (started later)."""
    cfg, run_dir, port = lab.cfg, lab.run_dir, PORT
    front_door: list[str] = []
    if not lab.cluster:
        lab.backend = await dynamodb.start(cfg, run_dir / "logs" / "dynamodb-local.log")
        lab.mark("DynamoDB Local started", started_in=round(lab.backend.started_in, 2))
        front_door = ["--backend", f"{lab.backend.host}:{lab.backend.port}"]
    await lab.start_components(port, front_door)
    clients = run_dir / "ddb-client.jsonl"
    if lab.backend is not None:
        # Started with the others (a client's start-up is slow); its requests wait for the
        # table, which needs the first plan applied, and the verdict counts from its first
        # success.
        await lab.start("ddb-client", "ddb-client", "--out", str(clients),
                        "--workers", str(params.client_workers),
                        "--rate", str(params.client_rate), port=port + 6)
    lab.mark("components started", enactors=list(cfg.lab.enactors))
    prom: prometheus.Handle | None = None
    if not lab.cluster and prometheus.locate() is not None:
        # Every component's /metrics, scraped as a user's Prometheus would (docs/metrics.md);
        # what it held at the end goes to scrape.json.
        targets = scrape.lab_targets(cfg.lab.enactors, base_port=port, lb_nodes=cfg.lab.lb_nodes,
                                     ddb_client=lab.backend is not None, cascade=cascade)
        prom = await prometheus.start(cfg, run_dir, targets, lab=run_dir.name)
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
    return prom


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The slow writes' effect, measured before the stall."""

    t_slow: float
    """When the slow writes and clean-up were injected."""
    period: float
    """Seconds between two plans."""
    cycle: float
    """Seconds of one enactor cycle."""
    lifetime: list[float]
    to_regional: list[float]
    stall: float
    jitter: float

    def figures(self) -> dict[str, float]:
        return {"plan_period": round(self.period, 3), "enactor_cycle": round(self.cycle, 3),
                "plan_lifetime_median": round(statistics.median(self.lifetime), 3),
                "plan_to_regional_median": round(statistics.median(self.to_regional), 3),
                "stall": round(self.stall, 3), "stall_jitter": round(self.jitter, 3)}


async def calibrate(lab: Lab, params: RaceFaultParams) -> Calibration:
    """Slow every enactor's writes and clean-up, then measure the plan period, the enactors'
    cycle and the plans' lifetimes under that load; they set enactor-a's stall."""
    t_slow = lab.mark("slow writes and clean-up injected", write_delay=params.write_delay,
                      cleanup_delay=params.cleanup_delay)
    await lab.slow_down(params.write_delay, params.cleanup_delay)
    await asyncio.sleep(2)
    s0, c0, t0 = await lab.newest_serial(), await lab.cycles(PORT + 2), time.monotonic()
    w0 = time.time()
    await asyncio.sleep(10)
    s1, c1, t1 = await lab.newest_serial(), await lab.cycles(PORT + 2), time.monotonic()
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
                           f"deleted, {len(to_regional)} applied); see {lab.run_dir}/logs")
    stall, jitter = params.stall_seconds(lifetime, to_regional, cycle)
    return Calibration(t_slow, period, cycle, lifetime, to_regional, stall, jitter)


async def inject_stall(lab: Lab, cal: Calibration) -> float:
    """enactor-a's stall before the regional endpoint; returns its time (``t_fault``)."""
    t_fault = lab.mark("stall injected", stall=round(cal.stall, 3), jitter=round(cal.jitter, 3))
    await lab.create_fault("enactor-a-stall", "enactor-a", cal.stall, [lab.regional], cal.jitter)
    return t_fault


async def await_regional_empty(lab: Lab, params: RaceFaultParams, t_fault: float,
                               hold: bool, cycle: float) -> float | None:
    """Wait until the regional records are removed in the store, at most ``observe`` s; with
    ``hold``, also until CoreDNS has answered NXDOMAIN/NODATA for ``hold`` s (the incident: the
    record stays empty while the planner keeps producing plans). Returns when CoreDNS first
    answered empty (None: not seen)."""
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
                return None
        if hold and judged is None:
            summ = lab.observations(since=t_fault, failures_are_empty=False)
            regional = summ.endpoints.get(lab.regional)
            if regional is not None and regional.first_empty is not None:
                judged = regional.first_empty
                lab.mark("regional endpoint answers empty")
        if judged is not None and time.time() - judged >= params.hold:
            return judged
        if judged is None and time.time() >= deadline:
            return None


RETUNE_AFTER = 30.0
"""Seconds without the regional records' removal after which enactor-a's stall is measured
again: the plans' lifetime moves with the machine's load once the stall has begun."""


async def _retune_stall(lab: Lab, params: RaceFaultParams, cycle: float) -> None:
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


async def write_scrape(prom: prometheus.Handle, run_dir: Path) -> None:
    """Each target's health and the metric names Prometheus holds per job (``scrape.json``)."""
    targets = await prom.targets()
    jobs = sorted({t["labels"].get("job", "") for t in targets})
    body = {
        "url": prom.url,
        "targets": [{"job": t["labels"].get("job"), "process": t["labels"].get("process"),
                     "instance": t["labels"].get("instance"), "health": t["health"],
                     "last_error": t.get("lastError", "")} for t in targets],
        "names": {job: sorted(await prom.metric_names(f'{{job="{job}"}}')) for job in jobs},
    }
    (run_dir / "scrape.json").write_text(json.dumps(body, indent=1))
