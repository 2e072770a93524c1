"""The ``outage-2025`` scenario: the race, then the cascade it set off, then the recovery.

Called by ``dnsrace scenario run outage-2025`` and by the e2e tests. Beside the race's lab
(``scenarios.racefaults``: DynamoDB Local behind the LB nodes, the control loop, the prober,
the DynamoDB clients) it starts the cascade's components as processes: DWFM (leases in DynamoDB,
reached through the lab's DNS), the launcher (Instances on leased droplets), the Network Manager
(propagation), the instance hosts (each Instance serving on its own loopback address once its
network state arrived) and the NLB (health checks, its record in the same DNS etcd).

The runner injects the race's faults (or, with ``outside_fault``, pauses DynamoDB Local for the
same time: an outage no DNS safeguard can help), repairs the record after ``outage`` seconds of
emptiness, takes the manual steps at the times given (``dnsrace dwfm restart --throttle``,
``dnsrace nlb failover off``) and waits for the recovery. It decides no outcome: leases expire,
queues collapse, backlogs grow and targets flap by the components' own mechanisms, and the
verdict (``core.outage``) reads the phases from what the components recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

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
from dnsrace.core import dwfm, instances, nlb, outage, records, verdicts

PORTS = {"dwfm": 18207, "launcher": 18208, "network-manager": 18209, "instances": 18210,
         "nlb": 18211}
"""The cascade's components' HTTP ports in the lab, after the race's (docs/run-format.md)."""


@dataclasses.dataclass(frozen=True)
class OutageParams(racefaults.RaceFaultParams):
    outside_fault: bool = False
    """Pause DynamoDB Local for ``outage`` s instead of the race (the backend unreachable from
    outside: no DNS safeguard can help; the cascade's safeguards must)."""
    outage: float = 60.0
    """Seconds the regional record stays empty (from the first empty answer) before the repair;
    with ``outside_fault``, seconds DynamoDB Local stays paused. Long enough for every lease
    to expire (a missed renewal plus the 12 s lease) with the whole fleet queued."""
    warmup: float = 10.0
    """Seconds of launches before the race's faults, once the leases are held. The NLB's old
    targets are the instances still running when the leases expired (the launcher's
    ``--lifetime`` keeps them to about a minute of launches, however long the race took to
    hit); with a 0.5 failover share an AZ fails over only when the burst's unready instances
    outnumber them."""
    dwfm_restart_after: float = 60.0
    """Seconds after DynamoDB answers again (the clients' first success) at which the manual
    step ``dnsrace dwfm restart --throttle`` is taken (safeguards off; AWS: 4:14 AM)."""
    failover_off_after: float = 120.0
    """Seconds after DynamoDB answers again at which ``dnsrace nlb failover off`` is taken
    (safeguards off; AWS: 9:36 AM)."""
    window: float = 40.0
    """Seconds observed under the race's faults when the safeguards keep the record (the
    race's own window: about 25 of enactor-a's stalls)."""
    quiet: float = 10.0
    """Seconds observed after the faults when nothing is to follow (contained)."""
    recover_limit: float = 300.0
    """Seconds after the last manual step (or DynamoDB's return) within which the recovery
    must be complete; the run ends once it is."""
    launch_rate: float = 1.0
    """Launch requests per second."""
    propagation_rate: float = 2.0
    """Network states the Network Manager propagates per second."""

    @property
    def kind(self) -> str:
        if self.outside_fault:
            return outage.OUTSIDE
        expect = verdicts.expectation(self.safeguards)
        if expect.outage:
            return outage.CASCADE
        if not expect.may_empty:
            return outage.CONTAINED
        raise ValueError(f"safeguards {self.safeguards}: outage-2025 knows what to expect with "
                         "off, on, or a set whose race expectation is that the record never "
                         "empties (fencing, say)")


