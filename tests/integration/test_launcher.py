"""``dnsrace launcher`` against the real API server, and the Instance CRD's own verdicts.

The CRD: a bad AZ, a request number below 1, a missing field and any change of the spec are
refused by the API server with a message naming the field; nothing is stored.

The launcher: the real DWFM runner (``components.dwfm.run``, its leases in a
``MemoryLeaseStore`` whose outage is a window of real time, serving ``GET /leases`` on a port of
this test's own) gives the lease view; the launcher (``components.launcher.run``) creates an
Instance per request, in order, writes its status and Events, and its figures. Nothing launches
before DWFM answers; while every lease has run out, attempts fail ``InsufficientCapacity``
(Warning Events, the Instance Pending with that reason); once leases are back they launch on
a droplet of their AZ, on the endpoint ``core.instances`` gives. A second run numbers on after
the first's Instances, and deletes its own at the end of their lifetime (``--lifetime``).
Ports 18485-18489 are this test's. Not run by the helpers: the lead runs
it on the local plane.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from dnsrace.components import dwfm, launcher
from dnsrace.core import dwfm as core_dwfm
from dnsrace.core import instances, launching
from tests.conftest import Cluster

DWFM_PORT = 18485
LAUNCHER_PORT = 18486
FLEET = core_dwfm.DwfmParams(droplets=30, check_interval=1.0, lease_ttl=3.0, workers=4,
                             service_time=0.1, deadline=3.0)
"""30 droplets, leases of 3 s renewed every second; the queue re-establishes 40 a second, so
the fleet recovers within a second or two of the store's return (no collapse)."""


def _g() -> tuple[str, str, str]:
    return instances.GROUP, instances.VERSION, instances.PLURAL


async def _create(api: client.ApiClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    made: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        instances.GROUP, instances.VERSION, ns, instances.PLURAL, body)
    return made


async def _names(api: client.ApiClient, ns: str) -> set[str]:
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(*_g()[:2], ns,
                                                                              _g()[2])
    return {i["metadata"]["name"] for i in listed["items"]}


def _bad(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": instances.API_VERSION, "kind": instances.KIND,
            "metadata": {"name": f"i-bad-{uuid.uuid4().hex[:8]}"}, "spec": spec}


BAD = {
    "unknown az": ({"az": "us-west-2a", "request": 1}, "spec.az", "Unsupported value"),
    "request 0": ({"az": "us-east-1a", "request": 0}, "spec.request",
                  "greater than or equal to 1"),
    "no request": ({"az": "us-east-1a"}, "spec.request", "Required value"),
    "no az": ({"request": 3}, "spec.az", "Required value"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_bad_instance_is_refused(api: client.ApiClient, namespace: str,
                                         case: str) -> None:
    spec, field, message = BAD[case]
    body = _bad(spec)
    with pytest.raises(client.ApiException) as err:
        await _create(api, namespace, body)
    assert err.value.status == 422
    text = json.loads(err.value.body)["message"]
    assert field in text, text
    assert message in text, text
    assert body["metadata"]["name"] not in await _names(api, namespace)


async def test_the_spec_never_changes_and_the_status_is_its_own(api: client.ApiClient,
                                                                namespace: str) -> None:
    co = client.CustomObjectsApi(api)
    made = await _create(api, namespace, instances.body(7, "us-east-1b"))
    assert made["metadata"]["labels"] == {instances.AZ_LABEL: "us-east-1b"}
    for change in ({"az": "us-east-1c"}, {"request": 8}):
        with pytest.raises(client.ApiException) as err:
            await co.patch_namespaced_custom_object(  # type: ignore[call-arg]
                *_g()[:2], namespace, _g()[2], "i-000007", {"spec": change},
                _content_type="application/merge-patch+json")
        assert err.value.status == 422
        text = json.loads(err.value.body)["message"]
        assert "spec is immutable" in text, text
    # A status outside the schema is refused on the status subresource too.
    with pytest.raises(client.ApiException) as err:
        await co.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
            *_g()[:2], namespace, _g()[2], "i-000007", {"status": {"phase": "Running"}},
            _content_type="application/merge-patch+json")
    assert err.value.status == 422
    assert "status.phase" in json.loads(err.value.body)["message"]
    # Writing status leaves the spec alone, and the printer columns read it.
    await co.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
        *_g()[:2], namespace, _g()[2], "i-000007",
        {"status": {"phase": "Pending", "attempts": 1, "reason": "InsufficientCapacity"}},
        _content_type="application/merge-patch+json")
    got = await co.get_namespaced_custom_object(*_g()[:2], namespace, _g()[2], "i-000007")
    assert got["spec"] == {"az": "us-east-1b", "request": 7}
    assert got["status"]["reason"] == "InsufficientCapacity"


