"""``dnsrace dwfm``'s runner without DynamoDB: options refused with the option's name, the
JSON-lines record, figures onto metrics, the restart endpoint and command (over a
``MemoryLeaseStore``), and the DynamoDB lease store's failures against loopback ports where
nothing answers (no DynamoDB, no CoreDNS: a DNS responder of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import prometheus_client
import pytest
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from dnsrace.cli.app import app
from dnsrace.components import dwfm, leasestore
from dnsrace.core import dwfm as core

HOST = "127.0.0.1"
HTTP_PORT = 18350
"""The restart command's test talks to a real port (18300-18399 are this test's)."""
DNS_PORT = 18351
DEAD_PORT = 18352
"""Nothing listens here: connections are refused."""
SILENT_PORT = 18353
"""A listener that never answers: requests time out."""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


# -- options ---------------------------------------------------------------------------------


def test_params_name_the_option_as_the_command_spells_it() -> None:
    with pytest.raises(ValueError, match=r"--lease-ttl \(3.0 s\) must be longer than "
                                         r"--check-interval \(5.0 s\)"):
        dwfm.params(lease_ttl=3.0)
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        dwfm.params(workers=0)
    with pytest.raises(ValueError, match="--service-time must be more than 0"):
        dwfm.params(service_time=0.0)
    assert dwfm.params(droplets=50, lease_ttl=None) == core.DwfmParams(droplets=50)


def test_safeguards_switch_the_throttle() -> None:
    assert not dwfm.throttle_on("off")
    assert not dwfm.throttle_on("")
    assert dwfm.throttle_on("on")
    assert dwfm.throttle_on("fencing, dwfm-throttle")
    assert not dwfm.throttle_on("fencing,propagation-throttle,velocity-control")
    with pytest.raises(ValueError, match="unknown safeguard dwfm-throtle"):
        dwfm.throttle_on("fencing,dwfm-throtle")


@pytest.mark.parametrize(("args", "message"), [
    (["--lease-ttl", "4", "--check-interval", "5"], "--lease-ttl (4.0 s) must be longer"),
    (["--droplets", "0"], "--droplets must be at least 1"),
    (["--safeguards", "fencing,nope"], "unknown safeguard nope"),
    (["--timeout", "0"], "--timeout must be more than 0"),
    (["--endpoint-url", "localhost:8000"], "--endpoint-url must be an http(s) URL"),
])
def test_the_command_refuses_bad_options_before_anything_runs(args: list[str],
                                                               message: str) -> None:
    result = CliRunner().invoke(app, ["dwfm", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_options_refuse_a_zero_tick() -> None:
    with pytest.raises(ValueError, match="tick must be more than 0"):
        dwfm.Options(tick=0.0)


# -- the record and the metrics --------------------------------------------------------------


def _figures(**changes: float) -> core.Figures:
    base = {"t": 1000.25, "droplets": 300, "leases_valid": 120, "queue_depth": 170,
            "in_service": 4, "queue_age": 42.5, "goodput": 0.125, "useful_per_s": 0.5,
            "useful": 10, "wasted": 70, "failed": 2, "admitted": 300, "refused": 0,
            "dropped": 0, "renewals": 900, "renewals_failed": 30, "throttle": False}
    base.update(changes)
    return core.Figures(**base)  # type: ignore[arg-type]


def test_the_record_holds_the_figures_a_scenario_reads() -> None:
    line = dwfm.record(_figures(), store_unavailable=28, restarts=1, lag=0.01234)
    assert json.loads(json.dumps(line)) == line
    assert line == {
        "t": 1000.25, "droplets": 300, "leases_valid": 120, "queue_depth": 170,
        "in_service": 4, "oldest_age": 42.5, "queue_age": 42.5, "goodput": 0.125,
        "useful_per_s": 0.5, "useful": 10, "wasted": 70, "failed": 2, "admitted": 300,
        "refused": 0, "dropped": 0, "renewals": 900, "renewals_failed": 30,
        "store_unavailable": 28, "restarts": 1, "throttle": False, "lag": 0.0123,
    }


def test_figures_map_onto_gauges_and_counters() -> None:
    before = {r: sample("dnsrace_dwfm_completions_total", result=r)
              for r in ("useful", "wasted", "failed")}
    restarts = sample("dnsrace_dwfm_restarts_total")
    exporter = dwfm.Exporter()
    exporter.update(_figures(), store_unavailable=5, restarts=0)
    exporter.update(_figures(useful=15, wasted=71, throttle=True, queue_depth=3,
                             queue_age=1.5, leases_valid=200, goodput=0.75),
                    store_unavailable=5, restarts=2)
    assert sample("dnsrace_dwfm_leases_valid") == 200
    assert sample("dnsrace_dwfm_queue_depth") == 3
    assert sample("dnsrace_dwfm_queue_oldest_age_seconds") == 1.5
    assert sample("dnsrace_dwfm_goodput_ratio") == 0.75
    assert sample("dnsrace_dwfm_throttle") == 1
    assert sample("dnsrace_dwfm_droplets") == 300
    # Counters grow by the core's totals, once: 15 useful, 71 wasted, 2 failed in all.
    assert sample("dnsrace_dwfm_completions_total", result="useful") - before["useful"] == 15
    assert sample("dnsrace_dwfm_completions_total", result="wasted") - before["wasted"] == 71
    assert sample("dnsrace_dwfm_completions_total", result="failed") - before["failed"] == 2
    assert sample("dnsrace_dwfm_restarts_total") - restarts == 2


# -- the runner over a MemoryLeaseStore ------------------------------------------------------

SMALL = core.DwfmParams(droplets=60, check_interval=1.0, lease_ttl=3.0, workers=2,
                        service_time=0.5, deadline=3.0)


async def _collapsed(clock: Clock) -> tuple[dwfm.Runner, core.MemoryLeaseStore]:
    """A runner whose store was unreachable long enough that every droplet's item is queued."""
    store = core.MemoryLeaseStore([(clock.t + 1.0, clock.t + 30.0)])
    runner = dwfm.Runner(dwfm.Options(params=SMALL, out=None), store, clock=clock)
    assert await runner.start(asyncio.Event())
    assert runner.core is not None
    assert len(store.expires) == 60  # provisioned on the empty store
    clock.t += 40.0
    await runner.on_core(runner.core.advance, clock.t)
    return runner, store


