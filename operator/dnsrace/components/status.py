"""Reading the lab for ``dnsrace status``: every source once, then ``core.status.build``.

Who calls it: the CLI (``cli/status.py``), once for ``--once`` and every second in the live
view; the integration test through the CLI. Each read has its own deadline and its own error, so
one source down (the API server restarting, the DNS etcd gone, an enactor paused) shows as such
in the snapshot instead of hanging or failing the whole view.

Sources: the DnsPlans, Faults and Leases (heartbeats, the single-writer Lease) of the lab
namespace from the API server (kubernetes_asyncio); the active-plan markers of the namespace's
scope and each endpoint's address records from the DNS etcd (``dnsstore.etcd``); an A and a TXT
query per endpoint to CoreDNS (``prober.query``, dnspython), the endpoints being the newest
plan's and those with a marker; and the components' ``/metrics`` at the ports
``scenarios.lab.Lab.start_components`` gives them in local mode (planner ``base``, enactor ``i``
``base + 1 + i``, prober ``base + 5``), plus the cascade's (DWFM, the launcher, the Network
Manager, the NLB), each when its URL is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import aiohttp
import dns.message
import dns.rdatatype
from kubernetes_asyncio import client

from dnsrace import settings as settings_mod
from dnsrace.components import outages, prober
from dnsrace.core import observations, plans, stores
from dnsrace.core import status as core_status
from dnsrace.core.safeguards import Safeguards
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import client as kube_client
from dnsrace.kube import leases

T = TypeVar("T")

DEFAULT_METRICS_BASE = 18200
"""The port the scenarios give the planner (``scenarios.race``); enactor ``i`` is base+1+i."""
PROBER_OFFSET = 5


@dataclasses.dataclass(frozen=True)
class Options:
    """Where ``dnsrace status`` looks, beyond the settings (kubeconfig, DNS server, DNS etcd)."""

    metrics_host: str = "127.0.0.1"
    metrics_base: int | None = DEFAULT_METRICS_BASE
    """Port of the planner's ``/metrics``; enactor ``i`` at base+1+i, the prober at base+5.
    None: scrape nothing (on kind, the ports are inside pods)."""
    dwfm_url: str | None = None
    """DWFM's base URL (``http://host:port``); None: its figures are left out."""
    launcher_url: str | None = None
    """The launcher's base URL, as DWFM's; None: not scraped."""
    network_manager_url: str | None = None
    """The Network Manager's base URL, as DWFM's; None: not scraped."""
    nlb_url: str | None = None
    """The NLB's base URL, as DWFM's; None: not scraped."""

    def cascade_urls(self) -> dict[str, str]:
        """component (``Inputs.metrics``'s key) -> its base URL, for those given."""
        given = {"dwfm": self.dwfm_url, "launcher": self.launcher_url,
                 "network-manager": self.network_manager_url, "nlb": self.nlb_url}
        return {name: url for name, url in given.items() if url}
    timeout: float = 2.0
    """Seconds each read gets."""
    safeguards: str | None = None
    """``--safeguards``, to say what the lab runs with; else ``DNSRACE_SAFEGUARDS``."""


def describe(exc: BaseException) -> str:
    """One line for a failed read."""
    if isinstance(exc, TimeoutError):
        return "unreachable (timed out)"
    if isinstance(exc, client.ApiException):
        return outages.describe(exc) or f"API server answered {exc.status} {exc.reason}"
    return outages.describe(exc) or f"{type(exc).__name__}: {exc}"


def metrics_ports(cfg: settings_mod.Settings, base: int) -> dict[str, int]:
    """component -> its ``/metrics`` port in local mode, as the scenarios assign them."""
    ports = {"planner": base, "prober": base + PROBER_OFFSET}
    for i, name in enumerate(cfg.lab.enactors):
        ports[name] = base + 1 + i
    return ports


