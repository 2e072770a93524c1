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


@dataclasses.dataclass(frozen=True)
class Settings:
    """The root of all settings."""

    versions: Versions = dataclasses.field(default_factory=Versions)
    paths: Paths = dataclasses.field(default_factory=Paths)
    local: LocalPlane = dataclasses.field(default_factory=LocalPlane)
    dns: Dns = dataclasses.field(default_factory=Dns)
    kube: Kube = dataclasses.field(default_factory=Kube)
    lab: Lab = dataclasses.field(default_factory=Lab)

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
        )
        return cls(paths=paths, dns=dns, kube=kube, lab=lab)

    @property
    def external_cluster(self) -> bool:
        """True when the environment points at a cluster dnsrace did not start (e.g. kind)."""
        return self.kube.kubeconfig is not None
