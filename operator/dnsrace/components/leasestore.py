"""DWFM's droplet leases in a DynamoDB table, reached through the lab's DNS: ``core.dwfm``'s
``LeaseStore`` on real I/O.

Who calls it: ``components.dwfm`` (every method from the one thread that runs the core) and the
integration test. Why: in us-east-1 DWFM's state checks went through DynamoDB, so when
``dynamodb.us-east-1`` stopped resolving the leases expired. Here every call resolves the
regional endpoint through CoreDNS (``components.ddbpath``, the path the DynamoDB clients use),
and every failure that means "unreachable" (the name does not resolve, the connection is refused
or times out, the service throttles or fails) raises ``dwfm.StoreUnavailable``: a DNS failure IS
a DynamoDB failure, as in the incident. A condition that does not hold is not an outage
(``renew`` returns False).

Client: botocore's synchronous client (the core's store calls are synchronous), one attempt per
call (botocore's retries off: the core decides what happens next), short connect and read
timeouts. The client is opened on one address of the answer and closed once that answer's TTL
has run out (``core.ddb.connection_expired``) or after a failure, so no connection outlives its
record and a change in DNS reaches DWFM within one TTL. With ``endpoint_url`` (tests that talk
to DynamoDB Local directly) there is no DNS step.

One thread makes every call, so a slow failure (a timeout) would hold up every state check due
meanwhile, and the core would fall behind real time by a timeout per call. Instead, after a
failure slower than ``slow`` s the store answers ``StoreUnavailable`` without I/O for ``hold``
s (a circuit breaker, counted as outcome ``open``): the calls that real DWFM hosts would have
made at the same moment fail as the slow one did, and the next call after ``hold`` probes again.

The table (``droplet-leases``, key ``droplet``, on-demand) is created when missing, at start
and whenever a call finds it gone (an in-memory DynamoDB Local restarted): the call is then made
once more on the new, empty table, so a renewal finds no lease (False) and the droplet's lease is
re-established through DWFM's queue.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.session
import prometheus_client
from botocore import exceptions as boto_exc
from botocore.config import Config

from dnsrace.components import ddbpath
from dnsrace.core import ddb, dwfm

log = logging.getLogger(__name__)

TABLE = "droplet-leases"
KEY = "droplet"
REGION = "us-east-1"

UNREACHABLE = frozenset({ddb.Outcome.DNS, ddb.Outcome.CONNECT, ddb.Outcome.TIMEOUT,
                         ddb.Outcome.THROTTLED})
"""Outcomes that mean the store could not be reached (besides server errors, HTTP 5xx)."""

CALLS = prometheus_client.Counter(
    "dnsrace_dwfm_store_requests_total",
    "DWFM's DynamoDB requests by operation and outcome (ok, condition, dns, connect, timeout, "
    "throttled, other; open: refused without I/O while the circuit is open).",
    ["op", "outcome"],
)
LATENCY = prometheus_client.Histogram(
    "dnsrace_dwfm_store_request_duration_seconds",
    "Time of one DWFM DynamoDB request, DNS lookup included.", ["op"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

T = TypeVar("T")


class LeaseStoreError(Exception):
    """The store answered with an error that is not an outage (a bug, or a refused request)."""


def _errors() -> tuple[type[BaseException], ...]:
    return (boto_exc.BotoCoreError, boto_exc.ClientError, OSError, TimeoutError)


def classify(exc: BaseException) -> ddb.Classified:
    """``core.ddb.classify``, except that a refused connection is ``connect``: urllib3 2 makes
    its ``NewConnectionError`` a subclass of ``ConnectTimeoutError``, which the chain walk would
    read as a timeout; botocore tells them apart (``EndpointConnectionError`` against its
    ``ConnectTimeoutError``)."""
    if (isinstance(exc, boto_exc.EndpointConnectionError)
            and not isinstance(exc, boto_exc.ConnectTimeoutError)):
        verdict = ddb.classify(exc)
        if verdict.outcome is ddb.Outcome.TIMEOUT:
            return ddb.Classified(ddb.Outcome.CONNECT, type(exc).__name__)
        return verdict
    return ddb.classify(exc)


def _code(exc: BaseException) -> tuple[str, int]:
    """A ClientError's error code and HTTP status ('', 0 for other errors)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code") or "")
    meta = response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode") or 0) if isinstance(meta, dict) else 0
    return code, status


