"""The lab restarts a local component that dies, as a Deployment would, and records how it died:
a real enactor process, killed with SIGKILL from outside, against the real API server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from pathlib import Path

from dnsrace.components.scenarios import lab as lab_mod
from dnsrace.core.safeguards import Safeguards
from tests.conftest import Cluster, local_only


@local_only
async def test_a_killed_component_is_restarted_and_its_death_recorded(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cfg = dataclasses.replace(cluster.cfg, kube=dataclasses.replace(cluster.cfg.kube,
                                                                    namespace=namespace))
    params = lab_mod.LabParams(safeguards=Safeguards.parse("on"))
    async with lab_mod.Lab(cfg, params, tmp_path, print) as lab:
        await lab.start("enactor-a", "enactor", "--name", "enactor-a", port=18391)
        first = lab.procs.get("enactor-a")
        assert first is not None
        await asyncio.sleep(2)
        os.kill(first.pid, signal.SIGKILL)
        for _ in range(60):
            await asyncio.sleep(0.25)
            now = lab.procs.get("enactor-a")
            if now is not None and now.pid != first.pid and now.alive():
                break
        else:
            raise AssertionError("enactor-a was not restarted")
        assert [(e.component, e.code, e.how) for e in lab.supervisor.exits] == [
            ("enactor-a", -signal.SIGKILL, "killed by signal 9")]
        await lab.stop("enactor-a")  # stopped on purpose: not restarted again
        await asyncio.sleep(1.5)
        assert len(lab.supervisor.exits) == 1
    recorded = json.loads((tmp_path / "restarts.json").read_text())
    assert [(r["component"], r["how"]) for r in recorded] == [("enactor-a", "killed by signal 9")]
    assert any(e["event"] == "component restarted" for e in lab.timeline)


@local_only
async def test_the_runner_rides_out_an_api_server_restart(
        cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """The runner's calls wait out a stopped kube-apiserver (connection refused) and say so;
    before, `newest_serial` died with an uncaught ClientConnectorError and no verdict."""
    assert cluster.plane is not None
    cfg = dataclasses.replace(cluster.cfg, kube=dataclasses.replace(cluster.cfg.kube,
                                                                    namespace=namespace))
    params = lab_mod.LabParams(safeguards=Safeguards.parse("on"))
    async with lab_mod.Lab(cfg, params, tmp_path, print) as lab:
        assert await lab.newest_serial() == 0
        await asyncio.to_thread(cluster.plane.stop_component, "kube-apiserver")
        try:
            waiting = asyncio.create_task(lab.newest_serial())
            await asyncio.sleep(3)
            assert not waiting.done(), "it waits, it does not die"
        finally:
            await asyncio.to_thread(cluster.plane.start_component, "kube-apiserver")
        assert await asyncio.wait_for(waiting, 120) == 0
    assert [o["call"] for o in lab.outages] == ["list plans"]
    outage = lab.outages[0]
    assert outage["end"] - outage["start"] >= 3
    assert [e["event"] for e in lab.timeline] == ["unreachable", "reachable again"]
