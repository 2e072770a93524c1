"""``dnsrace ddb-client``: DynamoDB clients that reach the service only through the lab's DNS.

Who calls it: the CLI (``run``), the scenario lab (``run`` as a process, ``read_records`` on its
file), the bench (``bench_ddb``) and the integration tests (``run`` in-process). Why: the
incident's damage was clients that could not resolve ``dynamodb.us-east-1``; these clients
resolve the lab's regional name through CoreDNS for every new connection, so an empty record
reaches them exactly as it would reach an SDK, and every request says what happened to it.

Client library: aiobotocore (botocore's request signing, serialisation and error parsing over
aiohttp). Its AioConfig passes ``connector_args`` to aiohttp's TCPConnector, which takes our
``LabResolver`` (an aiohttp ``AbstractResolver`` asking CoreDNS with dnspython). aiohttp's own
DNS cache is off (its TTL is one fixed number, not the record's); ``core.ddb.ResolutionCache``
keeps each answer for its record's TTL, capped at ``ddb.max_ttl``. Each worker owns one client
with one connection (``max_pool_connections=1``) and recycles the client once the answer its
connection was opened with has expired (``core.ddb.connection_expired``), so no connection
outlives its TTL and an emptied record reaches every worker within one TTL. botocore's retries
are off (one attempt per request) so each request's outcome is its own.

Each request appends one JSON line to ``out`` (``Request``: see docs/dynamodb.md) and counts in
``dnsrace_ddb_client_requests_total{outcome}`` and the latency histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import aiobotocore.session
import dns.asyncquery
import dns.exception
import prometheus_client
from aiobotocore.config import AioConfig
from aiohttp.abc import AbstractResolver, ResolveResult
from botocore import exceptions as boto_exc

from dnsrace import settings as settings_mod
from dnsrace.components import ddbpath, serving
from dnsrace.core import ddb
from dnsrace.core.ddb import Outcome

log = logging.getLogger(__name__)

REQUESTS = prometheus_client.Counter(
    "dnsrace_ddb_client_requests_total", "DynamoDB requests by outcome.", ["outcome"],
)
LATENCY = prometheus_client.Histogram(
    "dnsrace_ddb_client_request_duration_seconds",
    "Time from sending a DynamoDB request to its outcome (DNS lookup included).", ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOOKUPS = prometheus_client.Counter(
    "dnsrace_ddb_client_dns_lookups_total",
    "Queries the clients' resolver sent to CoreDNS, by result (NOERROR or the failure).",
    ["result"],
)

REGION = "us-east-1"
PARTITION_KEY = "pk"


Request = ddb.Request
read_records = ddb.load_requests


class LabResolver(AbstractResolver):
    """Resolves names through the lab's CoreDNS for aiohttp, over a shared TTL cache.

    One per worker, so that ``opened_with`` is the answer that worker's connection used.
    """

    def __init__(self, server: str, port: int, cache: ddb.ResolutionCache, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self.port = port
        self.cache = cache
        self.timeout = timeout
        self.clock = clock
        self.opened_with: ddb.Resolved | None = None
        self.target: str | None = None

    async def lookup(self, host: str) -> ddb.Resolved:
        """The cached answer, or CoreDNS's; raises ``ddb.DnsFailure`` naming the failure."""
        now = self.clock()
        entry = self.cache.get(host, now)
        if entry is not None:
            return entry
        try:
            response = await dns.asyncquery.udp(ddbpath.query(host),
                                                ddbpath.server_address(self.server),
                                                timeout=self.timeout, port=self.port)
        except (dns.exception.Timeout, OSError) as exc:
            LOOKUPS.labels("TIMEOUT").inc()
            raise ddb.DnsFailure(host, "TIMEOUT") from exc
        try:
            addresses, ttl = ddbpath.answer(host, response, self.cache.max_ttl)
        except ddb.DnsFailure as exc:
            LOOKUPS.labels(exc.failure).inc()
            raise
        LOOKUPS.labels("NOERROR").inc()
        return self.cache.put(host, addresses, ttl, self.clock())

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        try:
            ipaddress.ip_address(host)
            addresses = [host]  # aiohttp skips resolvers for literals; kept for completeness
        except ValueError:
            entry = await self.lookup(host)
            self.opened_with = entry
            addresses = self.cache.order(entry)
        self.target = addresses[0]
        return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for a in addresses]

    async def close(self) -> None:
        return None


