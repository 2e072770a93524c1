"""The DNS prober: resolves every endpoint at a fixed rate, as a client would, and records it.

The scenarios start it (``run``) with the newest plan's endpoint names, next to the enactors,
and analyse its file with ``core.observations`` afterwards; it is the ground truth for "the
regional endpoint resolved to nothing" and "an endpoint went back to an older plan". It asks
CoreDNS, not the DNS etcd, so what it sees includes CoreDNS's cache, as DynamoDB's clients did.

Each round queries every endpoint's A record and its ``serial=<n>`` TXT record concurrently
(dnspython's asyncio API), and appends one JSON line per endpoint, flushed per round so a killed
prober keeps what it saw. Rounds run on a fixed-rate clock: a slow round (a query timing out)
never shifts later rounds; the ticks it overran are skipped and counted
(``dnsrace_prober_missed_rounds_total``), so the record's sampling rate is stated, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import prometheus_client
from kubernetes_asyncio import client

from dnsrace.components import serving
from dnsrace.components.ddbpath import server_address as server_address
from dnsrace.core import observations, plans
from dnsrace.core.observations import Observation

log = logging.getLogger(__name__)

ANSWERS = prometheus_client.Counter(
    "dnsrace_prober_answers_total", "Probe results per endpoint and A-query rcode.",
    ["endpoint", "rcode"],
)
SERIAL = prometheus_client.Gauge(
    "dnsrace_prober_serial", "Plan serial last seen in the endpoint's TXT record.", ["endpoint"],
)
EMPTY = prometheus_client.Gauge(
    "dnsrace_prober_empty",
    "1 while the endpoint resolves to no address after having resolved to some.", ["endpoint"],
)
QUERY_DURATION = prometheus_client.Histogram(
    "dnsrace_prober_query_duration_seconds", "Time to an answer (or the timeout) per query.",
    ["type"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ROUNDS = prometheus_client.Counter(
    "dnsrace_prober_rounds_total", "Probe rounds completed (every endpoint queried once).",
)
MISSED = prometheus_client.Counter(
    "dnsrace_prober_missed_rounds_total",
    "Scheduled rounds skipped because the previous round overran its tick.",
)

DEFAULT_RATE = 10.0
DEFAULT_TIMEOUT = 1.0


async def query(name: str, rdtype: dns.rdatatype.RdataType, server: str, port: int,
                query_timeout: float) -> tuple[str, dns.message.Message | None]:
    """One UDP query; returns (rcode text, response), ("TIMEOUT", None) when nothing came back.

    An unreachable server (ICMP port unreachable, no route) is also "TIMEOUT": to a client it is
    the same thing, no answer.
    """
    request = dns.message.make_query(name.rstrip(".") + ".", rdtype)
    started = time.perf_counter()
    try:
        response = await dns.asyncquery.udp(request, server, port=port, timeout=query_timeout)
    except (dns.exception.Timeout, OSError) as exc:
        log.debug("%s %s: no answer (%r)", name, dns.rdatatype.to_text(rdtype), exc)
        return observations.TIMEOUT, None
    except dns.exception.DNSException as exc:
        # A reply that does not parse (or does not match) is no usable answer either.
        log.warning("%s %s: bad reply (%r)", name, dns.rdatatype.to_text(rdtype), exc)
        return observations.TIMEOUT, None
    finally:
        QUERY_DURATION.labels(dns.rdatatype.to_text(rdtype)).observe(
            time.perf_counter() - started)
    return dns.rcode.to_text(response.rcode()), response


def _addresses(response: dns.message.Message | None) -> tuple[str, ...]:
    if response is None:
        return ()
    return tuple(sorted({
        rr.to_text() for rrset in response.answer for rr in rrset
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
    }))


def _txt_strings(response: dns.message.Message | None) -> list[str]:
    if response is None:
        return []
    return [
        b"".join(rr.strings).decode("utf-8", "replace")
        for rrset in response.answer if rrset.rdtype == dns.rdatatype.TXT for rr in rrset
    ]


class _Sink:
    """The JSON-lines file, opened for append; plain blocking writes of a few lines per round
    are cheaper than handing each to a thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[str] = path.open("a", encoding="utf-8")

    def write_round(self, batch: Sequence[Observation]) -> None:
        self.fh.write("".join(o.to_json() + "\n" for o in batch))
        self.fh.flush()  # a killed prober keeps every finished round

    def close(self) -> None:
        self.fh.close()


@dataclasses.dataclass
class ProberStats:
    rounds: int = 0
    missed: int = 0
    last_round_end: float | None = None
    """``time.monotonic()`` when the last round was written."""