def _lines(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


async def _all(api: client.ApiClient, ns: str) -> dict[str, dict[str, Any]]:
    listed = await client.CustomObjectsApi(api).list_namespaced_custom_object(*_g()[:2], ns,
                                                                              _g()[2])
    return {i["metadata"]["name"]: i for i in listed["items"]}


async def _wait(what: str, test: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await test():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


async def test_the_launcher_turns_dwfm_leases_into_instances(
        api: client.ApiClient, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    out = tmp_path / "launcher.jsonl"
    options = launcher.Options(
        params=launching.LauncherParams(rate=2.0, slots=4, retry_after=2.0),
        namespace=namespace, dwfm_url=f"http://127.0.0.1:{DWFM_PORT}", out=out, tick=0.05,
        record_every=0.5, http_port=LAUNCHER_PORT, http_host="127.0.0.1")
    stop_launcher = asyncio.Event()
    launcher_task = asyncio.create_task(launcher.run(options, cluster.kubeconfig,
                                                     stop_launcher))
    stop_dwfm = asyncio.Event()
    dwfm_task: asyncio.Task[dwfm.Runner] | None = None
    try:
        # No DWFM yet: no placement, so nothing is launched or even tried.
        await asyncio.sleep(2.0)
        assert await _names(api, namespace) == set()
        assert not launcher_task.done()
        # DWFM with its fleet provisioned; its store goes away from 6 s to 14 s from now.
        t0 = time.time()
        store = core_dwfm.MemoryLeaseStore([(t0 + 6.0, t0 + 14.0)])
        dwfm_task = asyncio.create_task(dwfm.run(
            dwfm.Options(params=FLEET, out=None, tick=0.02, http_port=DWFM_PORT,
                         http_host="127.0.0.1"), store, stop_dwfm))

        async def some_launched() -> bool:
            found = await _all(api, namespace)
            return any((i.get("status") or {}).get("phase") == "Launched"
                       for i in found.values())

        await _wait("a first Instance launched", some_launched, 10.0)
        await asyncio.sleep(max(0.0, t0 + 22.0 - time.time()))  # past the outage, and 8 s on
    finally:
        stop_launcher.set()
        runner = await asyncio.wait_for(launcher_task, 30)
        stop_dwfm.set()
        if dwfm_task is not None:
            await asyncio.wait_for(dwfm_task, 30)

    found = await _all(api, namespace)
    assert runner.writer is not None
    assert not runner.writer.queue  # every attempt written on the way out
    numbers = sorted(i["spec"]["request"] for i in found.values())
    assert numbers == list(range(1, len(numbers) + 1))  # one per request, in order
    assert len(numbers) >= 30  # 2 requests a second for about 20 s
    placement = launching.spread(core_dwfm.droplet_names(FLEET.droplets))
    failed_then_launched = 0
    for name, inst in found.items():
        spec, status = inst["spec"], inst.get("status") or {}
        assert name == instances.name_of(spec["request"])
        assert spec["az"] == launching.AZS[(spec["request"] - 1) % 3]
        assert inst["metadata"]["labels"][instances.AZ_LABEL] == spec["az"]
        assert status.get("phase") in ("Pending", "Launched"), (name, status)
        (cond,) = status["conditions"]
        assert cond["type"] == "Launched"
        if status["phase"] == "Launched":
            assert placement[status["droplet"]] == spec["az"]
            assert status["endpoint"] == instances.endpoint_for(spec["request"])
            assert cond["status"] == "True"
            assert status["launchedAt"] > t0
            if status.get("reason") == launching.INSUFFICIENT_CAPACITY:
                failed_then_launched += 1
                assert status["attempts"] >= 2
        else:
            assert status["reason"] == launching.INSUFFICIENT_CAPACITY
            assert cond["status"] == "False"
    # The outage's requests failed while every lease was gone, and launched once they were back.
    assert failed_then_launched >= 3, found
    events = await client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={instances.KIND}")
    reasons = [(e.type, e.reason) for e in events.items]
    assert ("Warning", launching.INSUFFICIENT_CAPACITY) in reasons
    launched = sum(1 for i in found.values() if i["status"]["phase"] == "Launched")
    assert reasons.count(("Normal", "Launched")) == launched
    # The figures: one line per outcome and one pending line a period, the last on the way out.
    lines = _lines(out)
    outcomes = {line["outcome"] for line in lines}
    assert outcomes == {"Launched", "InsufficientCapacity", "RequestLimitExceeded", "GaveUp",
                        "pending"}
    assert sum(line["count"] for line in lines if line["outcome"] == "Launched") == launched
    assert max(line["count"] for line in lines if line["outcome"] == "pending") >= 3
    assert sum(line["count"] for line in lines
               if line["outcome"] == "RequestLimitExceeded") == 0  # no gate: no throttle

    # A second run numbers on after the first's Instances (DWFM back, answering at once).
    before = max(numbers)
    stop_dwfm = asyncio.Event()
    dwfm_task = asyncio.create_task(dwfm.run(
        dwfm.Options(params=FLEET, out=None, tick=0.02, http_port=DWFM_PORT,
                     http_host="127.0.0.1"), core_dwfm.MemoryLeaseStore(), stop_dwfm))
    stop_launcher = asyncio.Event()
    launcher_task = asyncio.create_task(launcher.run(
        launcher.Options(params=launching.LauncherParams(rate=2.0, lifetime=2.0),
                         namespace=namespace,
                         dwfm_url=f"http://127.0.0.1:{DWFM_PORT}", out=None, tick=0.05),
        cluster.kubeconfig, stop_launcher))
    try:
        async def next_one() -> bool:
            return instances.name_of(before + 1) in await _names(api, namespace)

        await _wait(f"{instances.name_of(before + 1)} created", next_one, 15.0)
        # Its own instances end 2 s after their launch: their Instances are deleted.
        first = instances.name_of(before + 1)
        seen: dict[str, Any] = {}

        async def launched_then_gone() -> bool:
            found_now = await _all(api, namespace)
            if first in found_now:
                seen.update(found_now[first].get("status") or {})
                return False
            return seen.get("phase") == "Launched"

        await _wait(f"{first} launched, then deleted at the end of its lifetime",
                    launched_then_gone, 15.0)
        assert time.time() >= seen["launchedAt"] + 2.0
    finally:
        stop_launcher.set()
        await asyncio.wait_for(launcher_task, 30)
        stop_dwfm.set()
        await asyncio.wait_for(dwfm_task, 30)
    again = await _all(api, namespace)
    for name in found:  # the first run's Instances untouched by the second
        assert again[name]["spec"] == found[name]["spec"]
