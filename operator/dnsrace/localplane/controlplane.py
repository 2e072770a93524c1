"""The local control plane: etcd, kube-apiserver, kube-controller-manager, a DNS etcd and CoreDNS.

Used by ``dnsrace local up|down|status`` and by the test suite's session fixture. Every process
runs on loopback from the pinned binaries in the cache (``localplane.binaries``), with its data,
log and pid file under ``<state>/local``. ``up`` starts what is not running and waits for each
part's health with a timeout; ``down`` stops exactly the processes recorded in pid files.
"""

from __future__ import annotations

import base64
import dataclasses
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import yaml

from dnsrace import settings as settings_mod
from dnsrace.localplane import binaries as binaries_mod
from dnsrace.localplane import pki as pki_mod
from dnsrace.localplane import processes as processes_mod

Report = binaries_mod.Report

ORDER = ("etcd", "dns-etcd", "kube-apiserver", "kube-controller-manager", "coredns")
"""Start order; ``down`` goes in reverse."""


class PlaneError(RuntimeError):
    """The local plane could not be brought to the requested state; the message says why."""


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    healthy: bool
    detail: str
    pid: int | None
    log: str


@dataclasses.dataclass(frozen=True)
class PlaneStatus:
    components: list[ComponentStatus]
    kubeconfig: Path
    apiserver: str
    dns_server: str
    dns_etcd: str

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.components)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def dns_soa_ok(server: str, port: int, zone: str, timeout: float = 1.0) -> tuple[bool, str]:
    """Ask CoreDNS for the zone's SOA; healthy when it answers NOERROR."""
    query = dns.message.make_query(zone + ".", dns.rdatatype.SOA)
    try:
        answer = dns.query.udp(query, server, port=port, timeout=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        return False, f"no DNS answer: {exc.__class__.__name__}"
    rcode = dns.rcode.to_text(answer.rcode())
    return answer.rcode() == dns.rcode.NOERROR, f"SOA {zone}: {rcode}"


class LocalPlane:
    """One local control plane, identified by its state directory."""

    def __init__(self, cfg: settings_mod.Settings, report: Report | None = None) -> None:
        self.cfg = cfg
        self.report: Report = report or (lambda _msg: None)
        self.dir = cfg.paths.local_dir
        self.procs = processes_mod.Processes(self.dir)
        self.pki = pki_mod.Pki(self.dir / "pki")
        lp = cfg.local
        self.apiserver_url = f"https://{lp.host}:{lp.apiserver_port}"
        self.etcd_url = f"http://{lp.host}:{lp.etcd_client_port}"
        self.dns_etcd_url = f"http://{lp.host}:{lp.dns_etcd_client_port}"

    # -- configuration files ------------------------------------------------------------------

    def _kubeconfig(self, user: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "dnsrace-local",
                "cluster": {
                    "server": self.apiserver_url,
                    "certificate-authority-data": _b64(self.pki.ca_cert),
                },
            }],
            "users": [{
                "name": user,
                "user": {
                    "client-certificate-data": _b64(self.pki.cert(user)),
                    "client-key-data": _b64(self.pki.key(user)),
                },
            }],
            "contexts": [{
                "name": "dnsrace-local",
                "context": {"cluster": "dnsrace-local", "user": user,
                            "namespace": self.cfg.kube.namespace},
            }],
            "current-context": "dnsrace-local",
        }

    def _write_configs(self) -> None:
        lp = self.cfg.local
        service_ip = lp.service_cidr.split("/")[0].rsplit(".", 1)[0] + ".1"
        pki_mod.ensure(self.pki.directory, lp.host, service_ip)
        for user, path in (
            ("admin", self.cfg.paths.kubeconfig),
            ("controller-manager", self.dir / "controller-manager.kubeconfig"),
        ):
            path.write_text(yaml.safe_dump(self._kubeconfig(user), sort_keys=False))
            path.chmod(0o600)
        corefile = render_corefile(self.cfg, self.dns_etcd_url)
        path = self.dir / "Corefile"
        changed = path.exists() and path.read_text() != corefile
        path.write_text(corefile)
        if changed and self.procs.stop("coredns"):
            self.report("coredns: its Corefile changed; restarting it")

    # -- processes ----------------------------------------------------------------------------

    def _etcd_argv(self, bins: binaries_mod.Binaries, name: str, client: int, peer: int,
                   extra: list[str]) -> list[str]:
        host = self.cfg.local.host
        return [
            str(bins["etcd"]),
            f"--name={name}",
            f"--data-dir={self.dir / 'data' / name}",
            f"--listen-client-urls=http://{host}:{client}",
            f"--advertise-client-urls=http://{host}:{client}",
            f"--listen-peer-urls=http://{host}:{peer}",
            f"--initial-advertise-peer-urls=http://{host}:{peer}",
            f"--initial-cluster={name}=http://{host}:{peer}",
            "--log-level=warn",
            *extra,
        ]

    def argv(self, name: str, bins: binaries_mod.Binaries) -> list[str]:
        lp = self.cfg.local
        pki = self.pki
        if name == "etcd":
            return self._etcd_argv(bins, "etcd", lp.etcd_client_port, lp.etcd_peer_port, [])
        if name == "dns-etcd":
            return self._etcd_argv(
                bins, "dns-etcd", lp.dns_etcd_client_port, lp.dns_etcd_peer_port,
                ["--auto-compaction-mode=revision", "--auto-compaction-retention=10000"],
            )
        if name == "kube-apiserver":
            return [
                str(bins["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={lp.host}",
                f"--advertise-address={lp.host}",
                f"--secure-port={lp.apiserver_port}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki.sa_public}",
                f"--service-account-signing-key-file={pki.sa_private}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={lp.service_cidr}",
                # Endpoints may not hold loopback addresses, and nothing routes here anyway.
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=0",
            ]
        if name == "kube-controller-manager":
            cm_config = str(self.dir / "controller-manager.kubeconfig")
            return [
                str(bins["kube-controller-manager"]),
                f"--kubeconfig={cm_config}",
                f"--authentication-kubeconfig={cm_config}",
                f"--authorization-kubeconfig={cm_config}",
                f"--bind-address={lp.host}",
                f"--secure-port={lp.controller_manager_port}",
                f"--cert-dir={self.dir / 'controller-manager-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_private}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--v=0",
            ]
        if name == "coredns":
            return [str(bins["coredns"]), "-conf", str(self.dir / "Corefile")]
        raise KeyError(name)

    def _names(self) -> tuple[str, ...]:
        if self.cfg.local.run_controller_manager:
            return ORDER
        return tuple(n for n in ORDER if n != "kube-controller-manager")

    # -- health -------------------------------------------------------------------------------

    def _https_get(self, url: str, verify: bool = True) -> tuple[int, str]:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert)) if verify \
            else ssl._create_unverified_context()  # the controller manager's self-signed cert
        if verify:
            ctx.load_cert_chain(str(self.pki.cert("admin")), str(self.pki.key("admin")))
        try:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def health(self, name: str) -> tuple[bool, str]:
        """Whether the named part answers its health check, and what it said."""
        lp = self.cfg.local
        try:
            if name in ("etcd", "dns-etcd"):
                url = self.etcd_url if name == "etcd" else self.dns_etcd_url
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    body = resp.read().decode()
                return '"health":"true"' in body, body.strip()
            if name == "kube-apiserver":
                code, body = self._https_get(self.apiserver_url + "/readyz")
                return code == 200, f"/readyz {code}"
            if name == "kube-controller-manager":
                url = f"https://{lp.host}:{lp.controller_manager_port}/healthz"
                code, body = self._https_get(url, verify=False)
                return code == 200, f"/healthz {code}"
            if name == "coredns":
                return dns_soa_ok(lp.host, lp.coredns_port, self.cfg.dns.zone)
        except (OSError, ssl.SSLError) as exc:
            return False, f"unreachable: {exc}"
        raise KeyError(name)

    def _wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + self.cfg.local.start_timeout
        detail = ""
        while time.monotonic() < deadline:
            managed = self.procs.get(name)
            if managed is None or not managed.alive():
                raise PlaneError(
                    f"{name} exited during start; see its log {self.procs.log_path(name)}:\n"
                    + self._log_tail(name)
                )
            ok, detail = self.health(name)
            if ok:
                return
            time.sleep(0.2)
        raise PlaneError(
            f"{name} was not healthy after {self.cfg.local.start_timeout:.0f}s ({detail}); "
            f"see {self.procs.log_path(name)}:\n{self._log_tail(name)}"
        )

    def _log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.procs.log_path(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ----------------------------------------------------------------------------

    def start_component(self, name: str, bins: binaries_mod.Binaries | None = None) -> None:
        bins = bins or binaries_mod.locate(self.cfg)
        managed = self.procs.get(name)
        if managed is not None and managed.alive():
            ok, _ = self.health(name)
            if ok:
                self.report(f"{name}: already running (pid {managed.pid})")
                return
        started = time.monotonic()
        managed = self.procs.start(name, self.argv(name, bins), cwd=self.dir)
        self._wait_healthy(name)
        self.report(f"{name}: healthy in {time.monotonic() - started:.1f}s (pid {managed.pid})")

    def stop_component(self, name: str) -> bool:
        return self.procs.stop(name)

    def up(self, bins: binaries_mod.Binaries | None = None) -> PlaneStatus:
        """Start every part that is not running, wait for health, and install the CRDs."""
        self.dir.mkdir(parents=True, exist_ok=True)
        bins = bins or binaries_mod.ensure_all(self.cfg, self.report)
        self._write_configs()
        for name in self._names():
            try:
                self.start_component(name, bins)
            except PlaneError:
                self.report(f"{name}: failed to start; the rest stay up for inspection "
                            "until `make local-down`")
                raise
        self.install_crds(bins)
        return self.status()

    def kubectl(self, *args: str, bins: binaries_mod.Binaries | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        bins = bins or binaries_mod.locate(self.cfg)
        argv = [str(bins["kubectl"]), f"--kubeconfig={self.cfg.kubeconfig}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise PlaneError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def install_crds(self, bins: binaries_mod.Binaries) -> None:
        """Apply the CRDs and the lab namespace, and wait until the CRDs are served."""
        crds = self.cfg.paths.manifests_dir / "crds"
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds), bins=bins)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "-f", str(crds), bins=bins)
        # Established is not served yet: the new resources' storage may still answer 429
        # "storage is (re)initializing", so wait until they can be listed.
        kinds = ",".join(p.stem.split(".", 1)[0] for p in sorted(crds.glob("*.yaml")))
        if not wait_until(lambda: self.kubectl("get", kinds, "-A", bins=bins,
                                               check=False).returncode == 0, timeout=60):
            raise PlaneError(f"the CRDs ({kinds}) were established but never served a list")
        ns = self.cfg.kube.namespace
        if self.kubectl("get", "namespace", ns, bins=bins, check=False).returncode != 0:
            self.kubectl("create", "namespace", ns, bins=bins)
        self.report(f"CRDs from {crds} established; namespace {ns} ready")

    def down(self) -> list[str]:
        """Stop every process this plane started; return the names that were running."""
        stopped = []
        for name in reversed(ORDER):
            if self.procs.stop(name):
                stopped.append(name)
                self.report(f"{name}: stopped")
        return stopped

    def status(self) -> PlaneStatus:
        components = []
        for name in self._names():
            managed = self.procs.get(name)
            running = managed is not None and managed.alive()
            healthy, detail = self.health(name) if running else (False, "not running")
            components.append(ComponentStatus(
                name=name, running=running, healthy=healthy, detail=detail,
                pid=managed.pid if managed and running else None,
                log=str(self.procs.log_path(name)),
            ))
        lp = self.cfg.local
        return PlaneStatus(
            components=components,
            kubeconfig=self.cfg.paths.kubeconfig,
            apiserver=self.apiserver_url,
            dns_server=f"{lp.host}:{lp.coredns_port}",
            dns_etcd=f"{lp.host}:{lp.dns_etcd_client_port}",
        )

    def env(self) -> dict[str, str]:
        """The variables that point tests and components at this plane."""
        st = self.status()
        return {
            "DNSRACE_KUBECONFIG": str(st.kubeconfig),
            "DNSRACE_DNS_SERVER": st.dns_server,
            "DNSRACE_DNS_ETCD": st.dns_etcd,
        }



