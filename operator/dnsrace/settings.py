"""All of dnsrace's settings, as nested dataclasses under one root.

Every component and command reads its configuration from a ``Settings`` object built once by
``Settings.from_env()``; nothing else in the package reads the environment. Each group holds
one concern; every field has a default, so ``Settings()`` describes the local lab as shipped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

ZONE = "sim.internal"
"""The lab zone. The DnsPlan CRD's validation names it too; a test keeps the two in step."""


def _repo_root() -> Path | None:
    """The clone this package runs from, when it is installed in editable mode."""
    candidate = Path(__file__).resolve().parents[2]
    return candidate if (candidate / "pyproject.toml").is_file() else None


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dnsrace"


@dataclasses.dataclass(frozen=True)
class Versions:
    """Pinned releases of the binaries the local control plane runs."""

    kubernetes: str = "v1.37.2"
    """kube-apiserver, kube-controller-manager and kubectl, built from k8s.io/kubernetes."""

    etcd: str = "v3.6.16"
    """etcd, built from go.etcd.io/etcd/server/v3 (both the API server's and the DNS store)."""

    coredns: str = "v1.14.7"
    """CoreDNS, built from github.com/coredns/coredns with its default plugin set."""


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where built binaries are cached and where per-run state lives."""

    cache_dir: Path = dataclasses.field(default_factory=lambda: _default_cache_dir(os.environ))
    """Outside the clone so that fresh clones on one machine reuse what was built
    (``DNSRACE_CACHE_DIR``, else ``$XDG_CACHE_HOME/dnsrace``)."""

    state_dir: Path = dataclasses.field(
        default_factory=lambda: (_repo_root() or Path.cwd()) / ".run"
    )
    """Data directories, logs, certificates and kubeconfig of the local plane
    (``DNSRACE_STATE_DIR``, else ``.run`` in the clone)."""

    toolchain_dir: Path = dataclasses.field(
        default_factory=lambda: (_repo_root() or Path.cwd()) / "toolchain"
    )
    """The project's own Go modules that pin what the setup builds."""

    manifests_dir: Path = dataclasses.field(
        default_factory=lambda: (_repo_root() or Path.cwd()) / "manifests"
    )
    """CRDs, RBAC and examples that ``local up`` installs."""

    @property
    def local_dir(self) -> Path:
        return self.state_dir / "local"

    @property
    def kubeconfig(self) -> Path:
        return self.local_dir / "kubeconfig"


@dataclasses.dataclass(frozen=True)
class LocalPlane:
    """Loopback addresses and ports of the local control plane's processes."""

    host: str = "127.0.0.1"
    apiserver_port: int = 16443
    etcd_client_port: int = 12379
    etcd_peer_port: int = 12380
    dns_etcd_client_port: int = 22379
    dns_etcd_peer_port: int = 22380
    coredns_port: int = 10053
    coredns_stale_port: int = 10054
    """The same zone, from a cache that serves stale answers while the DNS etcd fails."""
    coredns_metrics_port: int = 19153
    coredns_ready_port: int = 18181
    controller_manager_port: int = 20257

    service_cidr: str = "10.96.0.0/16"
    """Only allocated by the API server for Service objects; nothing routes to it locally."""

    start_timeout: float = 120.0
    """Seconds to wait for each process to become healthy before giving up."""

    run_controller_manager: bool = True
    """Namespace deletion, garbage collection and EndpointSlices need it."""


@dataclasses.dataclass(frozen=True)
class Dns:
    """The DNS data plane: the zone CoreDNS serves and the etcd it reads it from."""

    zone: str = ZONE
    server: str = "127.0.0.1:10053"
    """host:port of the CoreDNS that serves the lab zone (``DNSRACE_DNS_SERVER``)."""

    stale_server: str = "127.0.0.1:10054"
    """host:port where the same CoreDNS serves the zone with ``serve_stale``: what DNS clients
    use under the ``serve-stale`` safeguard (``DNSRACE_DNS_STALE_SERVER``)."""

    etcd_endpoint: str = "127.0.0.1:22379"
    """host:port of the DNS etcd (``DNSRACE_DNS_ETCD``)."""

    record_ttl: int = 5
    """TTL written on lab records; short, so that a deleted record stops being served soon."""

    cache_ttl: int = 5
    """Upper bound CoreDNS's cache puts on positive and negative answers."""

    @property
    def server_host(self) -> str:
        return self.server.rsplit(":", 1)[0]

    @property
    def server_port(self) -> int:
        return int(self.server.rsplit(":", 1)[1])

    @property
    def etcd_host(self) -> str:
        return self.etcd_endpoint.rsplit(":", 1)[0]

    @property
    def etcd_port(self) -> int:
        return int(self.etcd_endpoint.rsplit(":", 1)[1])


@dataclasses.dataclass(frozen=True)
class Kube:
    """How components reach the Kubernetes API."""

    kubeconfig: Path | None = None
    """``DNSRACE_KUBECONFIG``; when unset, the local plane's kubeconfig."""

    namespace: str = "dnsrace"
    """Namespace of the lab's namespaced objects (Faults, the LB Service, Events)."""

    in_cluster: bool = False
    """Running in a pod with no kubeconfig given: use the pod's service account."""


