"""``dnsrace network-manager``'s runner without an API server: options refused with the
option's name, the safeguards' names, Instances enqueued once (in launch order after a restart)
and the throttle's reservations consumed by that enqueue, the status patch with its merged
condition, the figures line, ``POST /admit`` with the throttle on and off, and the patches kept
in order through an outage (the writes go to a stand-in ``InstanceApi`` of the test's own; the
real API server is tests/integration/test_netmanager.py's)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import prometheus_client
import pytest
import typer
from aiohttp.test_utils import TestClient, TestServer
from kubernetes_asyncio import client
from typer.testing import CliRunner

from dnsrace.cli import netmanager as netmanager_cli
from dnsrace.components import netmanager, outages
from dnsrace.core import instances, propagation


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Writes:
    """A stand-in ``InstanceApi``: records the patches and Events; ``fail`` holds exceptions
    raised by the next patches, one each."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Mapping[str, Any]]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.fail: list[BaseException] = []

    async def patch_status(self, name: str, patch: Mapping[str, Any]) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.patches.append((name, patch))

    async def event(self, name: str, uid: str, reason: str, message: str) -> None:
        self.events.append((name, uid, reason, message))


def instance(n: int, *, launched_at: float | None = 1000.0, ready: bool = False,
             phase: str = "Launched") -> dict[str, Any]:
    body = instances.body(n, "us-east-1a")
    body["metadata"]["uid"] = f"uid-{n}"
    status: dict[str, Any] = {"phase": phase, "attempts": 1}
    if phase == "Launched":
        status.update(droplet="droplet-001", endpoint=instances.endpoint_for(n),
                      conditions=[instances.condition("Launched", True, "Launched",
                                                      "launched", launched_at or 0.0)])
        if launched_at is not None:
            status["launchedAt"] = launched_at
    if ready:
        status["networkReady"] = True
    body["status"] = status
    return body


def runner(clock: Clock, *, throttle: int | None = None, rate: float = 2.0,
           **changes: Any) -> tuple[netmanager.Runner, Writes]:
    opts = netmanager.Options(
        params=propagation.PropagationParams(rate=rate),
        throttle=propagation.PropagationThrottle(throttle) if throttle else None,
        out=None, **changes)
    writes = Writes()
    return netmanager.Runner(opts, writes, clock=clock,
                             backoff=outages.Backoff(0.01, 0.02)), writes


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


# -- options ---------------------------------------------------------------------------------


def test_options_name_the_option_as_the_command_spells_it() -> None:
    with pytest.raises(ValueError, match=r"^--rate must be more than 0"):
        netmanager.options(rate=0.0, max_backlog=20, throttle=False, out=None, http_port=None)
    with pytest.raises(ValueError, match=r"^--max-backlog must be at least 1, got 0"):
        netmanager.options(rate=2.0, max_backlog=0, throttle=True, out=None, http_port=None)
    with pytest.raises(ValueError, match="--port must be a TCP port"):
        netmanager.options(rate=2.0, max_backlog=20, throttle=False, out=None,
                           http_port=70000)
    opts = netmanager.options(rate=4.0, max_backlog=5, throttle=True, out=None, http_port=0)
    assert opts.params.rate == 4.0
    assert opts.throttle == propagation.PropagationThrottle(5)
    assert opts.http_port is None
    assert netmanager.options(rate=2.0, max_backlog=5, throttle=False, out=None,
                              http_port=18209).throttle is None
    with pytest.raises(ValueError, match="tick must be more than 0"):
        netmanager.Options(tick=0.0)


def test_safeguards_switch_the_throttle_with_dwfms_names() -> None:
    assert not netmanager.throttle_on("off")
    assert not netmanager.throttle_on("")
    assert netmanager.throttle_on("on")
    assert netmanager.throttle_on("fencing, propagation-throttle")
    assert not netmanager.throttle_on("dwfm-throttle,velocity-control")
    with pytest.raises(ValueError, match="unknown safeguard propagation-throtle"):
        netmanager.throttle_on("propagation-throtle")


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("network-manager")(netmanager_cli.network_manager_cmd)
    app.command("instances")(netmanager_cli.instances_cmd)
    return app


