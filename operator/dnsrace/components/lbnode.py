"""The DynamoDB service's load-balancer nodes in local mode, and how the planner finds them.

``dnsrace lbnode --name lbnode-<n>`` runs one node (``main``): an HTTP server on its own loopback
address (127.0.10.<n+1>) whose ``GET /health`` reports a capacity that drifts slowly and
deterministically with time, so the planner's consecutive plans differ, as the real Planner's
did with load-balancer health and capacity. The node registers itself the way Kubernetes does
for a Service's backends: a selectorless Service ``dynamodb-lb`` and one EndpointSlice per node,
deleted again on a clean shutdown (SIGTERM), so the planner reads the pool with an ordinary
EndpointSlice list/watch (``ready_nodes``) and the capacity with ``node_capacity``.

The slice is owned by nothing (no ownerReferences): its lifetime is the node process's, which
is also why it is recreated when it disappears under a running node.

With a backend (``FrontDoor``, ``ddb.lb_forward``) the node is also the DynamoDB service's front
door: every other request (the DynamoDB JSON API is ``POST /``) is forwarded to DynamoDB Local
through ``core.admission``: at most ``ddb.lb_capacity`` in flight, then a bounded queue with a
bounded wait, then throttled (HTTP 400 ``ThrottlingException`` as DynamoDB answers, or 503 as an
NLB does, ``ddb.lb_throttle_status``); never dropped. A backend that refuses or resets gives
502, one that does not answer in ``ddb.lb_upstream_timeout`` gives 504: clients class them as
connect and timeout, not as DNS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import prometheus_client
from aiohttp import web
from kubernetes_asyncio import client

from dnsrace import settings as settings_mod
from dnsrace.components import serving
from dnsrace.core import admission
from dnsrace.kube import client as kube_client
from dnsrace.localplane import dynamodb

log = logging.getLogger(__name__)

SERVICE = "dynamodb-lb"
"""The selectorless Service whose EndpointSlices list the LB nodes."""
PORT = 8080
PORT_NAME = "http"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "lbnode.dnsrace.io"
NODE_LABEL = "lbnode.dnsrace.io/name"
ADDRESS_PREFIX = "127.0.10."

CAPACITY_LOW = 20
CAPACITY_HIGH = 100
CAPACITY_PERIOD = 30.0
"""Seconds of node 0's capacity cycle; node i's is a little longer (see ``capacity_at``)."""

RESYNC_SECONDS = 10.0
"""How often a running node checks that its EndpointSlice still exists."""

CAPACITY = prometheus_client.Gauge(
    "dnsrace_lbnode_capacity", "Capacity the LB node reports on /health.", ["node"],
)
HEALTH_REQUESTS = prometheus_client.Counter(
    "dnsrace_lbnode_health_requests_total", "GET /health requests served.", ["node"],
)
DDB_REQUESTS = prometheus_client.Counter(
    "dnsrace_lbnode_ddb_requests_total",
    "DynamoDB API requests by what the node did: forwarded, throttled, backend_error, "
    "backend_timeout.", ["node", "result"],
)
IN_FLIGHT = prometheus_client.Gauge(
    "dnsrace_lbnode_ddb_in_flight", "DynamoDB requests being forwarded now.", ["node"],
)
WAITING = prometheus_client.Gauge(
    "dnsrace_lbnode_ddb_waiting", "DynamoDB requests waiting for a slot now.", ["node"],
)
ADMISSION_WAIT = prometheus_client.Histogram(
    "dnsrace_lbnode_ddb_admission_wait_seconds",
    "Time a DynamoDB request waited for a slot (admitted or throttled).", ["node"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

THROTTLE_TYPE = "com.amazonaws.dynamodb.v20120810#ThrottlingException"
AMZ_JSON = "application/x-amz-json-1.0"
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "content-length", "host",
})
"""Headers that belong to one connection, not to the request (RFC 9110 7.6.1), plus the
length and host the forwarding connection sets itself."""


def address_for(index: int) -> str:
    """Node ``index``'s loopback address: 0 -> 127.0.10.1 ... 253 -> 127.0.10.254."""
    if not 0 <= index <= 253:
        raise ValueError(f"LB node index must be in 0..253, got {index}")
    return f"{ADDRESS_PREFIX}{index + 1}"