@dataclasses.dataclass(frozen=True)
class Lab:
    """The control loop's knobs: how fast plans come, how much clean-up keeps, safeguards."""

    safeguards: str = "off"
    """``off``, ``on``, or a comma list (``DNSRACE_SAFEGUARDS``); see ``core.safeguards``."""

    enactors: tuple[str, ...] = ("enactor-a", "enactor-b", "enactor-c")

    planner_interval: float = 0.5
    """Seconds between plans when nothing changes (``DNSRACE_PLANNER_INTERVAL``)."""

    keep: int = 10
    """Clean-up deletes plans more than this many serials older than the one just applied."""

    accounts: int = 8
    """Account-specific endpoints in each plan, besides regional, FIPS and dual-stack."""

    lb_nodes: int = 6
    """LB node processes in local mode, on 127.0.10.1 and up."""

    http_port: int = 8080
    """Port of each component's /healthz and /metrics (``DNSRACE_HTTP_PORT``; 0 disables)."""

    resync_seconds: float = 30.0
    """How often an enactor relists the plans, as an informer's resync does, to drop plans
    whose deletion its watch missed (``DNSRACE_RESYNC_SECONDS``)."""


@dataclasses.dataclass(frozen=True)
class Ddb:
    """The DynamoDB data path: the backend, the LB nodes' front door, and the clients."""

    backend_host: str = "127.0.0.1"
    """Where DynamoDB Local listens and the LB nodes reach it (``DNSRACE_DDB_BACKEND``,
    host:port)."""

    backend_port: int = 18000

    backend_start_timeout: float = 60.0
    """Seconds DynamoDB Local gets to answer its first request (a cold JVM takes a few)."""

    lb_forward: bool = False
    """LB nodes forward the DynamoDB API to the backend (``DNSRACE_LB_FORWARD=1``, implied by
    ``DNSRACE_DDB_BACKEND``); off, they serve ``/health`` only, as before the data path."""

    lb_capacity: int = 32
    """Requests each LB node forwards at once (``DNSRACE_LB_CAPACITY``); more wait."""

    lb_queue: int = 64
    """Requests that may wait for a slot; beyond it a request is throttled at once."""

    lb_wait: float = 0.5
    """Longest a request waits for a slot before it is throttled (``DNSRACE_LB_WAIT``, s)."""

    lb_throttle_status: int = 400
    """400 answers ``ThrottlingException`` as DynamoDB does; 503 answers as an NLB does."""

    lb_upstream_timeout: float = 5.0
    """Seconds the LB node gives the backend per request before answering 504."""

    endpoint: str = f"dynamodb.us-east-1.{ZONE}"
    """Name the clients resolve (``DNSRACE_DDB_ENDPOINT``); must be inside the lab zone."""

    client_workers: int = 8
    """Concurrent workers of ``dnsrace ddb-client`` (``DNSRACE_DDB_WORKERS``)."""

    client_rate: float = 20.0
    """Requests per second per worker; 0 means as fast as answers come back."""

    write_fraction: float = 0.3
    """Share of requests that are conditional writes; the rest are reads."""

    table: str = "dnsrace-leases"
    """Table the clients create when missing and read and write."""

    keys: int = 256
    """Distinct items the clients spread their requests over."""

    request_timeout: float = 2.0
    """Client's connect and read timeout per request, in seconds."""

    max_ttl: float = 5.0
    """Cap on how long a resolved address (and any connection to it) is kept, in seconds."""

    def validate(self, zone: str = ZONE) -> None:
        """Raise ValueError naming the first bad setting."""
        name = self.endpoint.rstrip(".").lower()
        if not (name == zone or name.endswith("." + zone)):
            raise ValueError(f"ddb.endpoint (DNSRACE_DDB_ENDPOINT) {self.endpoint!r} is outside "
                             f"the lab zone {zone}")
        checks = [
            ("ddb.lb_capacity (DNSRACE_LB_CAPACITY)", self.lb_capacity >= 1, "at least 1"),
            ("ddb.lb_queue", self.lb_queue >= 0, "0 or more"),
            ("ddb.lb_wait (DNSRACE_LB_WAIT)", self.lb_wait >= 0, "0 or more seconds"),
            ("ddb.lb_throttle_status", self.lb_throttle_status in (400, 503), "400 or 503"),
            ("ddb.lb_upstream_timeout", self.lb_upstream_timeout > 0, "more than 0 seconds"),
            ("ddb.backend_port", 0 < self.backend_port < 65536, "a TCP port"),
            ("ddb.client_workers (DNSRACE_DDB_WORKERS)", self.client_workers >= 1,
             "at least 1"),
            ("ddb.client_rate", self.client_rate >= 0, "0 or more"),
            ("ddb.write_fraction", 0.0 <= self.write_fraction <= 1.0, "between 0 and 1"),
            ("ddb.keys", self.keys >= 1, "at least 1"),
            ("ddb.request_timeout", self.request_timeout > 0, "more than 0 seconds"),
            ("ddb.max_ttl", self.max_ttl > 0, "more than 0 seconds"),
        ]
        for setting, ok, expected in checks:
            if not ok:
                raise ValueError(f"{setting} must be {expected}, got "
                                 f"{getattr(self, setting.split()[0].removeprefix('ddb.'))!r}")

    @property
    def backend_url(self) -> str:
        return f"http://{self.backend_host}:{self.backend_port}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The root of all settings."""

    versions: Versions = dataclasses.field(default_factory=Versions)
    paths: Paths = dataclasses.field(default_factory=Paths)
    local: LocalPlane = dataclasses.field(default_factory=LocalPlane)
    dns: Dns = dataclasses.field(default_factory=Dns)
    kube: Kube = dataclasses.field(default_factory=Kube)
    lab: Lab = dataclasses.field(default_factory=Lab)
    ddb: Ddb = dataclasses.field(default_factory=Ddb)

    @property
    def kubeconfig(self) -> Path:
        return self.kube.kubeconfig or self.paths.kubeconfig

    @property
    def api_kubeconfig(self) -> Path | None:
        """The kubeconfig components use; None means the in-cluster service account."""
        return None if self.kube.in_cluster else self.kubeconfig

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``DNSRACE_*`` variables; unknown values keep their defaults."""
        env = os.environ if env is None else env
        paths = Paths(
            cache_dir=Path(env["DNSRACE_CACHE_DIR"]) if env.get("DNSRACE_CACHE_DIR")
            else _default_cache_dir(env),
            state_dir=Path(env["DNSRACE_STATE_DIR"]) if env.get("DNSRACE_STATE_DIR")
            else Paths().state_dir,
        )
        dns = Dns(
            server=env.get("DNSRACE_DNS_SERVER") or Dns.server,
            stale_server=env.get("DNSRACE_DNS_STALE_SERVER") or Dns.stale_server,
            etcd_endpoint=env.get("DNSRACE_DNS_ETCD") or Dns.etcd_endpoint,
        )
        kubeconfig = env.get("DNSRACE_KUBECONFIG")
        kube = Kube(
            kubeconfig=Path(kubeconfig) if kubeconfig else None,
            namespace=env.get("DNSRACE_NAMESPACE") or Kube.namespace,
            in_cluster=not kubeconfig and "KUBERNETES_SERVICE_HOST" in env,
        )
        lab = Lab(
            safeguards=env.get("DNSRACE_SAFEGUARDS") or Lab.safeguards,
            planner_interval=float(env.get("DNSRACE_PLANNER_INTERVAL") or Lab.planner_interval),
            http_port=int(env.get("DNSRACE_HTTP_PORT") or Lab.http_port),
            keep=int(env.get("DNSRACE_KEEP") or Lab.keep),
            accounts=int(env.get("DNSRACE_ACCOUNTS") or Lab.accounts),
            resync_seconds=float(env.get("DNSRACE_RESYNC_SECONDS") or Lab.resync_seconds),
        )
        return cls(paths=paths, dns=dns, kube=kube, lab=lab, ddb=_ddb_from_env(env))

    @property
    def external_cluster(self) -> bool:
        """True when the kubeconfig points at a cluster dnsrace did not start (e.g. kind).

        Decided by what ``DNSRACE_KUBECONFIG`` names, not by its being set: ``dnsrace local
        env`` exports the local plane's own kubeconfig, and that is still the local plane.
        """
        given = self.kube.kubeconfig
        return given is not None and given.resolve() != self.paths.kubeconfig.resolve()


def _ddb_from_env(env: Mapping[str, str]) -> Ddb:
    """The ``ddb`` group from ``DNSRACE_DDB_*`` / ``DNSRACE_LB_*``; a value that does not parse
    is a ValueError naming its variable (validation of the values is ``Ddb.validate``)."""

    def number(var: str, default: float, kind: type[int] | type[float]) -> float:
        raw = env.get(var)
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{var}={raw!r} is not a {kind.__name__}") from None

    backend = env.get("DNSRACE_DDB_BACKEND") or ""
    host, _, port = backend.rpartition(":")
    if backend and not (host and port.isdigit()):
        raise ValueError(f"DNSRACE_DDB_BACKEND={backend!r} must be host:port")
    forward = (env.get("DNSRACE_LB_FORWARD") or "").lower() in ("1", "true", "yes", "on")
    return Ddb(
        lb_forward=forward or bool(backend),
        backend_host=host or Ddb.backend_host,
        backend_port=int(port) if backend else Ddb.backend_port,
        lb_capacity=int(number("DNSRACE_LB_CAPACITY", Ddb.lb_capacity, int)),
        lb_wait=number("DNSRACE_LB_WAIT", Ddb.lb_wait, float),
        endpoint=env.get("DNSRACE_DDB_ENDPOINT") or Ddb.endpoint,
        client_workers=int(number("DNSRACE_DDB_WORKERS", Ddb.client_workers, int)),
    )