@pytest.mark.parametrize(("args", "message"), [
    (["network-manager", "--rate", "0"], "--rate must be more than 0"),
    (["network-manager", "--rate", "-1.5"], "--rate must be more than 0"),
    (["network-manager", "--max-backlog", "0"], "--max-backlog must be at least 1"),
    (["network-manager", "--safeguards", "fencing,nope"], "unknown safeguard nope"),
    (["network-manager", "--port", "65536"], "--port must be a TCP port"),
    (["instances", "--retry", "0"], "--retry must be more than 0"),
    (["instances", "--port", "-1"], "--port must be a TCP port"),
    (["instances", "--port", "8080"], "--port 8080 is the instances' own port"),
])
def test_the_commands_refuse_bad_options_before_anything_runs(args: list[str],
                                                              message: str) -> None:
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


# -- Instances in ----------------------------------------------------------------------------


async def test_launched_instances_are_enqueued_once_and_propagate_in_order() -> None:
    clock = Clock()
    run, _ = runner(clock)
    await run.on_event("ADDED", instance(1, phase="Pending"))
    assert run.core.backlog == 0  # not launched yet
    await run.on_event("MODIFIED", instance(1, launched_at=1000.0))
    await run.on_event("MODIFIED", instance(1, launched_at=1000.0))  # seen again: once
    await run.on_event("ADDED", instance(2, launched_at=1000.0))
    await run.on_event("ADDED", instance(3, ready=True))  # already network-ready
    assert run.core.backlog == 2
    clock.t = 1000.6
    assert [p.instance for p in run.step()] == ["i-000001"]
    clock.t = 1001.0
    assert [(p.instance, p.t) for p in run.step()] == [("i-000002", 1001.0)]
    assert [u.done.instance for u in run.unwritten] == ["i-000001", "i-000002"]


async def test_the_first_list_enqueues_in_launch_order_and_forgets_the_deleted() -> None:
    """After a restart: what launched while the Network Manager was down, oldest launch
    first (not in name order), each waiting since its launch."""
    clock = Clock(1010.0)
    run, _ = runner(clock)
    await run.on_list([instance(1, launched_at=1005.0), instance(2, launched_at=1001.0),
                       instance(3, launched_at=1003.0), instance(4, ready=True),
                       instance(5, phase="Pending")])
    assert [item.instance for item in run.core.queue] == ["i-000002", "i-000003", "i-000001"]
    assert run.core.oldest_age(clock.t) == pytest.approx(9.0)
    # a relist (after a 410) finds nothing new; i-000003 was deleted meanwhile
    await run.on_list([instance(1, launched_at=1005.0), instance(2, launched_at=1001.0)])
    assert run.core.backlog == 3
    assert "uid-3" not in run.enqueued
    assert "i-000003" not in run.bodies


async def test_reservations_are_consumed_by_the_watchs_enqueue() -> None:
    clock = Clock()
    run, _ = runner(clock, throttle=3)
    assert run.admit() == (True, 0)
    assert run.admit() == (True, 0)
    assert run.core.reserved == 2
    await run.on_event("MODIFIED", instance(1))  # the first admitted launch, handed over
    assert (run.core.reserved, run.core.backlog, len(run.reservations)) == (1, 1, 1)
    assert run.admit() == (True, 1)  # 1 queued + 2 reserved = 3: the next is refused
    assert run.admit() == (False, 1)
    await run.on_event("MODIFIED", instance(2))
    await run.on_event("MODIFIED", instance(3))
    assert (run.core.reserved, run.core.backlog) == (0, 3)
    assert run.admit() == (False, 3)
    clock.t += 1.0  # two propagated
    run.step()
    assert run.admit() == (True, 1)


async def test_a_reservation_never_handed_over_is_given_up_after_its_ttl() -> None:
    clock = Clock()
    run, _ = runner(clock, throttle=2, reservation_ttl=30.0)
    assert run.admit()[0]
    assert run.admit()[0]
    assert not run.admit()[0]
    clock.t += 29.0
    run.step()
    assert run.core.reserved == 2
    clock.t += 1.0
    run.step()
    assert run.core.reserved == 0
    assert run.admit() == (True, 0)


# -- status out ------------------------------------------------------------------------------


