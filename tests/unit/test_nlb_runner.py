"""``dnsrace nlb``'s runner without a cluster: options refused with the option's name, the
targets an Instance list and its watch events give, the record set computed from a
``Published`` and its writes (over ``MemoryRecordStore``, an outage of it included), the
figures lines, ``/failover`` and its loopback check, the ``failover`` command, and the health
check's outcomes against real sockets on loopback (a tiny aiohttp server stands for an
instance: the instance is the test's input, not the component under test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from dnsrace.cli.nlb import nlb_app
from dnsrace.components import nlbctl
from dnsrace.core import nlb as core
from dnsrace.core import records, stores

HOST = "127.0.0.1"
NAME = "nlb.us-east-1.sim.internal"
FAST = core.NlbParams(interval=1.0, unhealthy_threshold=2, healthy_threshold=2,
                      failover_share=0.5)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def instance(n: int, az: str, endpoint: str | None = None, phase: str = "Launched",
             deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if endpoint is not None:
        status["endpoint"] = endpoint
    meta: dict[str, Any] = {"name": f"i-{n:06d}"}
    if deleting:
        meta["deletionTimestamp"] = "2025-10-20T09:36:00Z"
    return {"metadata": meta, "spec": {"az": az, "request": n}, "status": status}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def hosts(state: stores.EndpointState) -> list[str]:
    return sorted(r.host or "" for r in state.records.values())


def fail(runner: nlbctl.Runner, name: str, times: int = 2) -> None:
    """Health checks of ``name`` failing ``times`` in a row (results as a probe gives them)."""
    for _ in range(times):
        runner.core.observe(name, runner.clock(), False)


# -- options ---------------------------------------------------------------------------------


def test_params_name_the_option_as_the_command_spells_it() -> None:
    with pytest.raises(ValueError, match=r"--failover-share must be in \[0, 1\), got 1.5"):
        nlbctl.params(failover_share=1.5)
    with pytest.raises(ValueError, match="--interval must be more than 0"):
        nlbctl.params(interval=0.0)
    with pytest.raises(ValueError, match="--unhealthy-threshold must be at least 1"):
        nlbctl.params(unhealthy_threshold=0)
    assert nlbctl.params(interval=None, healthy_threshold=5) == core.NlbParams(
        healthy_threshold=5)


@pytest.mark.parametrize(("args", "message"), [
    (["--failover-share", "1.5"], "--failover-share must be in [0, 1)"),
    (["--healthy-threshold", "0"], "--healthy-threshold must be at least 1"),
    (["--interval", "-1"], "--interval must be more than 0"),
    (["--check-timeout", "0"], "--check-timeout must be more than 0 s"),
    (["--safeguards", "velocity-control,brakes"], "unknown safeguard brakes"),
    (["--name", "nlb.example.com"], "--name 'nlb.example.com' must be a name inside the lab "
                                    "zone sim.internal"),
    (["--port", "70000"], "--port must be in [0, 65535]"),
])
def test_the_command_refuses_bad_options_before_anything_runs(args: list[str],
                                                              message: str) -> None:
    result = CliRunner().invoke(nlb_app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_safeguards_switch_velocity_control() -> None:
    assert nlbctl.velocity_on("off") is False
    assert nlbctl.velocity_on("") is False
    assert nlbctl.velocity_on("on") is True
    assert nlbctl.velocity_on("all") is True
    assert nlbctl.velocity_on("dwfm-throttle, velocity-control") is True
    assert nlbctl.velocity_on("fencing,dwfm-throttle,propagation-throttle") is False
    with pytest.raises(ValueError, match="unknown safeguard brakes"):
        nlbctl.velocity_on("brakes")


@pytest.mark.parametrize("module", ["nlbctl", "netmanager", "launcher"])
def test_a_cascade_component_does_not_carry_dwfms_metrics(module: str) -> None:
    """``--safeguards`` is read by ``components.options`` (the core's names), so no other
    component imports DWFM, whose metrics would show on its /metrics."""
    probe = (f"import sys, dnsrace.components.{module}; "
             "print('dnsrace.components.dwfm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_the_name_must_be_in_the_zone() -> None:
    assert nlbctl.check_name("NLB.us-east-1.sim.internal.", "sim.internal") == NAME
    assert nlbctl.default_name("sim.internal") == NAME
    for bad in ("sim.internal", "nlb..sim.internal", "nlb.other"):
        with pytest.raises(ValueError, match="--name"):
            nlbctl.check_name(bad, "sim.internal")


def test_the_failover_command_refuses_a_third_state() -> None:
    result = CliRunner().invoke(nlb_app, ["failover", "maybe", "--url", f"http://{HOST}:1"])
    assert result.exit_code == 2
    assert "use off or on" in result.output


# -- targets from Instances ------------------------------------------------------------------


def test_only_launched_instances_with_an_endpoint_are_targets() -> None:
    assert nlbctl.member(instance(1, "us-east-1a", "127.0.20.1:8080")) == nlbctl.Member(
        "i-000001", "us-east-1a", "127.0.20.1:8080")
    assert nlbctl.member(instance(2, "us-east-1a", phase="Pending")) is None
    assert nlbctl.member(instance(3, "us-east-1a", "127.0.20.3:8080", phase="GaveUp")) is None
    assert nlbctl.member(instance(4, "us-east-1a")) is None  # launched, no endpoint yet
    assert nlbctl.member(instance(5, "us-east-1a", "127.0.20.5:8080", deleting=True)) is None
    assert nlbctl.member({"metadata": {"name": "i-000006"}}) is None


def test_a_list_and_watch_events_register_and_deregister_targets() -> None:
    clock = Clock()
    runner = nlbctl.Runner(nlbctl.Options(params=FAST, out=None), None, clock=clock)
    runner.sync([instance(1, "us-east-1a", "127.0.20.1:8080"),
                 instance(2, "us-east-1b", "127.0.20.2:8080"),
                 instance(3, "us-east-1c", phase="Pending")])
    assert runner.synced
    assert {n: t.az for n, t in runner.core.targets.items()} == {
        "i-000001": "us-east-1a", "i-000002": "us-east-1b"}
    fail(runner, "i-000001")
    assert not runner.core.targets["i-000001"].healthy
    # Launched later, seen by the watch: in service at once (healthy until checked).
    runner.event("MODIFIED", instance(3, "us-east-1c", "127.0.20.3:8080"))
    assert runner.core.targets["i-000003"].healthy
    # The same object again (a status patch of another writer) keeps the target's health.
    runner.event("MODIFIED", instance(1, "us-east-1a", "127.0.20.1:8080"))
    assert not runner.core.targets["i-000001"].healthy
    runner.event("DELETED", instance(2, "us-east-1b", "127.0.20.2:8080"))
    assert "i-000002" not in runner.core.targets
    # A list that no longer holds an Instance (its DELETED event missed) deregisters it.
    runner.sync([instance(3, "us-east-1c", "127.0.20.3:8080")])
    assert set(runner.core.targets) == {"i-000003"}
    assert set(runner.endpoints) == {"i-000003"}


# -- the record ------------------------------------------------------------------------------


def test_the_record_set_has_one_address_per_distinct_published_host() -> None:
    nlb = core.Nlb(FAST, random.Random(0), start=0.0)
    endpoints = {"i-000001": "10.244.0.7:20001", "i-000002": "10.244.0.7:20002",
                 "i-000003": "127.0.20.3:8080", "i-000004": "127.0.20.4:8080",
                 "i-000005": "[fd00::5]:8080", "i-000006": "instance-host:20006"}
    for name in endpoints:
        nlb.register(name, "us-east-1a", 0.0)
    for _ in range(2):
        nlb.observe("i-000004", 1.0, False)
    published = nlb.publish(2.0)
    assert "i-000004" not in published.targets
    recs = nlbctl.record_set(published.targets, endpoints, ttl=5)
    assert recs == {
        "nlb-10-244-0-7": records.Record(ttl=5, host="10.244.0.7"),  # two targets, one host
        "nlb-127-0-20-3": records.Record(ttl=5, host="127.0.20.3"),
        "nlb-fd00--5": records.Record(ttl=5, host="fd00::5"),
    }  # i-000004 unhealthy; i-000006's host is no address DNS can carry


async def test_writes_replace_the_names_records_and_touch_no_other_name() -> None:
    clock = Clock()
    store = stores.MemoryRecordStore()
    await store.apply(stores.Change(NAME, put={"old": records.Record(ttl=5, host="10.0.0.9")}))
    other = "dynamodb.us-east-1.sim.internal"
    await store.apply(stores.Change(other, put={"a": records.Record(ttl=5, host="10.0.0.1")}))
    runner = nlbctl.Runner(nlbctl.Options(params=FAST, out=None, ttl=7), store, clock=clock)
    runner.publish()
    assert not await runner.write()  # nothing listed yet: the record is left alone
    runner.sync([instance(n, "us-east-1a", f"127.0.20.{n}:8080") for n in (1, 2, 3)])
    runner.publish()
    assert await runner.write()
    state = await store.read(NAME)
    assert sorted(r.host or "" for r in state.records.values()) == [
        "127.0.20.1", "127.0.20.2", "127.0.20.3"]
    assert {r.ttl for r in state.records.values()} == {7}
    assert state.marker is None  # the NLB writes no marker: it is its name's only writer
    runner.publish()
    assert not await runner.write()  # unchanged: not written again
    fail(runner, "i-000002")
    runner.publish()
    assert await runner.write()
    assert sorted(r.host or "" for r in (await store.read(NAME)).records.values()) == [
        "127.0.20.1", "127.0.20.3"]
    assert (await store.read(other)).records == {"a": records.Record(ttl=5, host="10.0.0.1")}
    # Someone else changed the record: the resync reads it back and the next write repairs it.
    await store.apply(stores.Change(NAME, delete_all=True))
    await runner.resync()
    assert await runner.write()
    assert len((await store.read(NAME)).records) == 2


class FlakyStore(stores.MemoryRecordStore):
    """The project's in-memory store, unreachable for the first ``down`` writes."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down
        self.attempts = 0

    async def apply(self, change: stores.Change) -> None:
        self.attempts += 1
        if self.attempts <= self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        await super().apply(change)


async def test_a_store_outage_is_one_log_line_and_the_record_comes_when_it_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(down=3)
    runner = nlbctl.Runner(nlbctl.Options(params=FAST, out=None, tick=0.01), store)
    runner.sync([instance(1, "us-east-1b", "127.0.20.1:8080")])
    failed = sample("dnsrace_nlb_record_writes_total", result="failed")
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="dnsrace.components.nlbctl"):
        task = asyncio.create_task(runner.write_loop(stop))
        runner.publish()
        for _ in range(400):  # back-off 0.5 + 1 + 2 s
            if runner.written is not None:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert runner.written == {"nlb-127-0-20-1": records.Record(ttl=5, host="127.0.20.1")}
    assert store.attempts == 4
    assert runner.write_failures == 3
    assert sample("dnsrace_nlb_record_writes_total", result="failed") - failed == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "DNS etcd" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # an outage, not a bug: no traceback
    assert any("reachable again" in r.getMessage() for r in caplog.records)


