"""``dnsrace instances``' listeners on real sockets, without an API server: the test hands
``Listeners`` the Instance bodies a watch would. A ready instance answers on its own loopback
address (Linux routes all of 127/8 to lo); an unready one refuses connections; a deleted one's
listener closes; a bind that finds the address in use is retried. Ports 18450-18459 and
addresses 127.0.29.x are this test's."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import prometheus_client
import pytest
from kubernetes_asyncio import client

from dnsrace.components import instancehost, instancewatch
from dnsrace.core import instances

PORT = 18450


def instance(n: int, *, ready: bool, host: str | None = None, port: int = PORT,
             uid: str | None = None) -> dict[str, Any]:
    body = instances.body(n, "us-east-1b")
    body["metadata"]["uid"] = uid or f"uid-{n}"
    body["status"] = {"phase": "Launched", "endpoint": f"{host or f'127.0.29.{n}'}:{port}",
                      "launchedAt": 1000.0}
    if ready:
        body["status"].update(networkReady=True, networkReadyAt=1001.0)
    return body


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def refused(url: str) -> bool:
    try:
        await get(url)
    except aiohttp.ClientConnectorError:
        return True
    return False


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_ready_instance_listens_on_its_address_an_unready_one_does_not() -> None:
    listeners = instancehost.Listeners()
    health = sample("dnsrace_instance_requests_total", path="/healthz")
    try:
        await listeners.on_event("ADDED", instance(1, ready=False))
        await listeners.on_event("ADDED", instance(2, ready=True))
        assert listeners.serving == {"i-000002"}
        assert sample("dnsrace_instances_serving") == 1
        assert await refused(f"http://127.0.29.1:{PORT}/healthz")
        assert await get(f"http://127.0.29.2:{PORT}/healthz") == (200, "ok i-000002")
        status, text = await get(f"http://127.0.29.2:{PORT}/")
        assert status == 200
        assert "i-000002" in text
        assert "us-east-1b" in text
        assert (await get(f"http://127.0.29.2:{PORT}/nothing"))[0] == 404
        assert sample("dnsrace_instance_requests_total", path="/healthz") - health == 1
        # the other one's network propagates: it answers too, on its own address
        await listeners.on_event("MODIFIED", instance(1, ready=True))
        assert await get(f"http://127.0.29.1:{PORT}/healthz") == (200, "ok i-000001")
        assert sample("dnsrace_instances_serving") == 2
        # deleted: its listener closes, the other one stays
        await listeners.on_event("DELETED", instance(2, ready=True))
        assert await refused(f"http://127.0.29.2:{PORT}/healthz")
        assert await get(f"http://127.0.29.1:{PORT}/healthz") == (200, "ok i-000001")
        assert listeners.serving == {"i-000001"}
    finally:
        await listeners.close()
    assert await refused(f"http://127.0.29.1:{PORT}/healthz")
    assert sample("dnsrace_instances_serving") == 0


async def test_a_relist_closes_the_listeners_of_instances_gone_meanwhile() -> None:
    listeners = instancehost.Listeners()
    try:
        await listeners.on_list([instance(3, ready=True), instance(4, ready=True)])
        assert listeners.serving == {"i-000003", "i-000004"}
        await listeners.on_list([instance(4, ready=True), instance(5, ready=False)])
        assert listeners.serving == {"i-000004"}
        assert await refused(f"http://127.0.29.3:{PORT}/healthz")
        # recreated under the same name (a new uid): its listener is a new one
        await listeners.on_instance(instance(4, ready=True, uid="uid-4-again"))
        assert listeners.listeners["i-000004"].uid == "uid-4-again"
        assert await get(f"http://127.0.29.4:{PORT}/healthz") == (200, "ok i-000004")
    finally:
        await listeners.close()


async def test_a_bind_that_fails_is_retried_until_the_address_is_free(
        caplog: pytest.LogCaptureFixture) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.29.6", PORT + 1))
    squatter.listen()
    listeners = instancehost.Listeners(retry=0.1)
    try:
        await listeners.on_instance(instance(6, ready=True, port=PORT + 1))
        assert listeners.serving == set()
        await asyncio.sleep(0.35)  # three more attempts, still in use: one log line in all
        assert listeners.listeners["i-000006"].failures >= 3
        assert len([r for r in caplog.records if "cannot listen" in r.message]) == 1
        squatter.close()
        for _ in range(50):
            if listeners.serving:
                break
            await asyncio.sleep(0.05)
        assert listeners.serving == {"i-000006"}
        assert await get(f"http://127.0.29.6:{PORT + 1}/healthz") == (200, "ok i-000006")
    finally:
        squatter.close()
        await listeners.close()


async def test_bind_all_listens_on_every_address_at_the_endpoints_port() -> None:
    listeners = instancehost.Listeners(bind_all=True)
    try:
        await listeners.on_instance(instance(7, ready=True, host="instances.dnsrace.svc",
                                             port=PORT + 2))
        assert await get(f"http://127.0.0.1:{PORT + 2}/healthz") == (200, "ok i-000007")
        assert await get(f"http://127.0.29.99:{PORT + 2}/healthz") == (200, "ok i-000007")
    finally:
        await listeners.close()


async def test_no_endpoint_or_no_launch_means_no_listener() -> None:
    listeners = instancehost.Listeners()
    body = instance(8, ready=True)
    body["status"]["endpoint"] = "not-an-endpoint"
    pending = instance(9, ready=True)
    pending["status"]["phase"] = "Pending"
    await listeners.on_instance(body)
    await listeners.on_instance(pending)
    assert listeners.listeners == {}


async def test_run_closes_every_listener_on_stop_with_the_api_server_down() -> None:
    """Nothing answers on the API server's port: the watch retries quietly; a listener opened
    meanwhile (as a ready Instance would) closes when the component stops."""
    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{PORT + 5}"  # nothing listens there
    api = client.ApiClient(configuration=cfg)
    stop = asyncio.Event()
    got: list[instancehost.Listeners] = []
    task = asyncio.create_task(instancehost.run(api, "dnsrace-test", stop, http_port=None,
                                                started=got.append))
    try:
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.01)
        await got[0].on_instance(instance(10, ready=True))
        assert await get(f"http://127.0.29.10:{PORT}/healthz") == (200, "ok i-000010")
        await asyncio.sleep(0.3)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await api.close()
    assert await refused(f"http://127.0.29.10:{PORT}/healthz")
    assert got[0].listeners == {}


def test_the_endpoint_is_read_as_host_and_port() -> None:
    def endpoint(text: object) -> tuple[str, int] | None:
        return instancewatch.endpoint_of({"status": {"endpoint": text}})

    assert endpoint("127.0.20.7:8080") == ("127.0.20.7", 8080)
    assert endpoint("instances.dnsrace.svc:20042") == ("instances.dnsrace.svc", 20042)
    assert endpoint("[::1]:8080") == ("::1", 8080)
    for bad in ("127.0.20.7", ":8080", "host:0", "host:70000", "host:http", 8080, None):
        assert endpoint(bad) is None, bad
    assert instancewatch.endpoint_of({}) is None
