"""The Network Manager and the instance hosts against the real API server, run in-process.

The test plays the launcher: it creates Instances and patches their status to ``Launched``
(endpoint, ``launchedAt``, the ``Launched`` condition) as the launcher would. The Network
Manager must mark each ``networkReady`` in launch order, one every ``1 / rate`` s, merging its
``NetworkReady`` condition next to the launcher's; the instance hosts must refuse connections
on an endpoint until its Instance is network-ready and answer after; a restarted Network
Manager must queue what launched while it was down in ``launchedAt`` order; ``POST /admit``
must count a launch it admitted until the watch hands it over. Ports 18460-18469 and addresses
127.0.28.x are this test's."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from dnsrace.components import instancehost, netmanager
from dnsrace.core import instances, launching, propagation

PORT = 18460
"""Every instance of this test serves on 127.0.28.<n>:PORT."""
HTTP_PORT = 18461
RATE = 2.0


def endpoint(n: int) -> str:
    return f"127.0.28.{n}:{PORT}"


async def create(api: client.ApiClient, namespace: str, n: int) -> None:
    """Create Instance ``n`` (no status yet), as the launcher does on a request's first
    attempt."""
    az = launching.AZS[(n - 1) % 3]
    await client.CustomObjectsApi(api).create_namespaced_custom_object(
        instances.GROUP, instances.VERSION, namespace, instances.PLURAL, instances.body(n, az))


async def mark_launched(api: client.ApiClient, namespace: str, n: int, t: float) -> None:
    """Instance ``n``'s status as the launcher writes it at the launch, at ``t``."""
    co = client.CustomObjectsApi(api)
    status = {"phase": "Launched", "attempts": 1, "reason": "", "droplet": f"droplet-{n:03d}",
              "endpoint": endpoint(n), "launchedAt": round(t, 3),
              "conditions": [instances.condition(instances.CONDITION_LAUNCHED, True,
                                                 "Launched", "launched by the test", t)]}
    await co.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
        instances.GROUP, instances.VERSION, namespace, instances.PLURAL, instances.name_of(n),
        {"status": status}, _content_type="application/merge-patch+json")


async def launch(api: client.ApiClient, namespace: str, n: int, t: float) -> None:
    await create(api, namespace, n)
    await mark_launched(api, namespace, n, t)


async def read(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        instances.GROUP, instances.VERSION, namespace, instances.PLURAL)
    return {i["metadata"]["name"]: i for i in listed["items"]}


def ready(body: dict[str, Any]) -> bool:
    return bool(body.get("status", {}).get("networkReady"))


async def health(n: int) -> str | None:
    """The instance's answer to GET /healthz, None when the connection is refused."""
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(f"http://{endpoint(n)}/healthz") as resp:
            return f"{resp.status} {await resp.text()}"
    except (aiohttp.ClientConnectorError, TimeoutError):
        # refused, or accepted by a listener being closed that never answers: no answer
        return None


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