# -- figures ---------------------------------------------------------------------------------


def _failed_over_runner(clock: Clock) -> nlbctl.Runner:
    """us-east-1a: 4 targets, 3 failing (failed over); us-east-1b: 2 healthy."""
    runner = nlbctl.Runner(nlbctl.Options(params=FAST, out=None), stores.MemoryRecordStore(),
                           clock=clock)
    runner.sync([instance(n, "us-east-1a", f"127.0.20.{n}:8080") for n in (1, 2, 3, 4)]
                + [instance(n, "us-east-1b", f"127.0.20.{n}:8080") for n in (5, 6)])
    runner.publish()
    for n in (2, 3, 4):
        fail(runner, f"i-{n:06d}")
    clock.t += 1
    runner.publish()
    return runner


def test_the_figures_lines_per_az_and_for_all() -> None:
    clock = Clock()
    runner = _failed_over_runner(clock)
    runner.checks.update({"ok": 5, "refused": 6})
    lines = runner.lines()
    by_az = {line["az"]: line for line in lines}
    assert [line["az"] for line in lines] == ["us-east-1a", "us-east-1b", "us-east-1c", "all"]
    assert by_az["us-east-1a"] == {"t": 1001.0, "az": "us-east-1a", "healthy": 1,
                                   "unhealthy": 3, "published": 0, "failed_over": True,
                                   "targets": 4}
    assert by_az["us-east-1b"]["published"] == 2
    assert by_az["us-east-1b"]["failed_over"] is False
    assert by_az["us-east-1c"] == {"t": 1001.0, "az": "us-east-1c", "healthy": 0,
                                   "unhealthy": 0, "published": 0, "failed_over": False,
                                   "targets": 0}
    total = by_az["all"]
    assert "healthy" not in total  # the report's per-AZ capacity lane reads per-AZ lines only
    assert (total["flips"], total["failovers"], total["removed"], total["held"]) == (3, 1, 1, 0)
    assert (total["targets"], total["unhealthy"], total["published"]) == (6, 3, 2)
    assert (total["checks"], total["checks_failed"]) == (11, 6)
    assert total["auto_failover"] is True
    assert total["velocity_control"] is False
    json.dumps(lines)  # JSON as written