def test_the_ready_patch_merges_its_condition_into_the_list_read() -> None:
    body = instance(7, launched_at=1000.0)
    done = propagation.Propagated("i-000007", propagation.LAUNCH, 1000.0, 1012.25)
    patch = netmanager.ready_patch(body, done)
    status = patch["status"]
    assert status["networkReady"] is True
    assert status["networkReadyAt"] == 1012.25
    assert [c["type"] for c in status["conditions"]] == ["Launched", "NetworkReady"]
    assert status["conditions"][0] == body["status"]["conditions"][0]
    ready = status["conditions"][1]
    assert (ready["status"], ready["reason"]) == ("True", "Propagated")
    assert ready["message"] == "network state propagated 12.2 s after the launch"
    assert ready["lastTransitionTime"] == "1970-01-01T00:16:52Z"
    assert set(patch) == {"status"}  # phase, endpoint, launchedAt: left as they are
    # a NetworkReady condition already there (False) is replaced, not repeated
    body["status"]["conditions"].append(instances.condition(
        "NetworkReady", False, "Waiting", "queued", 1000.0))
    again = netmanager.ready_patch(body, done)["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in again] == [("Launched", "True"),
                                                         ("NetworkReady", "True")]


async def test_the_writer_patches_in_order_and_keeps_them_through_an_outage() -> None:
    clock = Clock()
    run, writes = runner(clock, events_per_second=1.0)
    for n in (1, 2, 3):
        await run.on_event("ADDED", instance(n))
    writes.fail = [aiohttp.ClientConnectionError("refused"),
                   client.ApiException(status=503, reason="Service Unavailable")]
    clock.t = 1001.5
    run.step()
    stop = asyncio.Event()
    task = asyncio.create_task(run.writer(stop))
    for _ in range(200):
        if not run.unwritten:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await task
    assert [name for name, _ in writes.patches] == ["i-000001", "i-000002", "i-000003"]
    assert writes.fail == []
    assert run.written == 3
    # one Event a second at most: the first, not the two right after it
    assert [(e[0], e[1], e[2]) for e in writes.events] == [("i-000001", "uid-1",
                                                            "NetworkReady")]


async def test_a_deleted_or_refused_instance_is_dropped_not_retried() -> None:
    clock = Clock()
    run, writes = runner(clock, events_per_second=0.0)
    for n in (1, 2, 3):
        await run.on_event("ADDED", instance(n))
    await run.on_event("DELETED", instance(1))
    writes.fail = [client.ApiException(status=404, reason="Not Found"),
                   client.ApiException(status=422, reason="Unprocessable Entity")]
    clock.t = 1001.5
    run.step()
    assert await run.write_one()  # i-000001: deleted, no call at all
    assert await run.write_one()  # i-000002: 404
    assert await run.write_one()  # i-000003: 422
    assert (run.written, run.dropped, writes.patches, writes.events) == (0, 3, [], [])


# -- the figures line and /admit -------------------------------------------------------------


def test_the_record_holds_the_contracts_fields() -> None:
    fig = propagation.Figures(t=1000.25, backlog=12, oldest_age=5.5, propagated=40,
                              admitted=50, refused=7, last_wait=4.25, throttle=True)
    line = netmanager.record(fig, reserved=2, unwritten=3, written=37)
    assert json.loads(json.dumps(line)) == line
    assert line == {"t": 1000.25, "backlog": 12, "oldest_age": 5.5, "propagated": 40,
                    "throttle": True, "admitted": 50, "refused": 7, "reserved": 2,
                    "last_wait": 4.25, "unwritten": 3, "written": 37}


async def test_sample_writes_one_flushed_line_and_the_metrics() -> None:
    clock = Clock()
    run, _ = runner(clock, throttle=20)
    propagated = sample("dnsrace_network_propagated_total")
    for n in (1, 2, 3):
        await run.on_event("ADDED", instance(n))
    clock.t = 1001.25
    out = io.StringIO()
    line = run.sample(out)
    assert json.loads(out.getvalue()) == line
    assert (line["t"], line["backlog"], line["propagated"], line["throttle"]) == (
        1001.25, 1, 2, True)
    assert line["oldest_age"] == 1.25
    assert line["unwritten"] == 2
    assert sample("dnsrace_network_backlog") == 1
    assert sample("dnsrace_network_oldest_age_seconds") == 1.25
    assert sample("dnsrace_network_throttle") == 1
    assert sample("dnsrace_network_unwritten") == 2
    assert sample("dnsrace_network_propagated_total") - propagated == 2


