"""The scenario runner's cluster mode (kind): components are Deployments it configures and
scales. Checked on the real API server and controller manager with zero replicas, which roll out
without a kubelet: the env patch lands in the named container, and the rollout wait returns."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from dnsrace import settings as settings_mod
from dnsrace.components.scenarios import lab as lab_mod
from dnsrace.core.safeguards import Safeguards
from tests.conftest import Cluster, local_only

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: enactor-a}
spec:
  replicas: 1
  selector: {matchLabels: {app: enactor-a}}
  template:
    metadata: {labels: {app: enactor-a}}
    spec:
      containers:
        - name: enactor
          image: dnsrace:0.1.0
          env:
            - {name: DNSRACE_SAFEGUARDS, value: "off"}
            - {name: DNSRACE_NAMESPACE, value: dnsrace}
"""


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"dnsrace-driver-{uuid.uuid4().hex[:6]}"
    assert cluster.kubectl("create", "namespace", ns).returncode == 0
    applied = cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=DEPLOYMENT)
    assert applied.returncode == 0, applied.stderr
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


async def test_cluster_mode_configures_and_scales_a_deployment(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # A kubeconfig of its own path, as kind's is: the lab then drives Deployments (the local
    # plane's own kubeconfig would mean local mode).
    kubeconfig = tmp_path / "external-kubeconfig"
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    cfg = dataclasses.replace(
        cluster.cfg, kube=dataclasses.replace(cluster.cfg.kube, namespace=namespace,
                                              kubeconfig=kubeconfig))
    params = lab_mod.LabParams(safeguards=Safeguards.parse("fencing,no-empty"), keep=4)
    async with lab_mod.Lab(cfg, params, tmp_path, print) as lab:
        assert lab.cluster
        await lab._scale("enactor-a", 0, configure=True)
        dep = await client.AppsV1Api(lab.api).read_namespaced_deployment("enactor-a", namespace)
    assert dep.spec.replicas == 0
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["DNSRACE_SAFEGUARDS"] == "fencing,no-empty"
    assert env["DNSRACE_KEEP"] == "4"
    assert env["DNSRACE_NAMESPACE"] == "dnsrace", "other variables are kept"
    assert dep.status.observed_generation >= dep.metadata.generation


@local_only
def test_the_readme_local_env_sequence_stays_local(cluster: Cluster) -> None:
    """README: `eval "$(.venv/bin/dnsrace local env)"`, then a scenario: still the local plane,
    not an external cluster (which would wait for LB nodes the chart runs)."""
    assert cluster.plane is not None
    out = subprocess.run([sys.executable, "-m", "dnsrace", "local", "env"],
                         capture_output=True, text=True, timeout=60, check=True)
    exported = dict(line.removeprefix("export ").split("=", 1)
                    for line in out.stdout.splitlines() if line.startswith("export "))
    assert set(exported) >= {"DNSRACE_KUBECONFIG", "DNSRACE_DNS_SERVER", "DNSRACE_DNS_ETCD"}
    cfg = settings_mod.Settings.from_env({**os.environ, **exported})
    assert not cfg.external_cluster
    assert cfg.kubeconfig.resolve() == cluster.plane.cfg.paths.kubeconfig.resolve()