def index_from_name(name: str) -> int:
    """``lbnode-3`` -> 3: the index is the name's trailing number."""
    match = re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?-(\d+)", name)
    if not match:
        raise ValueError(f"LB node name must end in -<index>, like lbnode-3; got {name!r}")
    return int(match.group(2))


def slice_name(node: str) -> str:
    return f"{SERVICE}-{node}"


def period_of(index: int) -> float:
    """Seconds of node ``index``'s capacity cycle: 30 s to 38 s."""
    return CAPACITY_PERIOD + 2.0 * (index % 5)


def capacity_at(index: int, t: float) -> int:
    """The capacity node ``index`` reports at unix time ``t``.

    A triangle wave between CAPACITY_LOW and CAPACITY_HIGH. Phases step by the golden ratio so
    any set of nodes is spread over the cycle, and periods differ a little (30-38 s) so the
    pool's mix keeps changing instead of repeating every cycle; every process computes the
    same value for the same node and time, so a restarted node continues where it was.
    """
    period = period_of(index)
    phase = (index * 0.6180339887) % 1.0
    x = (t / period + phase) % 1.0
    triangle = 1.0 - abs(2.0 * x - 1.0)
    return round(CAPACITY_LOW + (CAPACITY_HIGH - CAPACITY_LOW) * triangle)


def service_body(port: int = PORT) -> client.V1Service:
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(name=SERVICE,
                                     labels={"app.kubernetes.io/part-of": "dnsrace"}),
        # No selector: the endpoints are registered by the nodes themselves, as EndpointSlices.
        # The target port is by name: each slice says which port its node listens on.
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(
            name=PORT_NAME, port=port, target_port=PORT_NAME, protocol="TCP")]),
    )


def slice_body(node: str, address: str, port: int = PORT,
               resource_version: str | None = None) -> client.V1EndpointSlice:
    ip = ipaddress.ip_address(address)
    # The API server refuses loopback IPs in IPv4/IPv6 slices (endpoints must be routable from
    # other nodes), but the local lab's nodes live on 127.0.10.x, the addresses DNS must hand
    # out. FQDN slices take the address verbatim, so local nodes register as FQDN (deprecated
    # in Kubernetes, still served by the pinned release); in a cluster, pod IPs use IPv4/IPv6.
    family = "FQDN" if ip.is_loopback else "IPv6" if ip.version == 6 else "IPv4"
    return client.V1EndpointSlice(
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        metadata=client.V1ObjectMeta(
            name=slice_name(node),
            labels={SERVICE_NAME_LABEL: SERVICE, MANAGED_BY_LABEL: MANAGED_BY,
                    NODE_LABEL: node},
            resource_version=resource_version,
        ),
        address_type=family,
        endpoints=[client.V1Endpoint(
            addresses=[address],
            hostname=node,
            conditions=client.V1EndpointConditions(ready=True, serving=True,
                                                   terminating=False),
        )],
        ports=[client.DiscoveryV1EndpointPort(name=PORT_NAME, port=port, protocol="TCP")],
    )


async def ensure_service(api_client: client.ApiClient, namespace: str, port: int = PORT) -> None:
    """Create the ``dynamodb-lb`` Service unless it exists; every node calls it, first wins."""
    core = client.CoreV1Api(api_client)
    try:
        await core.read_namespaced_service(SERVICE, namespace)
        return
    except client.ApiException as exc:
        if kube_client.status_of(exc) != 404:
            raise
    try:
        await core.create_namespaced_service(namespace, service_body(port))
        log.info("created Service %s/%s", namespace, SERVICE)
    except client.ApiException as exc:
        if kube_client.status_of(exc) != 409:  # another node created it meanwhile
            raise


