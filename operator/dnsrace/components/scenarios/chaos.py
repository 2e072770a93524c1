"""The chaos scenario: the faults any cluster sees, one at a time, while plans are applied.

Called by ``dnsrace scenario run chaos`` and by the e2e suite. With the safeguards on (by
default), the planner keeps producing plans and the enactors keep applying them under the same
slow writes and clean-up as the race; the runner then, one step at a time, kills or pauses each
enactor and the planner (Faults, so the same steps work in kind) and restarts kube-apiserver, the
DNS etcd and CoreDNS (local control plane only), waits for the lab to recover by itself, and
records when each fault began and ended. ``core.chaos.judge`` judges every step from the prober's
answers and the DNS store's transactions; nothing here decides a step's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from dnsrace import settings as settings_mod
from dnsrace.components.scenarios.lab import Lab, LabParams, Report, wait_until
from dnsrace.core import chaos, plans, verdicts
from dnsrace.core.safeguards import Safeguards
from dnsrace.localplane import controlplane

PORT = 18200


def default_faults(enactors: tuple[str, ...]) -> tuple[str, ...]:
    """Every fault of the matrix, in the order they run."""
    movers = (*enactors, "planner")
    return (*(f"kill:{n}" for n in movers), *(f"pause:{n}" for n in movers),
            *(f"restart:{p}" for p in chaos.PLANE_PARTS))


@dataclasses.dataclass(frozen=True)
class ChaosParams(LabParams):
    safeguards: Safeguards = dataclasses.field(default_factory=lambda: Safeguards.parse("on"))
    faults: tuple[str, ...] = ()
    """``kind:target`` each; empty: ``default_faults``."""
    pause: float = 10.0
    """Seconds a paused component stays stopped (SIGSTOP, then SIGCONT)."""
    write_delay: float = 0.03
    cleanup_delay: float = 0.5
    warmup: float = 10.0
    """Seconds of applying under the slow writes before the first fault."""
    settle: float = 30.0
    """At most this long after a fault ends for the lab to recover before the next one."""
    stop_grace: float = 10.0
    """A restarted part of the control plane gets SIGTERM, then SIGKILL after this long (a
    kubelet's grace period, shortened: kube-apiserver took 60 s to drain its watches)."""


async def run_chaos(cfg: settings_mod.Settings, params: ChaosParams, run_dir: Path,
                    report: Report) -> verdicts.Verdict:
    if params.safeguards.serve_stale:
        cfg = dataclasses.replace(cfg, dns=dataclasses.replace(cfg.dns,
                                                               server=cfg.dns.stale_server))
    faults = params.faults or default_faults(cfg.lab.enactors)
    for fault in faults:
        chaos.parse_fault(fault)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    sg = str(params.safeguards)
    async with Lab(cfg, params, run_dir, report) as lab:
        plane = None if lab.cluster else controlplane.LocalPlane(cfg, report=lambda _: None)
        if plane is None and any(f.startswith("restart:") for f in faults):
            raise RuntimeError("restart faults act on the local control plane's processes; "
                               "on a cluster, choose kill and pause faults (--fault)")
        await lab.reset()
        lab.mark("lab reset")
        await lab.follow_lifecycle()
        await lab.start_components(PORT, [])
        lab.mark("components started", enactors=list(cfg.lab.enactors))

        await lab.regional_answering()
        await lab.slow_down(params.write_delay, params.cleanup_delay)
        lab.mark("slow writes and clean-up injected", write_delay=params.write_delay,
                 cleanup_delay=params.cleanup_delay)
        await asyncio.sleep(params.warmup)

        steps: list[dict[str, Any]] = []
        fault_status: list[dict[str, Any]] = []
        for i, fault in enumerate(faults):
            report(f"step {i + 1}/{len(faults)}: {fault}")
            step = await _step(lab, plane, params, fault, f"chaos-{i + 1}", fault_status)
            if steps:
                steps[-1]["t_next"] = step["t_start"]
            steps.append(step)

        fault_status += await lab.faults()
        await lab.delete_faults()
        await lab.stop("planner")
        newest = await lab.newest_serial()
        lab.mark("faults removed; planner stopped", newest=newest)
        final: dict[str, Any] = {"newest": newest}

        async def settled() -> bool:
            marks = await lab.markers()
            final["terminating"] = [n for n, _ in await _terminating(lab)]
            return (all(marks.get(e) == newest for e in lab.endpoints)
                    and not final["terminating"])

        final["converged"] = await wait_until(settled, params.settle)
        final["alive"] = {n: _alive(lab, n) for n in (*cfg.lab.enactors, "prober")}
        await lab.stop("prober")
        t_probe_end = time.time()
        if steps:
            steps[-1]["t_next"] = t_probe_end
        await lab.stop_recorder()
        await lab.write_records(await lab.events(), fault_status)
        (run_dir / "markers.json").write_text(json.dumps(await lab.markers(), indent=1))
        observed = {
            "scenario": "chaos", "safeguards": sg, "regional": lab.regional,
            "endpoints": lab.endpoints, "zone": cfg.dns.zone, "scope": lab.ns,
            "probe_rate": params.probe_rate, "record_ttl": plans.DEFAULT_TTL,
            "pause": params.pause, "stop_grace": params.stop_grace,
            "steps": steps, "final": final, "t_probe_end": t_probe_end,
            "restarts": lab.write_restarts(), "outages": lab.outages,
        }
        (run_dir / "observed.json").write_text(json.dumps(observed, indent=1))
    verdict = chaos.judge_record(verdicts.RunRecord.load(run_dir), str(run_dir))
    (run_dir / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
    return verdict


async def _keep_asking(lab: Lab, done: asyncio.Event) -> None:
    while not done.is_set():
        await lab.newest_serial()
        await lab.markers()
        await asyncio.sleep(0.5)


def _port(lab: Lab, name: str) -> int:
    """The metrics and health port ``Lab.start_components`` gave the component."""
    if name == "planner":
        return PORT
    return PORT + 1 + lab.cfg.lab.enactors.index(name)


async def _ready(port: int) -> bool:
    def get() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    return await asyncio.to_thread(get)


def _alive(lab: Lab, name: str) -> bool:
    managed = lab.procs.get(name)
    return lab.cluster or (managed is not None and managed.alive())


async def _terminating(lab: Lab) -> list[tuple[str, float]]:
    """Plans whose deletion has begun, with when it began (unix time)."""
    out = []
    for p in await lab.plan_objects():
        stamp = p["metadata"].get("deletionTimestamp")
        if stamp:
            out.append((p["metadata"]["name"],
                        datetime.datetime.fromisoformat(stamp).timestamp()))
    return out


async def _step(lab: Lab, plane: controlplane.LocalPlane | None, params: ChaosParams,
                fault: str, name: str, fault_status: list[dict[str, Any]]) -> dict[str, Any]:
    """Inject one fault, wait for its end and for the lab to recover, and record the step."""
    kind, target = chaos.parse_fault(fault)
    step: dict[str, Any] = {"fault": fault}
    exits_before = len(lab.supervisor.exits)
    t_start = lab.mark("fault", fault=fault)
    step["t_start"] = t_start
    if kind == "kill":
        await lab.create_process_fault(name, target, "kill")

        async def died() -> bool:
            return any(e.component == target for e in lab.supervisor.exits[exits_before:])

        # In a cluster the Deployment restarts the pod; the runner sees no exit there.
        if not lab.cluster:
            if not await wait_until(died, 15, interval=0.1):
                raise RuntimeError(f"{fault}: {target} did not die; see {lab.run_dir}/logs")
            step["t_dead"] = next(e.t for e in reversed(lab.supervisor.exits)
                                  if e.component == target)
            # The fault lasts until the restarted process serves again: its start (imports,
            # the first list of plans) is part of what a crash costs.
            if not await wait_until(lambda: _ready(_port(lab, target)), 60, interval=0.1):
                raise RuntimeError(f"{fault}: {target} did not serve again within 60 s; "
                                   f"see {lab.run_dir}/logs/{target}.log")
        t_end = step["t_back"] = lab.mark("serving again", component=target)
    elif kind == "pause":
        await lab.create_process_fault(name, target, "pause", params.pause)
        await asyncio.sleep(params.pause)
        t_end = time.time()
    else:
        assert plane is not None
        # The runner keeps asking the API server and the DNS etcd meanwhile, as it does
        # throughout a run: its calls must ride the outage out (``Lab.call``, ``outages``).
        done = asyncio.Event()
        asking = asyncio.create_task(_keep_asking(lab, done))
        try:
            step["t_down"] = time.time()
            await asyncio.to_thread(plane.procs.stop, target, params.stop_grace)
            lab.mark("stopped", part=target, after=round(time.time() - step["t_down"], 2))
            await asyncio.to_thread(plane.start_component, target)
            t_end = step["t_up"] = lab.mark("healthy again", part=target)
        finally:
            # Let the call under way finish (and record the outage it waited out).
            done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asking, 30)
    step["t_end"] = t_end
    # The newest plan when the fault ended, from the runner's watch (a call now could already
    # see a plan made after the fault).
    await lab.newest_serial()  # the watch has caught up by the time a list answers
    newest = max((s for s, t in lab.lifecycle.items() if t.get("seen", t_end + 1) <= t_end),
                 default=0)
    step["newest_at_end"] = newest

    async def recovered() -> bool:
        if time.time() < t_end + chaos.TERMINATING_LIMIT:
            return False
        if kind != "restart" and not _alive(lab, target):
            return False
        marks = await lab.markers()
        return all(marks.get(e, -1) >= newest for e in lab.endpoints)

    back = await wait_until(recovered, chaos.TERMINATING_LIMIT + params.settle, interval=0.25)
    step["terminating"] = await _terminating(lab)
    step["t_checked"] = time.time()
    lab.mark("step over", fault=fault, recovered=back)
    mine = [f for f in await lab.faults() if f["name"] == name]
    fault_status += mine
    if mine:
        await lab.delete_fault(name)
    step["t_next"] = time.time()  # replaced by the next step's start
    return step