def _post(url: str, timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body: dict[str, Any] = json.loads(resp.read() or b"{}")
        return body


async def _clear(lab: Lab) -> None:
    """Earlier runs' Instances and the NLB's record: a run starts with neither."""
    co = client.CustomObjectsApi(lab.api)
    await lab.call("delete instances", lambda: co.delete_collection_namespaced_custom_object(
        instances.GROUP, instances.VERSION, lab.ns, instances.PLURAL))
    await lab.store.delete_prefix(records.record_prefix(nlb_name(lab.cfg)))


def nlb_name(cfg: settings_mod.Settings) -> str:
    return f"nlb.us-east-1.{cfg.dns.zone.strip('.')}"


async def _start_cascade(lab: Lab, params: OutageParams) -> None:
    out = lab.run_dir
    await lab.start("dwfm", "dwfm", "--out", str(out / "dwfm.jsonl"), port=PORTS["dwfm"])
    await lab.start("network-manager", "network-manager", "--out", str(out / "netmanager.jsonl"),
                    "--rate", str(params.propagation_rate), port=PORTS["network-manager"])
    await lab.start("instances", "instances", port=PORTS["instances"])
    await lab.start("nlb", "nlb", "--out", str(out / "nlb.jsonl"), "--name", nlb_name(lab.cfg),
                    port=PORTS["nlb"])
    await lab.start("launcher", "launcher", "--out", str(out / "launcher.jsonl"),
                    "--rate", str(params.launch_rate),
                    "--dwfm-url", f"http://127.0.0.1:{PORTS['dwfm']}",
                    "--admit-url", f"http://127.0.0.1:{PORTS['network-manager']}/admit",
                    port=PORTS["launcher"])


def _last(path: Path) -> dict[str, Any] | None:
    lines = outage._lines(path)
    return lines[-1] if lines else None


async def _leases_held(lab: Lab, timeout: float = 90) -> None:
    async def held() -> bool:
        row = _last(lab.run_dir / "dwfm.jsonl")
        return row is not None and int(row["leases_valid"]) >= int(row["droplets"]) > 0

    if not await wait_until(held, timeout, interval=1.0):
        raise RuntimeError(f"DWFM did not hold every lease within {timeout:g}s of its start; "
                           f"see {lab.run_dir}/logs/dwfm.log")


def _observed(lab: Lab, params: OutageParams, extra: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": "outage-2025", "kind": params.kind, "safeguards": str(params.safeguards),
            "regional": lab.regional, "endpoints": lab.endpoints, "zone": lab.cfg.dns.zone,
            "scope": lab.ns, "probe_rate": params.probe_rate, "outage": params.outage,
            "nlb": nlb_name(lab.cfg), **extra}


def _write_observed(lab: Lab, params: OutageParams, extra: dict[str, Any]) -> None:
    body = _observed(lab, params, extra)
    (lab.run_dir / "observed.json").write_text(json.dumps(body, indent=1))


async def _reachable_again(lab: Lab, after: float, timeout: float) -> float | None:
    """When a DynamoDB client succeeded again after ``after`` (None: not within ``timeout``)."""
    path = lab.run_dir / "ddb-client.jsonl"

    async def found() -> bool:
        return _first_ok(path, after) is not None

    await wait_until(found, timeout, interval=0.5)
    return _first_ok(path, after)


def _first_ok(path: Path, after: float) -> float | None:
    for row in outage._lines(path):
        if float(row["t"]) >= after and row.get("outcome") == "ok":
            return float(row["t"])
    return None


async def _manual_step(lab: Lab, at: float, what: str, url: str) -> float | None:
    await asyncio.sleep(max(0.0, at - time.time()))
    try:
        answer = await asyncio.to_thread(_post, url)
    except OSError as exc:
        lab.mark(f"manual step failed: {what}", error=repr(exc))
        return None
    return lab.mark(f"manual step: {what}", answer=answer)


async def _await_recovery(lab: Lab, params: OutageParams, extra: dict[str, Any],
                          limit: float) -> bool:
    """Until every phase that appeared has ended and the signals stayed normal (the
    verdict's own recovery criterion), at most ``limit`` s."""

    async def recovered() -> bool:
        _write_observed(lab, params, extra)
        rec, _, _ = outage.load(lab.run_dir, t_end=time.time())
        found = outage.detect(rec)
        rec_span = found.phases.get(outage.RECOVERY)
        return rec_span is not None and rec_span.end is not None

    return await wait_until(recovered, limit, interval=2.0)


async def run_outage(cfg: settings_mod.Settings, params: OutageParams, run_dir: Path,
                     report: Report) -> outage.Judged:
    kind = params.kind
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    async with Lab(cfg, params, run_dir, report) as lab:
        if lab.cluster:
            raise RuntimeError("outage-2025 runs on the local control plane only (the chart's "
                               "cascade components are not driven by the runner yet)")
        await lab.reset()
        await _clear(lab)
        lab.mark("lab reset", kind=kind)
        await lab.follow_lifecycle()
        # The cascade starts first: its processes' start-up overlaps the data path's, and DWFM
        # retries until DynamoDB answers through the lab's DNS, as it would after any outage.
        await _start_cascade(lab, params)
        prom = await racefaults.start_data_path(lab, params, cascade=True)
        await _leases_held(lab)
        lab.mark("DWFM holds every lease; launches begin", warmup=params.warmup)
        await asyncio.sleep(params.warmup)

        velocity = nlb.VelocityControl()
        fault_status: list[dict[str, Any]] = []
        steps: dict[str, Any] = {
            "recovery_bound": dwfm.recovery_bound(dwfm.DwfmParams(), dwfm.Throttle()),
            "velocity_cap": velocity.max_removed, "velocity_interval": velocity.per}
        extra: dict[str, Any] = {"steps": steps}
        reachable: float | None = None
        if kind == outage.OUTSIDE:
            assert lab.backend is not None
            t_fault = lab.mark("DynamoDB Local paused (outside fault)", seconds=params.outage)
            extra["t_fault"] = t_fault
            _write_observed(lab, params, extra)
            os.killpg(lab.backend.process.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(params.outage)
            finally:
                os.killpg(lab.backend.process.pid, signal.SIGCONT)
            t_back = lab.mark("DynamoDB Local resumed")
            reachable = await _reachable_again(lab, t_back, 60)
        else:
            cal = await racefaults.calibrate(lab, params)
            extra["calibration"] = cal.figures()
            t_fault = await racefaults.inject_stall(lab, cal)
            extra["t_fault"] = t_fault
            _write_observed(lab, params, extra)
            if kind == outage.CASCADE:
                first_empty = await racefaults.await_regional_empty(
                    lab, params, t_fault, hold=True, cycle=cal.cycle)
                extra["stall_attempts"] = lab.attempts_at_empty
                if first_empty is not None:
                    await asyncio.sleep(max(0.0, first_empty + params.outage - time.time()))
            else:
                await asyncio.sleep(params.window)
            fault_status = await lab.faults()
            extra["t_faults_live"] = [cal.t_slow, lab.mark("faults removed; planner stopped")]
            await lab.delete_faults()
            await lab.stop("planner")
            if kind == outage.CASCADE:
                t_repair = lab.mark("repair")
                changed = await lab.call("repair", lambda: repairing.repair(cfg))
                steps["t_repair"] = t_repair
                lab.mark("repaired", changed=len(changed))

                async def answers() -> bool:
                    rcode, addrs = await dns_query(cfg, lab.regional)
                    return rcode == "NOERROR" and bool(addrs)

                await wait_until(answers, 20, interval=0.2)
                reachable = await _reachable_again(lab, t_repair, 60)
            else:
                await asyncio.sleep(params.quiet)

        extra["reachable_again"] = reachable
        last_step = reachable or time.time()
        if kind == outage.CASCADE and reachable is not None:
            steps["t_dwfm_restart"] = await _manual_step(
                lab, reachable + params.dwfm_restart_after, "dnsrace dwfm restart --throttle",
                f"http://127.0.0.1:{PORTS['dwfm']}/restart?throttle=1")
            steps["t_failover_off"] = await _manual_step(
                lab, reachable + params.failover_off_after, "dnsrace nlb failover off",
                f"http://127.0.0.1:{PORTS['nlb']}/failover?enabled=0")
            last_step = time.time()
        if kind != outage.CONTAINED and reachable is not None:
            done = await _await_recovery(lab, params, extra, params.recover_limit
                                         - (time.time() - last_step))
            lab.mark("recovered" if done else "not recovered in time")

        if prom is not None:
            await racefaults.write_scrape(prom, run_dir)
            await prom.stop()
        for name in ("launcher", "nlb", "network-manager", "instances", "dwfm", "ddb-client"):
            await lab.stop(name)
        await lab.stop("prober")
        await lab.stop_recorder()
        extra["t_end"] = time.time()
        events = await lab.events()
        await lab.write_records(events, fault_status)
        extra["restarts"] = lab.write_restarts()
        extra["outages"] = lab.outages
        _write_observed(lab, params, extra)

    rec, stp, _ = outage.load(run_dir)
    judged = outage.judge(rec, kind, stp)
    (run_dir / "outage.json").write_text(json.dumps(judged.to_json(), indent=1))
    with contextlib.suppress(OSError):
        (run_dir / "verdict.json").unlink()  # the race's verdict file: not this scenario's
    write_run_report(run_dir, report)
    return judged