async def register(api_client: client.ApiClient, namespace: str, node: str, address: str,
                   port: int = PORT) -> None:
    """Create or replace the node's EndpointSlice."""
    discovery = client.DiscoveryV1Api(api_client)
    name = slice_name(node)
    for _ in range(5):
        try:
            await discovery.create_namespaced_endpoint_slice(
                namespace, slice_body(node, address, port))
            log.info("registered %s at %s:%d (EndpointSlice %s)", node, address, port, name)
            return
        except client.ApiException as exc:
            if kube_client.status_of(exc) != 409:
                raise
        # It exists (a previous run did not clean up): replace it at its current version.
        try:
            current = await discovery.read_namespaced_endpoint_slice(name, namespace)
            await discovery.replace_namespaced_endpoint_slice(
                name, namespace,
                slice_body(node, address, port, current.metadata.resource_version))
            log.info("re-registered %s at %s:%d (EndpointSlice %s replaced)",
                     node, address, port, name)
            return
        except client.ApiException as exc:
            # 404: deleted between the create and the read; 409: changed meanwhile. Retry.
            if kube_client.status_of(exc) not in (404, 409):
                raise
    raise RuntimeError(f"could not register EndpointSlice {name}: it kept changing")


async def deregister(api_client: client.ApiClient, namespace: str, node: str) -> bool:
    """Delete the node's EndpointSlice; False when it was already gone."""
    discovery = client.DiscoveryV1Api(api_client)
    try:
        await discovery.delete_namespaced_endpoint_slice(slice_name(node), namespace)
    except client.ApiException as exc:
        if kube_client.status_of(exc) == 404:
            return False
        raise
    log.info("deregistered %s (EndpointSlice %s deleted)", node, slice_name(node))
    return True


async def ready_nodes(api_client: client.ApiClient, namespace: str) -> list[tuple[str, str]]:
    """(node name, address) of every ready endpoint of the ``dynamodb-lb`` slices, sorted.

    Ready follows the EndpointSlice API: an unset ``ready`` counts as ready, and a terminating
    endpoint does not. Every address type is read (local nodes register as FQDN, see
    ``slice_body``); addresses that are not IPs are skipped. The node name is the endpoint's
    hostname, else the slice's node label, else the address (slices not written by a node).
    """
    discovery = client.DiscoveryV1Api(api_client)
    result = await discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"{SERVICE_NAME_LABEL}={SERVICE}")
    found: set[tuple[str, str]] = set()
    for item in result.items or []:
        labels = item.metadata.labels or {}
        for endpoint in item.endpoints or []:
            conditions = endpoint.conditions
            ready = conditions is None or conditions.ready is None or bool(conditions.ready)
            terminating = conditions is not None and bool(conditions.terminating)
            if not ready or terminating:
                continue
            for address in endpoint.addresses or []:
                try:
                    ip = ipaddress.ip_address(address)
                except ValueError:
                    continue  # a real host name (FQDN slice): not usable as a DNS A target
                name = endpoint.hostname or labels.get(NODE_LABEL) or str(ip)
                found.add((str(name), str(ip)))
    return sorted(found)


async def node_capacity(address: str, port: int = PORT, timeout: float = 1.0) -> int | None:
    """The capacity a node reports on ``GET /health``; None when it does not answer in time."""
    host = f"[{address}]" if ":" in address else address
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(f"http://{host}:{port}/health") as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
            return int(body["capacity"])
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
        log.debug("LB node %s:%d: no capacity (%r)", address, port, exc)
        return None


class BackendMissing(RuntimeError):
    """The configured backend did not answer at start-up; the message names the setting."""