def render_corefile(cfg: settings_mod.Settings, dns_etcd_url: str) -> str:
    """The local plane's Corefile: the lab zone from the DNS etcd, on the plain port and on the
    serve-stale safeguard's port (the chart's CoreDNS ConfigMap has the same two blocks)."""
    lp, dns = cfg.local, cfg.dns

    def block(port: int, stale: str, extra: str) -> str:
        return f"""\
{dns.zone}:{port} {{
    bind {lp.host}
    errors
    etcd {dns.zone} {{
        path /skydns
        endpoint {dns_etcd_url}
    }}
    cache {dns.cache_ttl} {{
        success 9984 {dns.cache_ttl} 1
        denial 9984 {dns.cache_ttl} 1{stale}
    }}
    prometheus {lp.host}:{lp.coredns_metrics_port}{extra}
}}
"""

    return (
        "# Generated by dnsrace local up: the lab zone, served from the DNS etcd.\n"
        "# Answers are cached for their own TTL, at most cache_ttl, at least 1 s (the\n"
        "# plugin's default floor is 5 s, which would hide short lab TTLs); negatives too.\n"
        + block(lp.coredns_port, "", f"\n    ready {lp.host}:{lp.coredns_ready_port}")
        + "# The serve-stale safeguard's port: when the DNS etcd fails (SERVFAIL or no\n"
        "# answer within 200 ms) the last answer is served for up to an hour; an answer the\n"
        "# store does give, NXDOMAIN for a deleted record included, replaces it at once.\n"
        + block(lp.coredns_stale_port, "\n        serve_stale 1h verify 200ms", "")
    )

def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