class Recorder:
    """Appends ``Request`` lines, flushing at most every half second (and on close)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._flushed = time.monotonic()

    def write(self, request: Request) -> None:
        self.out.write(json.dumps(dataclasses.asdict(request), separators=(",", ":")) + "\n")
        now = time.monotonic()
        if now - self._flushed >= 0.5:
            self.out.flush()
            self._flushed = now


@dataclasses.dataclass
class Shared:
    """What a client process's workers share: settings, the session, the cache, the record."""

    cfg: settings_mod.Settings
    session: aiobotocore.session.AioSession
    cache: ddb.ResolutionCache
    recorder: Recorder
    port: int
    clock: Callable[[], float] = time.monotonic

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.cfg.ddb.endpoint.rstrip('.')}:{self.port}"


def _config(cfg: settings_mod.Settings, resolver: LabResolver) -> AioConfig:
    d = cfg.ddb
    return AioConfig(
        connector_args={"resolver": resolver, "use_dns_cache": False,
                        # An idle connection is closed before its answer can expire.
                        "keepalive_timeout": d.max_ttl},
        max_pool_connections=1,
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=d.request_timeout, read_timeout=d.request_timeout,
    )


@contextlib.asynccontextmanager
async def _client(shared: Shared, resolver: LabResolver) -> Any:
    async with shared.session.create_client(
        "dynamodb", region_name=REGION, endpoint_url=shared.endpoint_url,
        aws_access_key_id="dnsrace", aws_secret_access_key="dnsrace",
        config=_config(shared.cfg, resolver),
    ) as client:
        yield client


async def call(client: Any, op: str, table: str, key: str, version: int) -> None:
    """One request of the mix: a GetItem, or a PutItem that only moves an item's version up
    (a lease-style conditional write; losing the race is ConditionalCheckFailed, an ok)."""
    if op == "read":
        await client.get_item(TableName=table, Key={PARTITION_KEY: {"S": key}},
                              ConsistentRead=True)
    else:
        await client.put_item(
            TableName=table,
            Item={PARTITION_KEY: {"S": key}, "version": {"N": str(version)},
                  "writer": {"S": f"dnsrace-{version % 1000}"}},
            ConditionExpression="attribute_not_exists(pk) OR version < :v",
            ExpressionAttributeValues={":v": {"N": str(version)}},
        )