class FrontDoor:
    """Forwards DynamoDB API requests to the backend under ``core.admission``'s limits.

    The admission decisions are the pure ``Admission``'s; this class only turns a WAIT into an
    awaited future that ``release`` completes (or the deadline ends), and does the HTTP.
    """

    def __init__(self, node: str, ddb: settings_mod.Ddb,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.backend_url = ddb.backend_url
        self.throttle_status = ddb.lb_throttle_status
        self.upstream_timeout = ddb.lb_upstream_timeout
        self.admission = admission.Admission(
            admission.Limits(capacity=ddb.lb_capacity, queue=ddb.lb_queue, wait=ddb.lb_wait))
        self.clock = clock
        self._granted: dict[int, asyncio.Future[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self, wait: float) -> None:
        """Open the backend session and wait up to ``wait`` s for the backend to answer."""
        deadline = time.monotonic() + wait
        while not await dynamodb.ping(self.backend_url, timeout=1.0):
            if time.monotonic() > deadline:
                raise BackendMissing(
                    f"LB node {self.node}: no DynamoDB backend answers at {self.backend_url} "
                    f"(ddb.backend_host/backend_port, DNSRACE_DDB_BACKEND) after {wait:.0f}s")
            await asyncio.sleep(0.2)
        connector = aiohttp.TCPConnector(limit=self.admission.limits.capacity)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _gauges(self) -> None:
        IN_FLIGHT.labels(self.node).set(self.admission.in_flight)
        WAITING.labels(self.node).set(self.admission.waiting)

    async def acquire(self) -> bool:
        """True with a slot held (the caller must ``release``), False when throttled."""
        started = self.clock()
        verdict, waiter = self.admission.try_acquire(started)
        if verdict is admission.Verdict.ADMIT or waiter is None:
            self._gauges()
            return verdict is admission.Verdict.ADMIT
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._granted[waiter.ticket] = granted
        self._gauges()
        try:
            await asyncio.wait_for(asyncio.shield(granted), max(0.0, waiter.deadline - started))
        except TimeoutError:
            pass
        except asyncio.CancelledError:  # the client went away while waiting
            self.admission.abandon(waiter)
            if granted.done():
                self.release()
            raise
        finally:
            del self._granted[waiter.ticket]
            ADMISSION_WAIT.labels(self.node).observe(self.clock() - started)
        # The slot may have been handed over just as the wait ran out: then it is ours.
        self.admission.abandon(waiter)
        self._gauges()
        return granted.done()

    def release(self) -> None:
        now = self.clock()
        while True:
            waiter = self.admission.release(now)
            if waiter is None:
                break
            granted = self._granted.get(waiter.ticket)
            if granted is not None and not granted.done():
                granted.set_result(None)
                break
            # Its coroutine already gave up (deadline or cancel): pass the slot on again.
        self._gauges()

    def _throttled(self) -> web.Response:
        DDB_REQUESTS.labels(self.node, "throttled").inc()
        if self.throttle_status == 503:  # an NLB's overload answer carries no DynamoDB body
            return web.Response(status=503, text="Service Unavailable")
        body = {"__type": THROTTLE_TYPE,
                "message": f"Rate of requests exceeds the capacity of LB node {self.node}"}
        return web.Response(status=400, body=json.dumps(body), content_type=AMZ_JSON)

    def _error(self, status: int, kind: str, message: str) -> web.Response:
        body = {"__type": f"com.dnsrace.lbnode#{kind}", "message": message}
        return web.Response(status=status, body=json.dumps(body), content_type=AMZ_JSON)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            raise RuntimeError("FrontDoor.start was not awaited")
        body = await request.read()
        if not await self.acquire():
            return self._throttled()
        try:
            headers = {k: v for k, v in request.headers.items()
                       if k.lower() not in HOP_BY_HOP}
            try:
                async with self._session.request(
                        request.method, self.backend_url + request.path_qs, data=body,
                        headers=headers) as upstream:
                    data = await upstream.read()
                    out = {k: v for k, v in upstream.headers.items()
                           if k.lower() not in HOP_BY_HOP}
                    DDB_REQUESTS.labels(self.node, "forwarded").inc()
                    return web.Response(status=upstream.status, body=data, headers=out)
            except TimeoutError:
                DDB_REQUESTS.labels(self.node, "backend_timeout").inc()
                return self._error(504, "BackendTimeout",
                                   f"{self.backend_url} did not answer in "
                                   f"{self.upstream_timeout}s")
            except aiohttp.ClientError as exc:
                DDB_REQUESTS.labels(self.node, "backend_error").inc()
                return self._error(502, "BackendUnreachable", f"{self.backend_url}: {exc!r}")
        finally:
            self.release()


def make_app(node: str, index: int, address: str,
             front: FrontDoor | None = None) -> web.Application:
    """``/health`` (the planner's view of the node) plus ``/healthz`` and ``/metrics``; with a
    ``front`` door every other path is the DynamoDB API, forwarded to the backend."""

    async def health(_: web.Request) -> web.Response:
        capacity = capacity_at(index, time.time())
        CAPACITY.labels(node).set(capacity)
        HEALTH_REQUESTS.labels(node).inc()
        return web.json_response({"name": node, "address": address, "capacity": capacity},
                                 dumps=json.dumps)

    app = serving.make_app()
    app.router.add_get("/health", health)
    if front is not None:
        app.router.add_route("*", "/{tail:.*}", front.handle)
    return app


async def run(name: str, index: int, kubeconfig: Path | None, namespace: str,
              stop: asyncio.Event, port: int = PORT, *, address: str | None = None,
              resync: float = RESYNC_SECONDS, register_slice: bool = True,
              ddb: settings_mod.Ddb | None = None) -> None:
    """Serve node ``name`` and keep it registered until ``stop`` is set, then deregister it.

    ``address`` overrides ``address_for(index)`` (in a pod, the pod's IP). The server listens
    before the slice is written, so the planner never sees a node that cannot answer yet.
    Without ``register_slice`` (in a pod, where the endpointslice controller lists ready pods
    and the node has no API token) it only serves. With ``ddb.lb_forward`` it also forwards the
    DynamoDB API, after the backend has answered (``BackendMissing`` if it does not within
    ``ddb.backend_start_timeout``).
    """
    address = address or address_for(index)
    front: FrontDoor | None = None
    if ddb is not None and ddb.lb_forward:
        front = FrontDoor(name, ddb)
        await front.start(ddb.backend_start_timeout)
    try:
        await _run(name, index, kubeconfig, namespace, stop, port, address, resync,
                   register_slice, front)
    finally:
        if front is not None:
            await front.close()


async def _run(name: str, index: int, kubeconfig: Path | None, namespace: str,
               stop: asyncio.Event, port: int, address: str, resync: float,
               register_slice: bool, front: FrontDoor | None) -> None:
    if not register_slice:
        server = await serving.serve(address, port, app=make_app(name, index, address, front))
        try:
            await stop.wait()
        finally:
            await server.cleanup()
        return
    api = await kube_client.api_client(kubeconfig)
    runner: web.AppRunner | None = None
    registered = False
    try:
        runner = await serving.serve(address, port, app=make_app(name, index, address, front))
        await ensure_service(api, namespace)
        await register(api, namespace, name, address, port)
        registered = True
        discovery = client.DiscoveryV1Api(api)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=resync)
            if stop.is_set():
                break
            # Someone (a test, an operator, a wiped API server) removed the slice under a live
            # node: put it back, as a kubelet would re-post its pod's status.
            try:
                await discovery.read_namespaced_endpoint_slice(slice_name(name), namespace)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # The API server restarting: the node keeps serving and checks again next
                # resync; its slice lives in etcd meanwhile.
                log.warning("checking EndpointSlice of %s: API server unreachable (%r); "
                            "retrying in %.0fs", name, exc, resync)
                continue
            except client.ApiException as exc:
                if kube_client.status_of(exc) != 404:
                    log.warning("checking EndpointSlice of %s: %s", name, exc)
                    continue
                log.warning("EndpointSlice of %s disappeared; registering again", name)
                await register(api, namespace, name, address, port)
    finally:
        try:
            if registered:
                await deregister(api, namespace, name)
        finally:
            if runner is not None:
                await runner.cleanup()
            await api.close()


async def _serve_until_signalled(name: str, kubeconfig: Path | None, namespace: str,
                                 port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(name, index_from_name(name), kubeconfig, namespace, stop, port)


def main(name: str, kubeconfig: Path | None, namespace: str, port: int = PORT) -> None:
    """Entry point of ``dnsrace lbnode --name lbnode-<n>``: run until SIGTERM or SIGINT."""
    asyncio.run(_serve_until_signalled(name, kubeconfig, namespace, port))