async def test_runner_provisions_samples_and_counts_store_errors() -> None:
    clock = Clock()
    runner, store = await _collapsed(clock)
    out = io.StringIO()
    line = await runner.sample(out)
    assert json.loads(out.getvalue()) == line
    assert line["t"] == clock.t
    assert line["queue_depth"] > 40  # collapsed: the whole fleet waits
    assert line["store_unavailable"] == store.errors > 0
    runner.close()


async def test_restart_endpoint_drops_the_queue_and_turns_the_throttle_on() -> None:
    clock = Clock()
    runner, _ = await _collapsed(clock)
    assert runner.core is not None
    queued = len(runner.core.queue)
    async with TestClient(TestServer(runner.app())) as http:
        bad = await http.post("/restart?throttle=maybe")
        assert bad.status == 400
        resp = await http.post("/restart?throttle=1")
        assert resp.status == 200
        body = await resp.json()
        assert body["dropped"] == queued + body["in_service"]
        assert body["queued"] == queued
        assert body["throttle"] is True
        assert body["throttle_was"] is False
        assert runner.core.queue_age(clock.t) == 0.0
        assert runner.core.throttle == core.Throttle()
        again = await (await http.post("/restart")).json()
        assert again["dropped"] == 0
        assert again["throttle"] is True  # a plain restart leaves the throttle as it is
        health = await http.get("/healthz")
        assert health.status == 200
    assert runner.restarts == 2
    line = await runner.sample(None)
    assert line["restarts"] == 2
    assert line["dropped"] == queued + body["in_service"]
    runner.close()


async def test_restart_before_the_store_was_reached_is_refused() -> None:
    runner = dwfm.Runner(dwfm.Options(params=SMALL, out=None), core.MemoryLeaseStore())
    async with TestClient(TestServer(runner.app())) as http:
        resp = await http.post("/restart")
        assert resp.status == 503
        assert "not started" in (await resp.json())["error"]
    runner.close()


async def test_leases_answer_the_fleet_and_the_valid_leases() -> None:
    clock = Clock()
    store = core.MemoryLeaseStore([(clock.t + 1.0, clock.t + 100.0)])
    runner = dwfm.Runner(dwfm.Options(params=SMALL, out=None), store, clock=clock)
    async with TestClient(TestServer(runner.app())) as http:
        early = await http.get("/leases")
        assert early.status == 503  # before DWFM has reached DynamoDB, as /restart
        assert "not started" in (await early.json())["error"]
        assert await runner.start(asyncio.Event())
        assert runner.core is not None
        body = await (await http.get("/leases")).json()
        assert body["t"] == clock.t
        assert body["droplets"] == core.droplet_names(60)
        assert body["valid"] == body["droplets"]  # provisioned
        # DynamoDB unreachable from t + 1 s: no renewal, every lease (3 s) runs out.
        clock.t += 5.0
        body = await (await http.get("/leases")).json()
        assert body["t"] == clock.t
        assert body["droplets"] == core.droplet_names(60)
        assert body["valid"] == []
    runner.close()


