"""The DynamoDB client's decisions: what a request's outcome was, and what a resolved name is.

Who calls it: ``components.ddbclient`` (its resolver keeps a ``ResolutionCache``, every request
goes through ``classify``) and the unit tests, on times and exceptions they make up. Why pure:
"was it DNS or the backend?" is the question the cascade's analysis asks of every request,
so the answer must not depend on a running client to be tested.

Outcomes: ``ok``; ``dns`` (the name did not resolve: NXDOMAIN, NODATA, SERVFAIL, or no DNS
answer, the detail says which); ``connect`` (resolved, but no usable connection: refused,
reset, closed by the LB node); ``timeout`` (connected, no answer in time); ``throttled``
(``ThrottlingException`` and its kin, or HTTP 503); ``other`` (any other error answer).
The classification walks the exception's chain (``__cause__``, ``__context__``, botocore's
wrapped ``error`` and aiohttp's ``os_error``) so that a DNS failure wrapped as a connection
error is still ``dns``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

THROTTLE_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException",
    "RequestLimitExceeded", "Throttling", "SlowDown",
})
"""DynamoDB's and AWS's error codes that mean "slow down"."""

CONDITION_FAILED = "ConditionalCheckFailedException"

DNS_FAILURES = ("NXDOMAIN", "NODATA", "SERVFAIL", "REFUSED", "TIMEOUT")


class Outcome(enum.Enum):
    OK = "ok"
    DNS = "dns"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    THROTTLED = "throttled"
    OTHER = "other"


class DnsFailure(OSError):
    """The lab resolver's error for a name without usable addresses.

    An OSError, because aiohttp turns a resolver's OSError into ``ClientConnectorDNSError``
    (and botocore then into ``EndpointConnectionError``); ``classify`` finds it in the chain.
    """

    def __init__(self, name: str, failure: str) -> None:
        if failure not in DNS_FAILURES:
            raise ValueError(f"unknown DNS failure {failure!r}")
        super().__init__(f"{name}: {failure}")
        self.name = name
        self.failure = failure


@dataclasses.dataclass(frozen=True)
class Classified:
    outcome: Outcome
    detail: str
    """The DNS failure, the error code, the HTTP status or the exception's type."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what it wraps, depth first, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        kwargs = getattr(current, "kwargs", None)
        wrapped = kwargs.get("error") if isinstance(kwargs, dict) else None
        os_error = getattr(current, "os_error", None)  # aiohttp's ClientConnectorError
        for nxt in (current.__context__, current.__cause__, wrapped, os_error):
            if isinstance(nxt, BaseException):
                stack.append(nxt)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify_answer(status: int, error_code: str | None) -> Classified:
    """An HTTP answer: 2xx is ok; throttling codes and 503 are throttled; 504 is a timeout
    (the LB node gave up on the backend); 502 a connect error (it could not reach it)."""
    if 200 <= status < 300 and not error_code:
        return Classified(Outcome.OK, str(status))
    if error_code == CONDITION_FAILED:  # the service worked; the write's condition did not hold
        return Classified(Outcome.OK, error_code)
    if (error_code or "") in THROTTLE_CODES or status == 503:
        return Classified(Outcome.THROTTLED, error_code or str(status))
    if status == 504:
        return Classified(Outcome.TIMEOUT, error_code or "504")
    if status == 502:
        return Classified(Outcome.CONNECT, error_code or "502")
    return Classified(Outcome.OTHER, error_code or str(status))