async def test_admit_with_the_throttle_on_refuses_at_the_limit() -> None:
    clock = Clock()
    run, _ = runner(clock, throttle=2)
    admitted = sample("dnsrace_network_admissions_total", result="admitted")
    refused = sample("dnsrace_network_admissions_total", result="refused")
    async with TestClient(TestServer(run.app())) as http:
        answers = [await (await http.post("/admit")).json() for _ in range(3)]
        assert [a["admitted"] for a in answers] == [True, True, False]
        assert all(a["backlog"] == 0 for a in answers)
        await run.on_event("ADDED", instance(1))
        assert (await (await http.post("/admit")).json()) == {"admitted": False,
                                                              "backlog": 1, "reserved": 1}
        assert (await http.get("/admit")).status == 405
        assert (await http.get("/healthz")).status == 200
    assert sample("dnsrace_network_admissions_total", result="admitted") - admitted == 2
    assert sample("dnsrace_network_admissions_total", result="refused") - refused == 2


async def test_admit_with_the_throttle_off_always_admits() -> None:
    clock = Clock()
    run, _ = runner(clock)
    for n in range(1, 41):
        await run.on_event("ADDED", instance(n))
    async with TestClient(TestServer(run.app())) as http:
        for _ in range(30):
            body = await (await http.post("/admit")).json()
            assert body["admitted"] is True
            assert body["backlog"] == 40
    assert run.core.reserved == 0
    assert run.sample(None)["throttle"] is False


# -- an API server that does not answer ------------------------------------------------------

DEAD_PORT = 18455
"""Nothing listens here: every API call is refused (18450-18459 are these tests')."""


def dead_api() -> client.ApiClient:
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{DEAD_PORT}"
    return client.ApiClient(configuration=cfg)


async def test_run_with_the_api_server_down_logs_once_keeps_its_patches_and_stops_cleanly(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    api = dead_api()
    out = tmp_path / "netmanager.jsonl"
    opts = netmanager.Options(out=out, tick=0.05, record_every=0.2)
    stop = asyncio.Event()
    runners: list[netmanager.Runner] = []
    task = asyncio.create_task(netmanager.run(opts, api, "dnsrace-test", stop,
                                              started=runners.append))
    try:
        for _ in range(100):
            if runners:
                break
            await asyncio.sleep(0.01)
        run = runners[0]
        run.backoff = outages.Backoff(0.05, 0.1)
        # as if the watch had shown a launch just before the API server went away
        await run.on_event("ADDED", instance(1, launched_at=run.clock()))
        await asyncio.sleep(1.5)  # propagated after 0.5 s, then patched, refused, retried
        assert not task.done()
        assert [u.done.instance for u in run.unwritten] == ["i-000001"]
        assert run.written == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await api.close()
    assert task.result() is run
    unreadable = [r for r in caplog.records if "Instances not readable" in r.message]
    unwritten = [r for r in caplog.records if "status not written" in r.message]
    assert len(unreadable) == 1, [r.message for r in unreadable]
    assert len(unwritten) == 1, [r.message for r in unwritten]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) >= 5  # one every 0.2 s, and the last on the way out
    assert (lines[-1]["propagated"], lines[-1]["unwritten"], lines[-1]["written"]) == (1, 1, 0)


# -- the commands as processes: SIGTERM is a clean exit --------------------------------------

_CLI = ("import typer\n"
        "from dnsrace.cli import netmanager as m\n"
        "app = typer.Typer()\n"
        "app.command('network-manager')(m.network_manager_cmd)\n"
        "app.command('instances')(m.instances_cmd)\n"
        "app()\n")
"""The two commands as the lead registers them in cli/app.py (not registered here)."""


@pytest.mark.parametrize("command", [["network-manager", "--out", "nm.jsonl"],
                                     ["instances"]])
def test_sigterm_is_a_clean_exit(tmp_path: Any, command: list[str]) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        f"clusters: [{{name: dead, cluster: {{server: 'http://127.0.0.1:{DEAD_PORT}'}}}}]\n"
        "users: [{name: dead, user: {token: none}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: dead}}]\n")
    env = dict(os.environ, DNSRACE_KUBECONFIG=str(kubeconfig), DNSRACE_NAMESPACE="dnsrace-test",
               DNSRACE_HTTP_PORT="0", DNSRACE_SAFEGUARDS="propagation-throttle")
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *command], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = "Network Manager:" if command[0] == "network-manager" else "instance hosts:"
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # imports take seconds on a busy machine: wait for its start
            seen.append(line)
            if started in line:
                break
        time.sleep(1.0)
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
        output = "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    if command[0] == "network-manager":
        assert "propagation-throttle on (max backlog 20)" in output
        lines = [json.loads(line) for line in (tmp_path / "nm.jsonl").read_text().splitlines()]
        assert len(lines) >= 2
        assert lines[-1]["throttle"] is True
