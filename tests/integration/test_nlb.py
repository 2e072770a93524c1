"""``dnsrace nlb`` against the real local plane: Instances created by the test in a namespace of
its own (the Instance CRD, status written through the status subresource), real HTTP listeners
on loopback addresses standing for the instances that serve, none for those that do not; the
NLB runs in-process, watching the API server, probing the listeners and writing its record into
the lab's DNS etcd; every assertion on the record is a DNS query through the lab's real CoreDNS.

The scene: us-east-1b (2 serving of 3) and us-east-1c (2 of 2) launch first: the record holds
all five at once (registered at launch, in service before any check) and the serving four only
after the unhealthy threshold. us-east-1a then launches 4, one serving: 3 of 4 unhealthy fails
the AZ over and its serving target leaves DNS too. ``dnsrace nlb failover off`` puts it back;
two of 1a's instances start serving (they come back after the healthy threshold: flapping), and
``failover on`` leaves 1a in DNS (1 of 4 unhealthy). A deleted Instance leaves DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
from aiohttp import web
from kubernetes_asyncio import client
from typer.testing import CliRunner

from dnsrace.cli.nlb import nlb_app
from dnsrace.components import nlbctl, prober
from dnsrace.core import instances, records
from dnsrace.core import nlb as core
from dnsrace.dnsstore import etcd as etcd_store
from tests.conftest import Cluster

PORT = 18471
"""Every instance of the test serves (or not) on this port, each on a loopback address of its
own in 127.0.97.0/24."""
PARAMS = core.NlbParams(interval=2.0, unhealthy_threshold=2, healthy_threshold=2,
                        failover_share=0.5)
"""A target launched without a listener stays in DNS between 2 and 4 s (two failed checks)."""
AZ = {1: "us-east-1b", 2: "us-east-1b", 3: "us-east-1b", 4: "us-east-1c", 5: "us-east-1c",
      6: "us-east-1a", 7: "us-east-1a", 8: "us-east-1a", 9: "us-east-1a"}


def address(n: int) -> str:
    return f"127.0.97.{n}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def answer(cluster: Cluster, name: str) -> list[str] | str:
    """The A records CoreDNS answers for ``name`` (sorted), or the rcode when it is not
    NOERROR."""
    msg = dns.message.make_query(name + ".", dns.rdatatype.A)
    try:
        ans = await dns.asyncquery.udp(msg, prober.server_address(cluster.cfg.dns.server_host),
                                       port=cluster.cfg.dns.server_port, timeout=1.0)
    except dns.exception.Timeout:
        return "TIMEOUT"
    if ans.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(ans.rcode())
    return sorted(rr.to_text() for rrset in ans.answer for rr in rrset
                  if rrset.rdtype == dns.rdatatype.A)


async def until_answer(cluster: Cluster, name: str, want: list[int], what: str,
                       timeout: float = 20.0) -> float:
    """Query until CoreDNS answers exactly the addresses of ``want``; seconds waited."""
    expected = sorted(address(n) for n in want)
    started = time.monotonic()
    last: list[str] | str = []
    while time.monotonic() - started < timeout:
        last = await answer(cluster, name)
        if last == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}: CoreDNS answers {last}, "
                         f"expected {expected}")


async def until(test: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if test():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextlib.asynccontextmanager
async def listeners() -> AsyncIterator[Callable[[int], Any]]:
    """Start real HTTP listeners for instances (``await serve(n)``), each answering
    ``GET /healthz`` 200 on its own loopback address; all closed on the way out."""
    runners: list[web.AppRunner] = []

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def serve(n: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address(n), PORT).start()
        runners.append(runner)

    try:
        yield serve
    finally:
        for runner in runners:
            await runner.cleanup()


async def launch(api: client.ApiClient, ns: str, *numbers: int) -> None:
    """Instances launched as the launcher leaves them: created, then their status Launched with
    their endpoint (the status subresource); all at once, so the NLB registers them together."""
    co = client.CustomObjectsApi(api)
    await asyncio.gather(*(co.create_namespaced_custom_object(
        instances.GROUP, instances.VERSION, ns, instances.PLURAL, instances.body(n, AZ[n]))
        for n in numbers))
    await asyncio.gather(*(co.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
        instances.GROUP, instances.VERSION, ns, instances.PLURAL, instances.name_of(n),
        {"status": {"phase": instances.LAUNCHED, "attempts": 1, "endpoint":
                    f"{address(n)}:{PORT}", "launchedAt": time.time()}},
        _content_type="application/merge-patch+json") for n in numbers))


def failover(url: str, state: str) -> str:
    result = CliRunner().invoke(nlb_app, ["failover", state, "--url", url])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


async def test_the_record_follows_the_checks_az_failover_and_the_manual_step(
        tmp_path: Path, cluster: Cluster, api: client.ApiClient, namespace: str,
        dns_store: etcd_store.EtcdRecordStore) -> None:
    name = f"nlb-{uuid.uuid4().hex[:6]}.us-east-1.{cluster.cfg.dns.zone}"
    out = tmp_path / "nlb.jsonl"
    port = free_port()
    options = nlbctl.Options(params=PARAMS, name=name, namespace=namespace, ttl=1,
                             check_timeout=0.5, out=out, tick=0.1, record_every=0.5,
                             http_port=port, http_host="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    stop = asyncio.Event()
    ready: asyncio.Future[nlbctl.Runner] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(nlbctl.run(options, dns_store, api, stop,
                                          started=ready.set_result))
    try:
        runner = await asyncio.wait_for(ready, 10)
        async with listeners() as serve:
            # 1. 1b and 1c launch; 1, 2, 4, 5 serve, 3 does not (no connectivity yet).
            for n in (1, 2, 4, 5):
                await serve(n)
            await launch(api, namespace, 1, 2, 3, 4, 5)
            # Not queried before: a negative answer would stay in CoreDNS's cache for seconds.
            await until(lambda: len(runner.written or {}) == 5, "five addresses written", 10.0)
            assert await answer(cluster, name) == sorted(address(n) for n in (1, 2, 3, 4, 5))
            launched = time.monotonic()
            await until_answer(cluster, name, [1, 2, 4, 5],
                               "the unreachable target out after its checks")
            print(f"the unreachable target left DNS {time.monotonic() - launched:.2f} s after "
                  "its five addresses were written")
            target = runner.core.targets[instances.name_of(3)]
            assert not target.healthy
            assert target.checks >= PARAMS.unhealthy_threshold
            assert runner.checks["refused"] >= PARAMS.unhealthy_threshold

            # 2. 1a launches 4, one serving: 3 of 4 unhealthy fails the AZ over; its serving
            # target leaves DNS with the others.
            await serve(6)
            await launch(api, namespace, 6, 7, 8, 9)
            await until(lambda: runner.core.failed_over == {"us-east-1a"}, "1a failed over")
            await until_answer(cluster, name, [1, 2, 4, 5], "1a out of DNS, 6 included")
            assert runner.core.targets[instances.name_of(6)].healthy
            assert runner.core.removed_healthy >= 1

            # The figures line is written every 0.5 s: wait for one that saw the failover
            # before the manual step ends it (it can last less than a line's period).
            def recorded() -> bool:
                rows = [json.loads(line) for line in out.read_text().splitlines() if line]
                return any(b["az"] == "us-east-1a" and b["failed_over"] and b["healthy"] >= 1
                           for b in rows)

            await until(recorded, "a figures line with 1a failed over")

            # 3. The manual step: automatic failover off, 1a's healthy target back.
            said = await asyncio.to_thread(failover, url, "off")
            assert "failover off (was on); back in DNS: us-east-1a" in said, said
            await until_answer(cluster, name, [1, 2, 4, 5, 6], "1a's healthy target back")

            # 4. Two of 1a's instances start serving (their network state arrived): back in
            # DNS after the healthy threshold; failover on again leaves 1a in (1 of 4 down).
            await serve(7)
            await serve(8)
            await until_answer(cluster, name, [1, 2, 4, 5, 6, 7, 8], "7 and 8 back")
            said = await asyncio.to_thread(failover, url, "on")
            assert "failover on (was off)" in said, said
            assert runner.core.failed_over == set()
            await asyncio.sleep(0.5)
            assert await answer(cluster, name) == sorted(address(n) for n in (1, 2, 4, 5, 6,
                                                                              7, 8))

            # 5. A deleted Instance leaves DNS.
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                instances.GROUP, instances.VERSION, namespace, instances.PLURAL,
                instances.name_of(1))
            await until_answer(cluster, name, [2, 4, 5, 6, 7, 8], "the deleted one out")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await dns_store.delete_prefix(records.record_prefix(name))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(b["az"] == "us-east-1a" and b["failed_over"] and b["healthy"] >= 1
               for b in lines)  # failed over with a healthy target
    total = [b for b in lines if b["az"] == "all"][-1]
    assert total["failovers"] == 1
    assert total["removed"] >= 1
    assert total["flips"] >= 6  # 3 and 7, 8, 9 unhealthy; 7 and 8 healthy again
    assert total["write_failures"] == 0