def classify(exc: BaseException | None, status: int = 200,
             error_code: str | None = None) -> Classified:
    """Classify one request: its exception (None when an answer came back) or its answer.

    Order matters: a DNS failure anywhere in the chain wins (the name did not resolve, whatever
    the wrapper says), then an error answer from the server, then timeouts before connection
    errors (botocore's ConnectTimeoutError is both).
    """
    if exc is None:
        return classify_answer(status, error_code)
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, DnsFailure):
            return Classified(Outcome.DNS, item.failure)
    for item in chain:
        response = getattr(item, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response.get("Error", {}).get("Code") or "") or None
            meta = response.get("ResponseMetadata", {})
            http = int(meta.get("HTTPStatusCode") or 0) if isinstance(meta, dict) else 0
            return classify_answer(http or 400, code)
    for item in chain:
        names = _names(item)
        if isinstance(item, TimeoutError) or any("Timeout" in n for n in names):
            return Classified(Outcome.TIMEOUT, type(item).__name__)
    for item in chain:
        names = _names(item)
        if isinstance(item, (ConnectionError, OSError)) or names & {
                "EndpointConnectionError", "ConnectionClosedError", "ClientConnectionError",
                "ServerDisconnectedError", "ClientOSError"}:
            return Classified(Outcome.CONNECT, type(item).__name__)
    return Classified(Outcome.OTHER, type(exc).__name__)


def in_zone(name: str, zone: str) -> bool:
    name = name.rstrip(".").lower()
    zone = zone.rstrip(".").lower()
    return name == zone or name.endswith("." + zone)


@dataclasses.dataclass(frozen=True)
class Resolved:
    addresses: tuple[str, ...]
    expires: float
    """Time (on the caller's clock) after which the answer must be asked for again."""


class ResolutionCache:
    """Positive answers per name, each kept for its record's TTL capped at ``max_ttl``.

    Negative answers are not kept: the next connection asks again (CoreDNS's own cache holds
    negatives for the SOA minimum), so a record that comes back is used as soon as CoreDNS
    serves it. ``order`` shuffles a name's addresses per lookup with the given random source,
    so workers spread over the LB nodes as stub resolvers' rotation does.
    """

    def __init__(self, max_ttl: float, rng: random.Random | None = None) -> None:
        if max_ttl <= 0:
            raise ValueError(f"max_ttl must be more than 0, got {max_ttl}")
        self.max_ttl = max_ttl
        self.rng = rng or random.Random(0)
        self._entries: dict[str, Resolved] = {}

    def get(self, name: str, now: float) -> Resolved | None:
        entry = self._entries.get(name)
        if entry is None or entry.expires <= now:
            self._entries.pop(name, None)
            return None
        return entry

    def put(self, name: str, addresses: Sequence[str], ttl: float, now: float) -> Resolved:
        if not addresses:
            raise ValueError("a positive answer has addresses")
        entry = Resolved(tuple(addresses), now + max(0.0, min(float(ttl), self.max_ttl)))
        self._entries[name] = entry
        return entry

    def order(self, entry: Resolved) -> list[str]:
        addresses = list(entry.addresses)
        self.rng.shuffle(addresses)
        return addresses


def connection_expired(opened_with: Resolved | None, now: float) -> bool:
    """A connection opened with an answer may live only as long as that answer: keeping it
    longer would keep sending to an address DNS no longer gives (what pooled SDK connections
    do, see docs/dynamodb.md)."""
    return opened_with is None or opened_with.expires <= now


def choose_request(rng: random.Random, write_fraction: float, keys: int) -> tuple[str, str]:
    """("read" | "write", key) for the next request of the steady mix."""
    kind = "write" if rng.random() < write_fraction else "read"
    return kind, f"key-{rng.randrange(keys):05d}"


@dataclasses.dataclass(frozen=True)
class Request:
    """One line of the client's JSON-lines record (docs/dynamodb.md)."""

    t: float
    """Unix time the request was sent."""
    worker: int
    op: str
    """``read`` (GetItem) or ``write`` (conditional PutItem); ``resolve``: a lookup alone,
    before the table exists (``components.ddbclient.worker``)."""
    outcome: str
    detail: str
    latency_ms: float
    target: str | None
    """The address the resolver put first for the worker's connection (None: not resolved)."""


def load_requests(path: Path) -> list[Request]:
    """Every request recorded in ``path`` (a torn last line from a killed client is skipped)."""
    found: list[Request] = []
    with path.open() as fh:
        for line in fh:
            try:
                found.append(Request(**json.loads(line)))
            except (ValueError, TypeError):
                continue
    return found