async def ensure_table(shared: Shared, stop: asyncio.Event, ready: asyncio.Event,
                       interval: float = 1.0) -> None:
    """Create the table unless it exists, retrying through the front door until it is ACTIVE;
    then set ``ready``. The workers wait for it: a request sent while the table is still being
    created fails with ResourceNotFoundException, which would count against the clients'
    health before the fault."""
    table = shared.cfg.ddb.table
    resolver = LabResolver(shared.cfg.dns.server_host, shared.cfg.dns.server_port,
                           shared.cache, shared.cfg.ddb.request_timeout / 2, shared.clock)
    while not stop.is_set():
        try:
            async with _client(shared, resolver) as client:
                try:
                    found = await client.describe_table(TableName=table)
                except client.exceptions.ResourceNotFoundException:
                    await client.create_table(
                        TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": PARTITION_KEY,
                                               "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}])
                    log.info("created table %s", table)
                    found = await client.describe_table(TableName=table)
                status = found["Table"].get("TableStatus")
                if status == "ACTIVE":
                    ready.set()
                    return
                log.info("table %s is %s, not ACTIVE yet", table, status)
                interval = 0.2
        except client_errors() as exc:
            if "ResourceInUseException" not in repr(exc):  # InUse: another client creates it
                log.info("table %s not ensured yet: %s", table, ddb.classify(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def client_errors() -> tuple[type[BaseException], ...]:
    """What a request may raise that is an outcome, not a bug: botocore's and the network's."""
    return (boto_exc.BotoCoreError, boto_exc.ClientError, OSError, TimeoutError)


async def _until_either(stop: asyncio.Event, ready: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(ready.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


async def worker(shared: Shared, index: int, stop: asyncio.Event, rate: float,
                 rng: random.Random, ready: asyncio.Event | None = None) -> None:
    """Requests at ``rate`` per second (0: back to back) until ``stop``; each one classified.

    Until ``ready`` (the table is ACTIVE) is set, a worker only resolves the endpoint: a
    failure is recorded as the DNS outcome it is, and a worker that can resolve waits for the
    table rather than count a ResourceNotFoundException its own start-up caused."""
    d = shared.cfg.ddb
    resolver = LabResolver(shared.cfg.dns.server_host, shared.cfg.dns.server_port,
                           shared.cache, d.request_timeout / 2, shared.clock)
    period = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    version = 0
    host = d.endpoint.rstrip(".")
    while ready is not None and not ready.is_set() and not stop.is_set():
        sent, started = time.time(), time.perf_counter()
        try:
            await resolver.lookup(host)
        except ddb.DnsFailure as exc:
            verdict = ddb.classify(exc)
            REQUESTS.labels(verdict.outcome.value).inc()
            shared.recorder.write(Request(
                t=round(sent, 4), worker=index, op="resolve", outcome=verdict.outcome.value,
                detail=verdict.detail, latency_ms=round((time.perf_counter() - started) * 1000, 3),
                target=None))
        else:
            await _until_either(stop, ready, 1.0)
            continue
        next_at = max(next_at + (period or 0.1), time.monotonic())
        await _until_either(stop, ready, max(0.0, next_at - time.monotonic()))
    async with contextlib.AsyncExitStack() as stack:
        client: Any = None
        while not stop.is_set():
            opened = resolver.opened_with
            if client is None or (opened is not None
                                  and ddb.connection_expired(opened, shared.clock())):
                # The answer this connection was opened with has expired: drop the connection
                # (and the client that owns it); the next request resolves afresh.
                await stack.aclose()
                resolver.opened_with = None
                client = await stack.enter_async_context(_client(shared, resolver))
            op, key = ddb.choose_request(rng, d.write_fraction, d.keys)
            version += 1
            sent = time.time()
            started = time.perf_counter()
            error: BaseException | None = None
            try:
                await call(client, op, d.table, key, int(sent * 1000) * 100 + version % 100)
            except client_errors() as exc:
                error = exc
            elapsed = time.perf_counter() - started
            verdict = ddb.classify(error)
            REQUESTS.labels(verdict.outcome.value).inc()
            LATENCY.labels(verdict.outcome.value).observe(elapsed)
            shared.recorder.write(Request(
                t=round(sent, 4), worker=index, op=op, outcome=verdict.outcome.value,
                detail=verdict.detail, latency_ms=round(elapsed * 1000, 3),
                target=resolver.target if verdict.outcome is not Outcome.DNS else None))
            if period:
                next_at = max(next_at + period, time.monotonic())
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(0)


def validate(cfg: settings_mod.Settings) -> None:
    """Start-up checks; ValueError naming the setting (the name must be in the lab zone)."""
    cfg.ddb.validate(cfg.dns.zone)


async def run(cfg: settings_mod.Settings, out: Path, stop: asyncio.Event, *,
              port: int = 8080, workers: int | None = None, rate: float | None = None,
              http_port: int | None = None, seed: int = 0, create_table: bool = True,
              clock: Callable[[], float] = time.monotonic) -> None:
    """Run ``workers`` (default ``ddb.client_workers``) against ``ddb.endpoint:port`` until
    ``stop``; records go to ``out`` (appended). ``http_port`` serves /healthz and /metrics."""
    validate(cfg)
    count = cfg.ddb.client_workers if workers is None else workers
    per_worker = cfg.ddb.client_rate if rate is None else rate
    if count < 1:
        raise ValueError(f"workers must be at least 1, got {count}")
    server = await serving.serve("0.0.0.0", http_port) if http_port else None
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with out.open("a") as fh:
            shared = Shared(cfg, aiobotocore.session.get_session(),
                            ddb.ResolutionCache(cfg.ddb.max_ttl, random.Random(seed)),
                            Recorder(fh), port, clock)
            ready = asyncio.Event() if create_table else None
            tasks = [asyncio.create_task(worker(shared, i, stop, per_worker,
                                                random.Random(seed * 1000 + i), ready))
                     for i in range(count)]
            if ready is not None:
                tasks.append(asyncio.create_task(ensure_table(shared, stop, ready)))
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                fh.flush()
    finally:
        if server is not None:
            await server.cleanup()