class DynamoLeaseStore:
    """``core.dwfm.LeaseStore`` over a DynamoDB table; synchronous, for one thread.

    ``endpoint`` is the name resolved through CoreDNS at ``dns_server:dns_port`` and reached on
    ``port``; ``endpoint_url`` replaces the whole DNS step. ``clock`` is monotonic (TTLs and the
    breaker), not the leases' time, which the core passes in.
    """

    def __init__(self, *, endpoint: str = "", port: int = 8080, dns_server: str = "127.0.0.1",
                 dns_port: int = 10053, endpoint_url: str | None = None, table: str = TABLE,
                 timeout: float = 1.0, max_ttl: float = 5.0, slow: float = 0.25,
                 hold: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if endpoint_url is None and not endpoint:
            raise ValueError("give the endpoint name to resolve, or endpoint_url")
        if timeout <= 0:
            raise ValueError(f"timeout must be more than 0 s, got {timeout}")
        self.endpoint = endpoint.rstrip(".")
        self.port = port
        self.dns_server = dns_server
        self.dns_port = dns_port
        self.endpoint_url = endpoint_url
        self.table = table
        self.timeout = timeout
        self.slow = slow
        self.hold = hold
        self.clock = clock
        self.cache = ddb.ResolutionCache(max_ttl)
        self.session = botocore.session.get_session()
        self.config = Config(connect_timeout=timeout, read_timeout=timeout,
                             retries={"total_max_attempts": 1, "mode": "standard"},
                             max_pool_connections=1)
        self._client: Any = None
        self._opened_with: ddb.Resolved | None = None
        self._open_until = 0.0
        self._setup = 0.0
        """Seconds the current call spent building a client (not counted as its latency)."""
        self.down_since: float | None = None
        """Monotonic time of the first failure of the current outage (None: reachable)."""
        self._down_calls = 0
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.unavailable = 0
        """``StoreUnavailable`` raised so far."""
        self.target: str | None = None
        """The URL the current client talks to."""

    # -- the connection ------------------------------------------------------------------------

    def _url(self) -> str:
        if self.endpoint_url is not None:
            return self.endpoint_url
        entry = ddbpath.lookup(self.endpoint, self.dns_server, self.dns_port, self.cache,
                               self.timeout / 2, self.clock())
        self._opened_with = entry
        address = self.cache.order(entry)[0]
        return f"http://{address}:{self.port}"

    def client(self) -> Any:
        """The client for the current answer, opened afresh once its answer expired."""
        if self._client is not None and (
                self.endpoint_url is not None
                or not ddb.connection_expired(self._opened_with, self.clock())):
            return self._client
        self.close()
        url = self._url()
        created = time.perf_counter()
        self._client = self.session.create_client(
            "dynamodb", region_name=REGION, endpoint_url=url, aws_access_key_id="dnsrace",
            aws_secret_access_key="dnsrace", config=self.config)
        self.target = url
        self._setup += time.perf_counter() - created
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        self._opened_with = None
        if client is not None:
            client.close()

    # -- one call ------------------------------------------------------------------------------

    def _count(self, op: str, outcome: str, elapsed: float | None = None) -> None:
        self.outcomes[outcome] += 1
        CALLS.labels(op, outcome).inc()
        if elapsed is not None:
            LATENCY.labels(op).observe(elapsed)

    def _reachable(self) -> None:
        if self.down_since is not None:
            log.info("DynamoDB reachable again after %.1f s (%d calls failed)",
                     self.clock() - self.down_since, self._down_calls)
            self.down_since = None
            self._down_calls = 0

    def _unavailable(self, op: str, reason: str) -> dwfm.StoreUnavailable:
        self.unavailable += 1
        self._down_calls += 1
        if self.down_since is None:
            self.down_since = self.clock()
            log.warning("DynamoDB unreachable (%s: %s); leases are not renewed until it is "
                        "back", op, reason)
        return dwfm.StoreUnavailable(f"{op}: {reason}")

    def call(self, op: str, request: Callable[[Any], T], *, again: bool = True) -> T:
        """Make one request with the current client; raise ``StoreUnavailable`` when DynamoDB
        cannot be reached, ``ConditionFailed``-style ``ClientError`` as is, ``LeaseStoreError``
        for any other error answer."""
        if self.clock() < self._open_until:
            self._count(op, "open")
            raise self._unavailable(op, "circuit open after a slow failure")
        started = time.perf_counter()
        self._setup = 0.0
        try:
            result = request(self.client())
        except _errors() as exc:
            # The request's time: the lookup and the network, not building the client.
            elapsed = time.perf_counter() - started - self._setup
            code, status = _code(exc)
            if code == ddb.CONDITION_FAILED:
                self._count(op, "condition", elapsed)
                self._reachable()
                raise
            if code == "ResourceNotFoundException" and again:
                self._count(op, "other", elapsed)
                self._reachable()
                log.warning("table %s is gone (DynamoDB restarted?): creating it", self.table)
                self.ensure_table()
                return self.call(op, request, again=False)
            verdict = classify(exc)
            self._count(op, verdict.outcome.value, elapsed)
            if verdict.outcome in UNREACHABLE or status >= 500 or not code:
                self.close()  # the next call resolves and connects afresh
                if elapsed >= self.slow and self.hold > 0:
                    self._open_until = self.clock() + self.hold
                raise self._unavailable(op, f"{verdict.outcome.value} {verdict.detail}") \
                    from exc
            raise LeaseStoreError(f"{op}: DynamoDB answered {code} ({status}): {exc}") from exc
        self._count(op, "ok", time.perf_counter() - started - self._setup)
        self._reachable()
        return result

    # -- the table -----------------------------------------------------------------------------

    def ensure_table(self) -> bool:
        """Create the table unless it exists; True when this call created it. Raises
        ``StoreUnavailable`` when DynamoDB cannot be reached."""

        def describe(client: Any) -> bool:
            try:
                client.describe_table(TableName=self.table)
            except client.exceptions.ResourceNotFoundException:
                return False
            return True

        def create(client: Any) -> bool:
            try:
                client.create_table(
                    TableName=self.table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}])
            except client.exceptions.ResourceInUseException:
                return False  # created meanwhile by another caller
            client.get_waiter("table_exists").wait(
                TableName=self.table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
            return True

        if self.call("describe", describe, again=False):
            return False
        created = self.call("create", create, again=False)
        if created:
            log.info("created table %s", self.table)
        return created

    # -- core.dwfm.LeaseStore ------------------------------------------------------------------

    def renew(self, droplet: str, now: float, ttl: float) -> bool:
        def request(client: Any) -> None:
            client.update_item(
                TableName=self.table, Key={KEY: {"S": droplet}},
                UpdateExpression="SET #e = :e, renewed = :now",
                ConditionExpression="attribute_exists(#d) AND #e > :now",
                ExpressionAttributeNames={"#d": KEY, "#e": "expires"},
                ExpressionAttributeValues={":e": {"N": repr(now + ttl)},
                                           ":now": {"N": repr(now)}})

        try:
            self.call("renew", request)
        except boto_exc.ClientError as exc:
            if _code(exc)[0] == ddb.CONDITION_FAILED:
                return False
            raise
        return True

    def establish(self, droplet: str, now: float, ttl: float) -> None:
        def request(client: Any) -> None:
            client.put_item(TableName=self.table, Item={
                KEY: {"S": droplet}, "expires": {"N": repr(now + ttl)},
                "established": {"N": repr(now)}})

        self.call("establish", request)

    def load(self, now: float) -> dict[str, float]:
        def request(client: Any) -> dict[str, float]:
            found: dict[str, float] = {}
            pages = client.get_paginator("scan").paginate(
                TableName=self.table, ConsistentRead=True, ProjectionExpression="#d, #e",
                ExpressionAttributeNames={"#d": KEY, "#e": "expires"})
            for page in pages:
                for item in page.get("Items", []):
                    found[item[KEY]["S"]] = float(item["expires"]["N"])
            return found

        return self.call("load", request)