class Components:
    """The Network Manager and the instance hosts as tasks of the test's own loop."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        self.manager: netmanager.Runner | None = None

    def network_manager(self, options: netmanager.Options) -> None:
        def started(runner: netmanager.Runner) -> None:
            self.manager = runner

        self.tasks.append(asyncio.create_task(netmanager.run(
            options, self.api, self.namespace, self.stop, started=started)))

    def hosts(self) -> None:
        self.tasks.append(asyncio.create_task(instancehost.run(
            self.api, self.namespace, self.stop, http_port=None)))

    async def close(self) -> None:
        self.stop.set()
        done = await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 20)
        errors = [d for d in done if isinstance(d, BaseException)]
        assert errors == [], errors


@pytest.fixture
async def lab(api: client.ApiClient, namespace: str) -> AsyncIterator[Components]:
    components = Components(api, namespace)
    try:
        yield components
    finally:
        await components.close()


async def test_instances_become_network_ready_in_launch_order_and_serve_after(
        api: client.ApiClient, namespace: str, lab: Components, tmp_path: Path) -> None:
    out = tmp_path / "netmanager.jsonl"
    lab.network_manager(netmanager.Options(params=propagation.PropagationParams(rate=RATE),
                                           out=out))
    lab.hosts()
    await asyncio.sleep(1.0)  # both have listed the (empty) namespace and watch it
    count = 6
    for n in range(1, count + 1):
        await create(api, namespace, n)
    launched = time.time()
    for n in range(1, count + 1):  # each before the one ahead of it has gone through
        await mark_launched(api, namespace, n, time.time())
    # the last waits about count / RATE s: nothing listens on its endpoint yet
    assert await health(count) is None

    async def all_ready() -> bool:
        # an endpoint that answers must belong to a network-ready Instance: probe, then read
        answers = {n: await health(n) for n in range(1, count + 1)}
        found = await read(api, namespace)
        for n, answer in answers.items():
            if answer is not None:
                assert ready(found[instances.name_of(n)]), f"i-{n:06d} answered before ready"
        return all(ready(b) for b in found.values())

    await until(all_ready, count / RATE + 15, "every Instance networkReady")
    found = await read(api, namespace)
    names = [instances.name_of(n) for n in range(1, count + 1)]
    at = [found[name]["status"]["networkReadyAt"] for name in names]
    assert at == sorted(at), f"not in launch order: {at}"
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert gaps == pytest.approx([1 / RATE] * (count - 1), abs=0.01), gaps
    assert at[-1] - launched >= count / RATE - 0.1
    for name in names:
        status = found[name]["status"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert set(conditions) == {"Launched", "NetworkReady"}
        assert conditions["Launched"]["message"] == "launched by the test"
        assert conditions["NetworkReady"]["status"] == "True"
        assert conditions["NetworkReady"]["reason"] == "Propagated"
        assert status["phase"] == "Launched"
        assert status["endpoint"].endswith(f":{PORT}")

    async def serving() -> bool:
        return all([await health(n) == f"200 ok i-{n:06d}" for n in range(1, count + 1)])

    await until(serving, 5, "every ready instance answering its health check")
    events = (await client.CoreV1Api(api).list_namespaced_event(namespace)).items
    network = [e for e in events if e.reason == "NetworkReady"]
    assert network, "no NetworkReady Event"
    assert all(e.type == "Normal" and e.involved_object.kind == "Instance" for e in network)

    # deleted: its listener closes, the others keep serving
    await client.CustomObjectsApi(api).delete_namespaced_custom_object(
        instances.GROUP, instances.VERSION, namespace, instances.PLURAL, names[0])

    async def closed() -> bool:
        return await health(1) is None

    await until(closed, 5, "the deleted instance's listener closed")
    assert await health(2) == "200 ok i-000002"
    await lab.close()
    assert await health(2) is None, "a listener left open after the hosts stopped"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[-1]["propagated"] == count
    assert lines[-1]["backlog"] == 0
    assert lines[-1]["throttle"] is False
    assert max(line["backlog"] for line in lines) >= 1


async def test_a_restarted_network_manager_queues_what_launched_meanwhile_in_launch_order(
        api: client.ApiClient, namespace: str, lab: Components) -> None:
    now = time.time()
    ages = {1: 1.0, 2: 4.0, 3: 2.0, 4: 3.0}  # launched that long ago: in order 2, 4, 3, 1
    for n, age in ages.items():
        await launch(api, namespace, n, now - age)
    lab.network_manager(netmanager.Options(params=propagation.PropagationParams(rate=RATE),
                                           out=None))

    async def all_ready() -> bool:
        return all(ready(b) for b in (await read(api, namespace)).values())

    await until(all_ready, len(ages) / RATE + 15, "every Instance networkReady")
    found = await read(api, namespace)
    order = sorted(found, key=lambda name: found[name]["status"]["networkReadyAt"])
    assert order == ["i-000002", "i-000004", "i-000003", "i-000001"]
    for name, body in found.items():
        status = body["status"]
        waited = status["networkReadyAt"] - status["launchedAt"]
        assert waited >= ages[int(name[2:])]  # waiting since its launch, not since the list


async def test_admit_counts_a_launch_until_the_watch_hands_it_over(
        api: client.ApiClient, namespace: str, lab: Components) -> None:
    lab.network_manager(netmanager.Options(
        params=propagation.PropagationParams(rate=0.5),
        throttle=propagation.PropagationThrottle(max_backlog=2), out=None,
        http_port=HTTP_PORT, http_host="127.0.0.1"))
    url = f"http://127.0.0.1:{HTTP_PORT}/admit"
    async with aiohttp.ClientSession() as session:

        async def admit() -> dict[str, Any]:
            async with session.post(url) as resp:
                assert resp.status == 200
                body: dict[str, Any] = await resp.json()
                return body

        async def up() -> bool:
            try:
                async with session.get(f"http://127.0.0.1:{HTTP_PORT}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectorError:
                return False

        await until(up, 10, "the Network Manager serving")
        await asyncio.sleep(1.0)  # its watch is up
        assert await admit() == {"admitted": True, "backlog": 0, "reserved": 1}
        assert await admit() == {"admitted": True, "backlog": 0, "reserved": 2}
        assert (await admit())["admitted"] is False
        await launch(api, namespace, 1, time.time())  # the first admitted launch

        async def handed_over() -> bool:
            return lab.manager is not None and lab.manager.core.reserved == 1

        await until(handed_over, 5, "the watch's enqueue taking one reservation")
        refused = await admit()  # one queued, one still reserved: at the limit
        assert (refused["admitted"], refused["backlog"], refused["reserved"]) == (False, 1, 1)

        async def propagated() -> bool:
            return ready((await read(api, namespace))["i-000001"])

        await until(propagated, 10, "i-000001 networkReady (2 s at 0.5/s)")
        again = await admit()
        assert (again["admitted"], again["backlog"], again["reserved"]) == (True, 0, 2)
