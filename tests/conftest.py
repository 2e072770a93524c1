"""Shared fixtures: the cluster the integration and e2e tests run against.

The suite is cluster-agnostic. With ``DNSRACE_KUBECONFIG`` (and ``DNSRACE_DNS_SERVER``,
``DNSRACE_DNS_ETCD``) set, it uses that cluster as it is, e.g. kind. Otherwise it uses the local
control plane: reused when already healthy, else started for the session and stopped after it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dnsrace import settings as settings_mod
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.kube import client as kube_client
from dnsrace.localplane import binaries, controlplane

local_only = pytest.mark.skipif(
    settings_mod.Settings.from_env().external_cluster,
    reason="stops or restarts a control-plane process, which only the local plane allows",
)
"""For tests that stop processes; they run whenever the suite runs on the local plane (CI)."""


@dataclasses.dataclass
class Cluster:
    cfg: settings_mod.Settings
    kubeconfig: Path
    kubectl_path: Path
    plane: controlplane.LocalPlane | None
    """None when the suite runs against a cluster it did not start."""

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin, capture_output=True, text=True, timeout=120, check=False,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    cfg = settings_mod.Settings.from_env()
    if cfg.external_cluster:
        kubectl = os.environ.get("KUBECTL", "kubectl")
        yield Cluster(cfg, cfg.kubeconfig,
                      Path(kubectl), None)
        return
    plane = controlplane.LocalPlane(cfg, report=lambda m: print(f"[local plane] {m}"))
    started_here = not plane.status().healthy
    if started_here:
        plane.up()
    else:
        plane.install_crds(binaries.locate(cfg))
    try:
        yield Cluster(cfg, cfg.kubeconfig, binaries.locate(cfg)["kubectl"], plane)
    finally:
        if started_here and not os.environ.get("DNSRACE_KEEP_PLANE"):
            plane.down()


@pytest.fixture(scope="session")
async def api(cluster: Cluster) -> AsyncIterator[object]:
    api_client = await kube_client.api_client(cluster.kubeconfig)
    try:
        yield api_client
    finally:
        await api_client.close()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted after it. DnsPlans left with finalizers (their
    enactors are stopped by then) get them taken off first, so the namespace can go."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    ns = f"dnsrace-{module.replace('_', '-')[:24]}-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", ns).returncode == 0
    yield ns
    for name in cluster.kubectl("-n", ns, "get", "dnsplans", "-o", "name").stdout.split():
        cluster.kubectl("-n", ns, "patch", name, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}')
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.fixture
async def dns_store(cluster: Cluster) -> AsyncIterator[etcd_store.EtcdRecordStore]:
    store = etcd_store.EtcdRecordStore.from_endpoint(cluster.cfg.dns.etcd_endpoint)
    try:
        yield store
    finally:
        await store.close()