def test_figures_map_onto_gauges_and_counters() -> None:
    clock = Clock()
    flips = sample("dnsrace_nlb_flips_total")
    failovers = sample("dnsrace_nlb_failovers_total")
    removed = sample("dnsrace_nlb_capacity_removed_total")
    runner = _failed_over_runner(clock)
    runner.sample(None)
    runner.sample(None)  # the counters add what changed, not the totals again
    assert sample("dnsrace_nlb_targets", az="us-east-1a", state="unhealthy") == 3
    assert sample("dnsrace_nlb_targets", az="us-east-1a", state="healthy") == 1
    assert sample("dnsrace_nlb_published_capacity", az="us-east-1a") == 0
    assert sample("dnsrace_nlb_published_capacity", az="us-east-1b") == 2
    assert sample("dnsrace_nlb_failed_over", az="us-east-1a") == 1
    assert sample("dnsrace_nlb_failed_over", az="us-east-1c") == 0
    assert sample("dnsrace_nlb_auto_failover") == 1
    assert sample("dnsrace_nlb_velocity_control") == 0
    assert sample("dnsrace_nlb_flips_total") - flips == 3
    assert sample("dnsrace_nlb_failovers_total") - failovers == 1
    assert sample("dnsrace_nlb_capacity_removed_total") - removed == 1