async def scrape(session: aiohttp.ClientSession, url: str,
                 timeout: float) -> core_status.Scrape:
    """One ``/metrics`` read: its text, or ``refused`` / ``timeout`` / the error."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                return core_status.Scrape(error=f"HTTP {resp.status}")
            return core_status.Scrape(text=await resp.text())
    except TimeoutError:
        return core_status.Scrape(error="timeout")
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return core_status.Scrape(error="refused" if refused else f"unreachable: {exc}")
    except (aiohttp.ClientError, OSError) as exc:
        return core_status.Scrape(error=f"{type(exc).__name__}: {exc}")


def _addresses(response: dns.message.Message | None) -> tuple[str, ...]:
    if response is None:
        return ()
    return tuple(sorted({rr.to_text() for rrset in response.answer for rr in rrset
                         if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)}))


def _txt(response: dns.message.Message | None) -> list[str]:
    if response is None:
        return []
    return [b"".join(rr.strings).decode("utf-8", "replace")
            for rrset in response.answer if rrset.rdtype == dns.rdatatype.TXT for rr in rrset]


async def dns_answer(name: str, server: str, port: int, timeout: float) -> core_status.DnsAnswer:
    """CoreDNS's answer for ``name`` now: the A query's rcode and addresses, the TXT serial."""
    (rcode, a_resp), (_, txt_resp) = await asyncio.gather(
        prober.query(name, dns.rdatatype.A, server, port, timeout),
        prober.query(name, dns.rdatatype.TXT, server, port, timeout))
    return core_status.DnsAnswer(rcode=rcode, addresses=_addresses(a_resp),
                                 serial=observations.parse_serial(_txt(txt_resp)))


def _lease(obj: Any) -> core_status.Lease | None:
    spec = getattr(obj, "spec", None)
    renewed = getattr(spec, "renew_time", None) or getattr(spec, "acquire_time", None)
    if spec is None or renewed is None:
        return None
    return core_status.Lease(holder=str(spec.holder_identity or ""),
                             renewed=renewed.timestamp(),
                             duration=float(spec.lease_duration_seconds or 0))


class Reader:
    """The lab's sources, opened once and read for each snapshot; ``close`` when done."""

    def __init__(self, cfg: settings_mod.Settings, options: Options) -> None:
        self.cfg = cfg
        self.options = options
        self.ns = cfg.kube.namespace
        self.api: client.ApiClient | None = None
        self.api_error: str | None = None
        self.store = etcd_store.EtcdRecordStore.from_endpoint(
            cfg.dns.etcd_endpoint, timeout=options.timeout, scope=self.ns)
        self.session: aiohttp.ClientSession | None = None
        if options.safeguards is not None:
            words, source = options.safeguards, "--safeguards"
        elif cfg.lab.safeguards != settings_mod.Lab.safeguards:
            words, source = cfg.lab.safeguards, "DNSRACE_SAFEGUARDS"
        else:
            words, source = cfg.lab.safeguards, "default"
        try:
            self.safeguards = Safeguards.parse(words).names()
        except ValueError:  # the cascade's names too (dwfm-throttle...): shown as given
            self.safeguards = [w.strip() for w in words.split(",") if w.strip()]
        self.safeguards_source = source

    async def __aenter__(self) -> Reader:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.store.close()
        if self.api is not None:
            await self.api.close()

    async def _api(self) -> client.ApiClient:
        """The API client, made on first use (and again after the kubeconfig was missing)."""
        if self.api is None:
            self.api = await kube_client.api_client(self.cfg.api_kubeconfig)
        return self.api

    async def _timed(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, timeout=self.options.timeout)

    async def _list(self, plural: str) -> list[dict[str, Any]]:
        api = client.CustomObjectsApi(await self._api())
        result = await self._timed(api.list_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.ns, plural))
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    async def _leases(self) -> tuple[dict[str, core_status.Lease | None],
                                     core_status.Lease | None]:
        result = await self._timed(client.CoordinationV1Api(await self._api())
                                   .list_namespaced_lease(self.ns))
        beats: dict[str, core_status.Lease | None] = {}
        writer = None
        for item in result.items:
            name = str(item.metadata.name)
            if name.startswith(leases.Heartbeat.PREFIX):
                beats[name.removeprefix(leases.Heartbeat.PREFIX)] = _lease(item)
            elif name == leases.NAME:
                writer = _lease(item)
        return beats, writer

    async def _metrics(self) -> dict[str, core_status.Scrape]:
        assert self.session is not None, "use Reader as an async context manager"
        urls: dict[str, str] = {}
        if self.options.metrics_base:
            for name, port in metrics_ports(self.cfg, self.options.metrics_base).items():
                urls[name] = f"http://{self.options.metrics_host}:{port}/metrics"
        for name, base in self.options.cascade_urls().items():
            urls[name] = base.rstrip("/") + "/metrics"
        got = await asyncio.gather(*(scrape(self.session, url, self.options.timeout)
                                     for url in urls.values()))
        return dict(zip(urls, got, strict=True))

    async def _store_addresses(self, names: Sequence[str]) -> dict[str, list[str]]:
        states = await self._timed(asyncio.gather(*(self.store.read(n) for n in names)))
        return {s.name: sorted(r.host for r in s.records.values() if r.host) for s in states}

    async def _answers(self, names: Sequence[str]) -> dict[str, core_status.DnsAnswer]:
        host = prober.server_address(self.cfg.dns.server_host)
        got = await asyncio.gather(*(dns_answer(n, host, self.cfg.dns.server_port,
                                                self.options.timeout) for n in names))
        return dict(zip(names, got, strict=True))

    async def snapshot(self) -> core_status.Snapshot:
        """Read every source once (concurrently where they are independent) and build."""
        errors: dict[str, str] = {}

        async def guarded(source: str, call: Awaitable[T]) -> T | None:
            try:
                return await call
            except Exception as exc:
                errors.setdefault(source, describe(exc))
                return None

        now = time.time()
        plan_items, fault_items, leased, markers, metrics = await asyncio.gather(
            guarded("api", self._list(plans.PLURAL)),
            guarded("api", self._list("faults")),
            guarded("api", self._leases()),
            guarded("dns-etcd", self._timed(self.store.markers())),
            self._metrics(),
        )
        names = self._endpoints(plan_items, markers)
        addresses, answers = await asyncio.gather(
            guarded("dns-etcd", self._store_addresses(names))
            if markers is not None else _none(),
            guarded("dns", self._answers(names)),
        )
        if answers is not None and names and all(
                a.rcode == core_status.TIMEOUT for a in answers.values()):
            errors["dns"] = (f"no answer from {self.cfg.dns.server} within "
                             f"{self.options.timeout:g}s")
        beats, writer = leased if leased is not None else (None, None)
        return core_status.build(core_status.Inputs(
            now=now, namespace=self.ns, plans=plan_items,
            faults=fault_items if plan_items is not None else None,
            markers=markers, store_addresses=addresses, answers=answers,
            metrics=metrics, heartbeats=beats, writer_lease=writer,
            enactors=self.cfg.lab.enactors, safeguards=self.safeguards,
            safeguards_source=self.safeguards_source, errors=errors,
        ))

    @staticmethod
    def _endpoints(plan_items: list[dict[str, Any]] | None,
                   markers: dict[str, tuple[stores.ActiveMarker, int]] | None) -> list[str]:
        """The newest live plan's endpoints, in its order, then any other with a marker."""
        newest: dict[str, Any] | None = None
        for item in plan_items or []:
            if item.get("metadata", {}).get("deletionTimestamp"):
                continue
            serial = (item.get("spec") or {}).get("serial")
            if isinstance(serial, int) and (newest is None or serial > newest["serial"]):
                newest = item["spec"]
        names = [str(e["name"]) for e in (newest or {}).get("endpoints") or []
                 if e.get("name")]
        return names + sorted(set(markers or {}) - set(names))


async def _none() -> None:
    return None
