"""``dnsrace launcher``'s glue without a cluster: options and the flags they name, the lease view
from DWFM's ``/leases`` (the real DWFM runner over a ``MemoryLeaseStore``, and a port where
nothing answers), the admission gate, what each attempt writes, the figures lines and metrics.
The launcher against the real API server is tests/integration/test_launcher.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import urllib.error
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
import pytest
import typer
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client as kube
from typer.testing import CliRunner

from dnsrace.cli.launcher import launcher_cmd
from dnsrace.components import dwfm, launcher, launchwriter, outages
from dnsrace.core import dwfm as core_dwfm
from dnsrace.core import instances, launching

DEAD_PORT = 18470
"""Nothing listens here (18470-18479 are this test's)."""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def _cli() -> typer.Typer:
    """``launcher_cmd`` as the lead will register it in cli/app.py."""
    app = typer.Typer()
    app.command("launcher")(launcher_cmd)

    @app.command("other")
    def _other() -> None:  # a second command, so "launcher" is a subcommand as in app.py
        pass

    return app


# -- options ---------------------------------------------------------------------------------


def test_params_name_the_option_as_the_command_spells_it() -> None:
    with pytest.raises(ValueError, match="--rate must be more than 0"):
        launcher.params(rate=0.0)
    with pytest.raises(ValueError, match="--slots must be at least 1"):
        launcher.params(slots=0)
    with pytest.raises(ValueError, match="--retry-after must be more than 0"):
        launcher.params(retry_after=-1.0)
    with pytest.raises(ValueError, match="--patience must be more than 0"):
        launcher.params(patience=0.0)
    assert launcher.params(rate=2.0, patience=None) == launching.LauncherParams(rate=2.0)


def test_safeguards_switch_the_gate() -> None:
    assert not launcher.throttle_on("off")
    assert not launcher.throttle_on("")
    assert launcher.throttle_on("on")
    assert launcher.throttle_on("dwfm-throttle, propagation-throttle")
    assert not launcher.throttle_on("fencing,dwfm-throttle,velocity-control")
    with pytest.raises(ValueError, match="unknown safeguard propagation"):
        launcher.throttle_on("propagation")


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "0"], "--rate must be more than 0"),
    (["--slots", "0"], "--slots must be at least 1"),
    (["--retry-after", "0"], "--retry-after must be more than 0"),
    (["--patience", "-5"], "--patience must be more than 0"),
    (["--lifetime", "-1"], "--lifetime must be more than 0"),
    (["--safeguards", "fencing,nope"], "unknown safeguard nope"),
    (["--endpoints", "dns"], "--endpoints must be one of address, port"),
    (["--endpoints", "port"], "--endpoints port needs --endpoint-host"),
    (["--endpoints", "port", "--endpoint-host", "h", "--endpoint-base", "70000"],
     "--endpoint-base must be a TCP port"),
    (["--dwfm-url", "127.0.0.1:18207"], "--dwfm-url must be an http(s) URL"),
    (["--safeguards", "propagation-throttle", "--admit-url", "nm:18209/admit"],
     "--admit-url must be an http(s) URL"),
    (["--port", "-1"], "--port must be a TCP port"),
])
def test_the_command_refuses_bad_options_before_anything_runs(args: list[str],
                                                               message: str) -> None:
    result = CliRunner().invoke(_cli(), ["launcher", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_the_admit_url_is_only_used_with_the_throttle() -> None:
    # Without propagation-throttle the admit URL is not even checked: no gate.
    assert launcher.Options(admit_url=None).admit_url is None
    with pytest.raises(ValueError, match="tick must be more than 0"):
        launcher.Options(tick=0.0)
    opts = launcher.Options(endpoint_style="port", endpoint_host="instances", endpoint_base=30000)
    assert opts.endpoint(7) == "instances:30007"
    assert launcher.Options().endpoint(251) == "127.0.21.1:8080"


# -- the lease view --------------------------------------------------------------------------


def test_the_lease_view_is_the_last_answer_and_empty_without_one() -> None:
    leases = launcher.Leases.from_answer(
        {"t": 100.0, "droplets": ["d-0", "d-1", "d-2"], "valid": ["d-2", "d-0"]})
    assert leases.droplets == ("d-0", "d-1", "d-2")
    view = launcher.LeaseView(leases, stale_after=2.0)
    assert view.valid(101.0) == ["d-0", "d-2"]
    assert view.valid(102.5) == []  # stale: DWFM stopped answering
    assert launcher.LeaseView(None).valid(100.0) == []
    for bad in ([], {"t": "x", "droplets": [], "valid": []}, {"t": 1, "droplets": [1],
                                                              "valid": []},
                {"t": 1, "droplets": [], "valid": None}):
        with pytest.raises(ValueError, match="/leases"):
            launcher.Leases.from_answer(bad)


SMALL = core_dwfm.DwfmParams(droplets=12, check_interval=1.0, lease_ttl=3.0, workers=2,
                             service_time=0.5, deadline=3.0)


async def test_the_poller_reads_a_real_dwfm_and_empties_the_view_when_it_stops_answering(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(time.time())
    store = core_dwfm.MemoryLeaseStore([(clock.t + 1.0, clock.t + 100.0)])
    runner = dwfm.Runner(dwfm.Options(params=SMALL, out=None), store, clock=clock)
    caplog.set_level(logging.INFO, logger="dnsrace.components.launcher")
    async with TestServer(runner.app()) as server, aiohttp.ClientSession() as session:
        poller = launcher.LeasePoller(str(server.make_url("/")).rstrip("/"), timeout=1.0)
        # Before DWFM has reached DynamoDB it answers 503: no view, no placement.
        assert await poller.poll(session) is None
        assert poller.first is None
        assert await runner.start(asyncio.Event())
        leases = await poller.poll(session)
        assert leases is not None
        assert leases.droplets == tuple(core_dwfm.droplet_names(12))
        assert leases.valid == set(leases.droplets)
        assert poller.first == leases
        assert launcher.LeaseView(poller.latest).valid(clock.t) == sorted(leases.droplets)
        # DynamoDB away long enough for every lease to run out: DWFM says so.
        clock.t += 5.0
        later = await poller.poll(session)
        assert later is not None
        assert later.valid == frozenset()
        assert poller.first == leases  # the placement stays the first answer's
    # DWFM gone: twice no answer, one log line; the view is empty.
    async with aiohttp.ClientSession() as session:
        poller.url = f"http://127.0.0.1:{DEAD_PORT}/leases"
        assert await poller.poll(session) is None
        assert await poller.poll(session) is None
        assert launcher.LeaseView(poller.latest).valid(clock.t) == []
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in lines) == 2, lines  # the 503, then the dead port
    assert sum("reachable again" in m for m in lines) == 1, lines
    runner.close()


# -- the admission gate ----------------------------------------------------------------------


def test_the_gate_admits_what_the_network_manager_admits_and_nothing_without_an_answer(
        caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Any] = [{"admitted": True, "backlog": 3}, {"admitted": False, "backlog": 20},
                          {"admitted": "yes"}]

    def post(url: str, timeout: float) -> Any:
        assert (url, timeout) == ("http://nm/admit", 1.0)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    gate = launcher.AdmitGate("http://nm/admit", 1.0, post=post)
    assert gate.admit(1.0) is True
    assert gate.admit(2.0) is False
    assert gate.admit(3.0) is False  # not the contract's true
    caplog.set_level(logging.INFO, logger="dnsrace.components.launcher")
    answers += [urllib.error.URLError("refused"), urllib.error.URLError("refused"),
                {"admitted": True}]
    assert gate.admit(4.0) is False
    assert gate.admit(5.0) is False
    assert gate.admit(6.0) is True
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert (gate.calls, gate.admitted, gate.unanswered) == (6, 2, 2)


def test_a_slow_failure_holds_the_gate_shut_without_calls() -> None:
    calls = 0

    def post(url: str, timeout: float) -> Any:
        nonlocal calls
        calls += 1
        time.sleep(0.06)
        raise TimeoutError("timed out")

    gate = launcher.AdmitGate("http://nm/admit", 1.0, hold=0.3, slow=0.05, post=post)
    assert gate.admit(1.0) is False
    assert [gate.admit(1.0) for _ in range(20)] == [False] * 20
    assert calls == 1
    time.sleep(0.35)
    assert gate.admit(2.0) is False
    assert calls == 2


# -- what an attempt writes ------------------------------------------------------------------


def test_each_attempt_maps_to_its_writes() -> None:
    planner = launcher.Planner(launcher.Options(), offset=300)
    first = launching.Attempt(t=1000.0, request=0, attempt=1, az="us-east-1a",
                              outcome=launching.FAILED, reason=launching.INSUFFICIENT_CAPACITY)
    w1 = planner.write(first)
    assert (w1.number, w1.name) == (301, "i-000301")
    assert w1.create == instances.body(301, "us-east-1a")
    assert w1.status["status"]["phase"] == "Pending"
    assert w1.event[:2] == ("Warning", "InsufficientCapacity")
    second = launching.Attempt(t=1010.0, request=0, attempt=2, az="us-east-1a",
                               outcome=launching.FAILED,
                               reason=launching.REQUEST_LIMIT_EXCEEDED, waited=10.0)
    w2 = planner.write(second)
    assert w2.create is None  # created on the first attempt only
    (cond,) = w2.status["status"]["conditions"]
    assert cond["reason"] == "RequestLimitExceeded"
    assert cond["lastTransitionTime"] == instances.timestamp(1000.0)  # still False since then
    assert w2.event[:2] == ("Warning", "RequestLimitExceeded")
    third = launching.Attempt(t=1020.0, request=0, attempt=3, az="us-east-1a",
                              outcome=launching.LAUNCHED, droplet="droplet-003", waited=20.0)
    w3 = planner.write(third)
    status = w3.status["status"]
    assert status["phase"] == "Launched"
    assert status["endpoint"] == "127.0.21.51:8080"  # request 301
    assert status["droplet"] == "droplet-003"
    assert status["conditions"][0]["status"] == "True"
    assert w3.event[:2] == ("Normal", "Launched")
    assert "i-000301" not in planner.conditions  # the launcher never writes it again
    assert launcher.outcome_of(first) == "InsufficientCapacity"
    assert launcher.outcome_of(third) == "Launched"


def test_the_figures_lines() -> None:
    lines = launcher.record_lines(1000.1234, {"Launched": 2, "InsufficientCapacity": 5}, 7)
    assert lines == [
        {"t": 1000.123, "outcome": "Launched", "count": 2},
        {"t": 1000.123, "outcome": "InsufficientCapacity", "count": 5},
        {"t": 1000.123, "outcome": "RequestLimitExceeded", "count": 0},
        {"t": 1000.123, "outcome": "GaveUp", "count": 0},
        {"t": 1000.123, "outcome": "pending", "count": 7},
    ]


class Refuse:
    def admit(self, now: float) -> bool:
        return False


async def test_the_runner_waits_for_the_fleet_then_launches_and_fails_on_real_leases() -> None:
    clock = Clock(2000.0)
    runner = launcher.Runner(launcher.Options(out=None), None, clock=clock)
    launched = sample("dnsrace_launcher_attempts_total", outcome="Launched", reason="")
    assert await runner.tick() == []  # DWFM has not answered: no placement, no launch
    assert runner.core is None
    fleet = tuple(core_dwfm.droplet_names(6))
    runner.poller.first = runner.poller.latest = launcher.Leases(2000.0, fleet, frozenset(fleet))
    assert await runner.tick() == []
    assert runner.core is not None
    assert runner.core.placement == launching.spread(fleet)
    clock.t += 3.0
    runner.poller.latest = launcher.Leases(clock.t, fleet, frozenset(fleet))
    attempts = await runner.tick()
    assert [(a.outcome, a.az) for a in attempts] == [
        ("Launched", "us-east-1a"), ("Launched", "us-east-1b"), ("Launched", "us-east-1c")]
    # DWFM does not answer: the view is empty, the next requests fail InsufficientCapacity.
    runner.poller.latest = None
    clock.t += 2.0
    failed = await runner.tick()
    assert [(a.outcome, a.reason) for a in failed] == [("Failed", "InsufficientCapacity")] * 2
    # Leases back, but the gate refuses: RequestLimitExceeded.
    runner.poller.latest = launcher.Leases(clock.t, fleet, frozenset(fleet))
    runner.gate = Refuse()
    clock.t += 1.0
    (refused,) = await runner.tick()
    assert (refused.outcome, refused.reason) == ("Failed", "RequestLimitExceeded")
    out = io.StringIO()
    lines = await runner.sample(out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == lines
    counts = {line["outcome"]: line["count"] for line in lines}
    assert counts == {"Launched": 3, "InsufficientCapacity": 2, "RequestLimitExceeded": 1,
                      "GaveUp": 0, "pending": 3}
    assert {line["t"] for line in lines} == {clock.t}
    assert sample("dnsrace_launcher_attempts_total", outcome="Launched", reason="") \
        - launched == 3
    assert sample("dnsrace_launcher_pending") == 3
    assert sample("dnsrace_launcher_instances") == 3
    assert sample("dnsrace_launcher_leases_valid") == 6
    assert sample("dnsrace_launcher_oldest_pending_seconds") == pytest.approx(2.0)
    nothing = await runner.sample(None)  # the counts are per period
    assert {line["outcome"]: line["count"] for line in nothing}["Launched"] == 0
    assert runner.health() == (True, "")
    runner.close()


async def test_slots_of_earlier_instances_stay_used() -> None:
    clock = Clock(2000.0)
    runner = launcher.Runner(launcher.Options(out=None, params=launching.LauncherParams(
        slots=1)), None, clock=clock)
    fleet = ("droplet-000", "droplet-001", "droplet-002", "droplet-003")
    runner.used.update({"droplet-000": 1})
    runner.planner.offset = 41
    runner.poller.first = runner.poller.latest = launcher.Leases(2000.0, fleet, frozenset(fleet))
    await runner.tick()
    clock.t += 1.0
    runner.poller.latest = launcher.Leases(clock.t, fleet, frozenset(fleet))
    (attempt,) = await runner.tick()
    assert attempt.droplet == "droplet-003"  # us-east-1a's other droplet; 000 is full
    assert runner.planner.write(attempt).name == "i-000042"
    runner.close()


# -- an API server that does not answer ------------------------------------------------------

DEAD_API_PORT = 18478
"""Nothing listens here: every API call is refused."""


def _dead_api() -> kube.ApiClient:
    cfg = kube.Configuration()
    cfg.host = f"http://127.0.0.1:{DEAD_API_PORT}"
    return kube.ApiClient(configuration=cfg)


async def test_the_writer_keeps_every_write_in_order_while_the_api_server_is_away(
        caplog: pytest.LogCaptureFixture) -> None:
    api = _dead_api()
    writer = launcher.Writer(api, "dnsrace-test")
    writer.backoff = outages.Backoff(0.01, 0.02)
    planner = launcher.Planner(launcher.Options())
    attempts = [launching.Attempt(t=1000.0 + n, request=n, attempt=1, az=launching.AZS[n % 3],
                                  outcome=launching.FAILED,
                                  reason=launching.INSUFFICIENT_CAPACITY) for n in range(3)]
    for a in attempts:
        writer.put(planner.write(a))
    caplog.set_level(logging.INFO, logger="dnsrace.components.launcher")
    waits = [await writer.step() for _ in range(3)]
    assert all(w is not None and w > 0 for w in waits)
    assert [w.name for w in writer.queue] == ["i-000001", "i-000002", "i-000003"]
    assert not writer.queue[0].created
    assert (writer.written, writer.dropped) == (0, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the API server unreachable" in m for m in messages) == 1, messages
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5)
    await writer.drain(0.05)  # nothing reachable: it gives up in time, the writes kept
    assert len(writer.queue) == 3
    await api.close()


async def test_run_with_the_api_server_down_waits_and_stops_cleanly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        f"clusters: [{{name: dead, cluster: {{server: 'http://127.0.0.1:{DEAD_API_PORT}'}}}}]\n"
        "users: [{name: dead, user: {token: x}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: dead}}]\n")
    out = tmp_path / "launcher.jsonl"
    caplog.set_level(logging.INFO, logger="dnsrace.components.launcher")
    stop = asyncio.Event()
    task = asyncio.create_task(launcher.run(
        launcher.Options(out=out, dwfm_url=f"http://127.0.0.1:{DEAD_PORT}"), kubeconfig, stop))
    await asyncio.sleep(1.5)
    assert not task.done()
    stop.set()
    runner = await asyncio.wait_for(task, 10)
    assert runner.core is None  # never numbered, never placed
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the API server unreachable" in m for m in messages) == 1, messages


async def test_an_instance_past_its_lifetime_is_queued_for_deletion() -> None:
    api = _dead_api()
    clock = Clock(3000.0)
    opts = launcher.Options(out=None, params=launching.LauncherParams(rate=1.0, lifetime=5.0))
    runner = launcher.Runner(opts, api, clock=clock)
    runner.planner.offset = 40  # numbered on from an earlier run's Instances
    fleet = tuple(core_dwfm.droplet_names(6))
    runner.poller.first = runner.poller.latest = launcher.Leases(3000.0, fleet, frozenset(fleet))
    await runner.tick()
    clock.t += 2.0
    runner.poller.latest = launcher.Leases(clock.t, fleet, frozenset(fleet))
    await runner.tick()
    assert runner.writer is not None
    assert [type(w).__name__ for w in runner.writer.queue] == ["Write", "Write"]
    clock.t += 5.5
    runner.poller.latest = launcher.Leases(clock.t, fleet, frozenset(fleet))
    await runner.tick()
    ended = [w.name for w in runner.writer.queue if isinstance(w, launchwriter.Terminate)]
    assert ended == ["i-000041", "i-000042"], "the first two launched, 5 s on, by their names"
    assert runner.core is not None
    assert runner.core.terminated == 2
    assert len(runner.core.instances) == runner.core.launched - 2
    await api.close()