# -- the manual step -------------------------------------------------------------------------


async def test_failover_off_puts_the_failed_over_az_back() -> None:
    clock = Clock()
    runner = _failed_over_runner(clock)
    assert runner.core.failed_over == {"us-east-1a"}
    async with TestClient(TestServer(runner.app())) as http:
        bad = await http.post("/failover?enabled=maybe")
        assert bad.status == 400
        assert (await http.post("/failover")).status == 400  # enabled= is required
        resp = await http.post("/failover?enabled=0")
        assert resp.status == 200
        body = await resp.json()
        assert body == {"t": 1001.0, "auto_failover": False, "was": True,
                        "failed_over_before": ["us-east-1a"], "failed_over": [],
                        "added": 1, "removed": 0, "published": 3}
        assert runner.desired is not None
        assert "nlb-127-0-20-1" in runner.desired  # 1a's healthy target, back
        again = await (await http.post("/failover?enabled=1")).json()
        assert (again["auto_failover"], again["was"]) == (True, False)
        assert again["failed_over"] == ["us-east-1a"]
        assert again["removed"] == 1
        assert (await http.get("/healthz")).status == 200


async def test_failover_is_taken_from_loopback_only() -> None:
    runner = nlbctl.Runner(nlbctl.Options(params=FAST, out=None), None)

    @web.middleware
    async def from_afar(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                        ) -> web.StreamResponse:
        return await handler(request.clone(remote="192.0.2.7"))

    app = runner.app()
    app.middlewares.append(from_afar)
    async with TestClient(TestServer(app)) as http:
        resp = await http.post("/failover?enabled=0")
        assert resp.status == 403
        assert "loopback only" in (await resp.json())["error"]
    assert runner.core.auto_failover is True


def test_the_command_says_what_changed() -> None:
    assert nlbctl_describe({"auto_failover": False, "was": True,
                            "failed_over_before": ["us-east-1a"], "failed_over": [],
                            "added": 4, "removed": 0, "published": 9}) == (
        "NLB automatic AZ failover off (was on); back in DNS: us-east-1a; 4 targets added, "
        "0 removed, 9 published")
    assert nlbctl_describe({"auto_failover": True, "was": True, "failed_over_before": [],
                            "failed_over": [], "added": 0, "removed": 0, "published": 9}) == (
        "NLB automatic AZ failover on (unchanged); 0 targets added, 0 removed, 9 published")
    assert nlbctl_describe({"auto_failover": True, "was": False, "failed_over_before": [],
                            "failed_over": ["us-east-1b"], "added": 1, "removed": 5,
                            "published": 4}) == (
        "NLB automatic AZ failover on (was off); failed over: us-east-1b; 1 target added, "
        "5 removed, 4 published")