async def test_run_writes_a_line_a_period_and_the_restart_command_reaches_it(
        tmp_path: Path) -> None:
    out = tmp_path / "dwfm.jsonl"
    stop = asyncio.Event()
    options = dwfm.Options(params=SMALL, out=out, tick=0.01, record_every=0.2,
                           http_port=HTTP_PORT, http_host=HOST)
    ready = asyncio.Event()
    task = asyncio.create_task(dwfm.run(options, core.MemoryLeaseStore(), stop,
                                        started=lambda _: ready.set()))
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.sleep(0.5)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["dwfm", "restart", "--throttle",
                                  "--url", f"http://{HOST}:{HTTP_PORT}"])
    assert result.exit_code == 0, result.output
    assert "DWFM restarted: dropped" in result.output
    assert "dwfm-throttle on (was off)" in result.output
    await asyncio.sleep(0.3)
    stop.set()
    runner = await asyncio.wait_for(task, 10)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) >= 4  # one each 0.2 s, and the last on the way out
    assert all(b["t"] > a["t"] for a, b in itertools.pairwise(lines))
    assert lines[-1]["leases_valid"] == 60
    assert lines[-1]["restarts"] == 1
    assert lines[-1]["throttle"] is True
    assert runner.core is not None
    assert runner.core.throttle is not None


def test_restart_command_says_when_nothing_listens() -> None:
    result = CliRunner().invoke(app, ["dwfm", "restart", "--url", f"http://{HOST}:{DEAD_PORT}"])
    assert result.exit_code == 1
    assert "cannot reach DWFM" in " ".join(result.output.split())


# -- the DynamoDB lease store's failures -----------------------------------------------------


@contextlib.contextmanager
def dns_responder(answer: str | None, ttl: int = 1) -> Iterator[list[str]]:
    """A UDP DNS server on DNS_PORT answering every A query with ``answer`` (None: NXDOMAIN);
    yields the names asked."""
    asked: list[str] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, DNS_PORT))
    sock.settimeout(0.1)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            name = query.question[0].name
            asked.append(name.to_text())
            response = dns.message.make_response(query)
            if answer is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                response.answer.append(dns.rrset.from_text(name, ttl, "IN", "A", answer))
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield asked
    finally:
        done.set()
        thread.join()
        sock.close()


def _store(**kwargs: object) -> leasestore.DynamoLeaseStore:
    base: dict[str, object] = {"endpoint": "dynamodb.us-east-1.sim.internal",
                               "port": DEAD_PORT, "dns_server": HOST, "dns_port": DNS_PORT,
                               "timeout": 0.5}
    base.update(kwargs)
    return leasestore.DynamoLeaseStore(**base)  # type: ignore[arg-type]


def test_an_empty_regional_record_is_a_store_outage() -> None:
    store = _store()
    with dns_responder(None) as asked, pytest.raises(core.StoreUnavailable, match="NXDOMAIN"):
        store.renew("droplet-000", 1000.0, 12.0)
    assert asked == ["dynamodb.us-east-1.sim.internal."]
    assert store.outcomes == {"dns": 1}
    assert store.unavailable == 1
    assert store.down_since is not None


def test_a_refused_connection_is_a_store_outage_and_a_connect_outcome() -> None:
    store = _store()
    with dns_responder("127.0.0.1") as asked:
        started = time.monotonic()
        with pytest.raises(core.StoreUnavailable, match="connect"):
            store.establish("droplet-000", 1000.0, 12.0)
        with pytest.raises(core.StoreUnavailable, match="connect"):
            store.load(1000.0)
    assert time.monotonic() - started < 1.0  # refused at once, no breaker needed
    assert store.target == f"http://127.0.0.1:{DEAD_PORT}"
    assert store.outcomes == {"connect": 2}
    # The failed connection was closed, but the answer is still fresh (TTL 1 s): one lookup.
    assert len(asked) == 1


def test_a_slow_failure_opens_the_circuit_for_hold_seconds() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((HOST, SILENT_PORT))
    listener.listen(8)  # accepts connections in the kernel, never answers
    try:
        store = leasestore.DynamoLeaseStore(endpoint_url=f"http://{HOST}:{SILENT_PORT}",
                                            timeout=0.3, slow=0.2, hold=0.5)
        started = time.monotonic()
        with pytest.raises(core.StoreUnavailable, match="timeout"):
            store.renew("droplet-000", 1000.0, 12.0)
        assert time.monotonic() - started >= 0.3
        quick = time.monotonic()
        for _ in range(50):
            with pytest.raises(core.StoreUnavailable, match="circuit open"):
                store.renew("droplet-001", 1000.0, 12.0)
        assert time.monotonic() - quick < 0.2
        assert store.outcomes == {"timeout": 1, "open": 50}
        time.sleep(0.5)
        with pytest.raises(core.StoreUnavailable, match="timeout"):  # probes again
            store.renew("droplet-002", 1000.0, 12.0)
    finally:
        listener.close()


def test_the_store_needs_a_name_or_a_url() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        leasestore.DynamoLeaseStore()
