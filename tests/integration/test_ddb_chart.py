"""The chart with the DynamoDB data path on (``ddb.enabled``) is accepted by the real API server:
``--dry-run=server`` with strict field validation in a namespace enforcing Pod Security
"restricted", as tests/integration/test_packaging.py does for the default render."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from dnsrace.localplane import packaging
from tests.conftest import Cluster
from tests.packaging_support import helm_template

NS = f"dnsrace-ddb-pkg-{os.getpid()}"


@pytest.fixture(scope="module")
def restricted_ns(cluster: Cluster) -> Iterator[str]:
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted"}}}
    out = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    assert out.returncode == 0, out.stderr
    yield NS
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def test_data_path_render_is_accepted_by_the_server(cluster: Cluster, restricted_ns: str) -> None:
    out = helm_template("--set", "ddb.enabled=true", "--set", "ddb.client.replicas=2",
                        namespace=restricted_ns)
    assert out.returncode == 0, out.stderr
    problems = packaging.dry_run_server(cluster.kubectl_path, cluster.kubeconfig,
                                        {"helm template (ddb.enabled)": out.stdout},
                                        restricted_ns)
    assert problems == []