def nlbctl_describe(result: dict[str, object]) -> str:
    from dnsrace.cli import nlb as cli_nlb

    return cli_nlb.describe(result)


async def test_run_samples_serves_the_switch_and_exits_with_a_last_line(
        tmp_path: Path) -> None:
    out = tmp_path / "nlb.jsonl"
    port = free_port()
    store = stores.MemoryRecordStore()
    # Checks an hour apart: none is due during the test, the failures are given by hand.
    options = nlbctl.Options(params=core.NlbParams(interval=3600.0), out=out, tick=0.05,
                             record_every=0.2, http_port=port, http_host=HOST)
    stop = asyncio.Event()
    ready: asyncio.Future[nlbctl.Runner] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(nlbctl.run(options, store, None, stop,
                                          started=ready.set_result))
    runner = await asyncio.wait_for(ready, 10)
    runner.sync([instance(n, "us-east-1a", f"127.0.20.{n}:8080") for n in (1, 2, 3)]
                + [instance(4, "us-east-1b", "127.0.20.4:8080")])
    for n in (2, 3):
        fail(runner, f"i-{n:06d}")
    await asyncio.sleep(0.5)
    assert hosts(await store.read(NAME)) == ["127.0.20.4"]  # 1a failed over
    result = await asyncio.to_thread(CliRunner().invoke, nlb_app,
                                     ["failover", "off", "--url", f"http://{HOST}:{port}"])
    assert result.exit_code == 0, result.output
    assert "NLB automatic AZ failover off (was on); back in DNS: us-east-1a" in result.output
    await asyncio.sleep(0.3)
    assert hosts(await store.read(NAME)) == ["127.0.20.1", "127.0.20.4"]
    stop.set()
    await asyncio.wait_for(task, 10)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    totals = [line for line in lines if line["az"] == "all"]
    assert len(totals) >= 3
    assert totals[-1]["auto_failover"] is False
    assert totals[-1]["failovers"] == 1
    assert totals[-1]["addresses"] == 2
    assert hosts(await store.read(NAME)) == ["127.0.20.1", "127.0.20.4"]  # left as it is


def test_the_failover_command_says_when_nothing_listens() -> None:
    result = CliRunner().invoke(nlb_app, ["failover", "off", "--url",
                                          f"http://{HOST}:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the NLB" in " ".join(result.output.split())


# -- health checks against real sockets ------------------------------------------------------


@contextlib.asynccontextmanager
async def an_instance(status: int) -> AsyncIterator[str]:
    """An aiohttp server on loopback whose /healthz answers ``status``; yields its endpoint."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=status, text="ok" if status == 200 else "sick")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        yield f"{HOST}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def silent_listener() -> Any:
    """A socket that takes connections and never answers."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    try:
        yield f"{HOST}:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_probe_outcomes() -> None:
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with an_instance(200) as serving:
            assert await nlbctl.probe(session, serving, 1.0) == "ok"
        async with an_instance(500) as sick:
            assert await nlbctl.probe(session, sick, 1.0) == "status"
        assert await nlbctl.probe(session, f"{HOST}:{free_port()}", 1.0) == "refused"
        with silent_listener() as silent:
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await nlbctl.probe(session, silent, 0.3) == "timeout"
            assert 0.25 < loop.time() - started < 1.0
        assert await nlbctl.probe(session, "no-port", 1.0) == "error"


async def test_checks_go_to_the_core_and_make_a_failing_target_unhealthy() -> None:
    runner = nlbctl.Runner(nlbctl.Options(params=core.NlbParams(
        interval=0.2, unhealthy_threshold=2, healthy_threshold=2), out=None), None)
    ok_before = sample("dnsrace_nlb_checks_total", result="ok")
    async with an_instance(200) as serving:
        runner.sync([instance(1, "us-east-1a", serving),
                     instance(2, "us-east-1a", f"{HOST}:{free_port()}")])
        stop = asyncio.Event()
        task = asyncio.create_task(runner.check_loop(stop))
        await asyncio.sleep(1.2)
        stop.set()
        await asyncio.wait_for(task, 5)
    assert runner.core.targets["i-000001"].healthy
    assert not runner.core.targets["i-000002"].healthy
    assert runner.checks["ok"] >= 3
    assert runner.checks["refused"] >= 3
    assert sample("dnsrace_nlb_checks_total", result="ok") - ok_before == runner.checks["ok"]
