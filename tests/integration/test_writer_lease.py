"""The single-writer Lease on the real API server: exclusive, released, and lost on expiry."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client

from dnsrace.kube import leases


async def test_lease_is_exclusive_and_released(api: client.ApiClient, namespace: str) -> None:
    a = leases.KubeWriterLease(api, namespace, duration=10)
    b = leases.KubeWriterLease(api, namespace, duration=10)
    assert await a.acquire("enactor-a") is None
    assert await b.acquire("enactor-b") == "enactor-a"
    assert await a.acquire("enactor-a") is None, "the holder renews"
    await a.release("enactor-a")
    assert await b.acquire("enactor-b") is None
    await b.release("enactor-b")


async def test_a_holder_that_stops_renewing_loses_the_lease(
    api: client.ApiClient, namespace: str
) -> None:
    stalled = asyncio.Event()

    async def renewal_stalls(step: str, endpoint: str | None) -> None:
        if step == "lease-renewal":
            stalled.set()
            await asyncio.sleep(60)  # a lease-renewal delay fault

    a = leases.KubeWriterLease(api, namespace, duration=2, hook=renewal_stalls)
    b = leases.KubeWriterLease(api, namespace, duration=2)
    assert await a.acquire("enactor-a") is None
    assert await b.acquire("enactor-b") == "enactor-a"
    await asyncio.wait_for(stalled.wait(), 5)
    await asyncio.sleep(2.5)
    assert await b.acquire("enactor-b") is None
    await a.release("enactor-a")  # must not take it back from b
    lease = await client.CoordinationV1Api(api).read_namespaced_lease(leases.NAME, namespace)
    assert lease.spec.holder_identity == "enactor-b"
    await b.release("enactor-b")