class Prober:
    """Probes ``endpoints`` at ``rate`` rounds per second and appends what it sees to ``out``."""

    def __init__(self, endpoints: Sequence[str], server: str, port: int, out: Path,
                 rate: float = DEFAULT_RATE, timeout: float = DEFAULT_TIMEOUT,
                 wallclock: Callable[[], float] = time.time) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not endpoints:
            raise ValueError("no endpoints to probe")
        self.endpoints = [e.rstrip(".") for e in endpoints]
        self.server = server
        self.port = port
        self.out = out
        self.period = 1.0 / rate
        self.timeout = timeout
        self.wallclock = wallclock
        self.stats = ProberStats()
        self._answered: set[str] = set()
        """Endpoints that have resolved to addresses at least once (emptiness starts after)."""

    async def _probe(self, name: str, t: float) -> Observation:
        (rcode, a_resp), (_, txt_resp) = await asyncio.gather(
            query(name, dns.rdatatype.A, self.server, self.port, self.timeout),
            query(name, dns.rdatatype.TXT, self.server, self.port, self.timeout),
        )
        return Observation(t=t, name=name, rcode=rcode, addresses=_addresses(a_resp),
                           serial=observations.parse_serial(_txt_strings(txt_resp)))

    async def probe_round(self) -> list[Observation]:
        """Query every endpoint once (concurrently) and update the metrics; writes nothing."""
        t = self.wallclock()
        batch = list(await asyncio.gather(*(self._probe(name, t) for name in self.endpoints)))
        for o in batch:
            ANSWERS.labels(o.name, o.rcode).inc()
            if o.serial is not None:
                SERIAL.labels(o.name).set(o.serial)
            if o.has_addresses:
                self._answered.add(o.name)
            EMPTY.labels(o.name).set(1 if o.name in self._answered and not o.has_addresses
                                     else 0)
        return batch

    def health(self) -> tuple[bool, str]:
        """Unhealthy when no round finished for several periods (the loop is stuck)."""
        limit = 5 * max(self.period, self.timeout)
        last = self.stats.last_round_end
        if last is None:
            return True, "starting"
        age = time.monotonic() - last
        if age > limit:
            return False, f"no probe round finished for {age:.1f}s (limit {limit:.1f}s)"
        return True, "ok"

    async def run(self, stop: asyncio.Event) -> ProberStats:
        """Probe until ``stop`` is set (or the task is cancelled); the file is closed either way."""
        sink = _Sink(self.out)
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        log.info("probing %d endpoints at %s:%d, %.1f rounds/s, into %s",
                 len(self.endpoints), self.server, self.port, 1 / self.period, self.out)
        try:
            while not stop.is_set():
                batch = await self.probe_round()
                sink.write_round(batch)
                ROUNDS.inc()
                self.stats.rounds += 1
                self.stats.last_round_end = time.monotonic()
                # Next tick on the fixed grid; ticks that already passed are skipped, not run
                # late, so one slow round does not shift (or bunch up) every later one.
                tick += 1
                due = math.floor((loop.time() - start) / self.period) + 1
                if due > tick:
                    MISSED.inc(due - tick)
                    self.stats.missed += due - tick
                    tick = due
                delay = start + tick * self.period - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            sink.close()
            log.info("prober stopped after %d rounds (%d missed)",
                     self.stats.rounds, self.stats.missed)
        return self.stats


async def run(endpoints: list[str], server: str, port: int, out: Path, rate: float,
              stop: asyncio.Event, http_port: int | None = None, *,
              http_host: str = "127.0.0.1",
              query_timeout: float = DEFAULT_TIMEOUT) -> None:
    """Probe ``endpoints`` on ``server:port`` into ``out`` until ``stop`` is set.

    With ``http_port``, also serve ``/healthz`` and ``/metrics`` on ``http_host:http_port``.
    """
    prober = Prober(endpoints, server_address(server), port, out, rate=rate,
                    timeout=query_timeout)
    runner = (await serving.serve(http_host, http_port, prober.health)
              if http_port is not None else None)
    try:
        await prober.run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()


async def endpoints_from_plans(api_client: client.ApiClient, namespace: str) -> list[str]:
    """Endpoint names of the DnsPlan with the highest ``spec.serial``; [] when there is none.

    Names are read as the API returns them, without the controller's checks: the prober watches
    whatever the newest plan names, valid or not.
    """
    api = client.CustomObjectsApi(api_client)
    result: dict[str, Any] = await api.list_namespaced_custom_object(
        plans.GROUP, plans.VERSION, namespace, plans.PLURAL)
    newest: dict[str, Any] | None = None
    for item in result.get("items", []):
        spec = item.get("spec") or {}
        try:
            serial = int(spec["serial"])
        except (KeyError, TypeError, ValueError):
            continue
        if newest is None or serial > int(newest["serial"]):
            newest = spec
    if newest is None:
        return []
    return [str(e["name"]) for e in newest.get("endpoints") or [] if e.get("name")]
