"""The chart's DynamoDB data path (``ddb.enabled``), rendered without a cluster: DynamoDB Local
from its upstream image, the ddb-client Deployment with its own token-less ServiceAccount, the
LB nodes told where the backend is, locked-down pods, and the schema refusing bad limits. The
server-side dry run of the same render is in tests/integration/test_ddb_chart.py."""

from __future__ import annotations

import pytest

from dnsrace.components import lbnode
from dnsrace.localplane import dynamodb
from tests.packaging_support import by_kind, container_env, pod_specs, refusal, render

ENABLED = ("--set", "ddb.enabled=true")


def test_default_render_has_no_data_path() -> None:
    objs = render()
    assert "ddb-client" not in pod_specs(objs)
    assert "DNSRACE_DDB_BACKEND" not in container_env(pod_specs(objs)["lbnode"])


def test_enabled_render_has_backend_client_and_accounts() -> None:
    objs = render(*ENABLED, "--set", "ddb.lbCapacity=7", "--set", "ddb.client.workers=3")
    specs = pod_specs(objs)
    assert {"ddb-client", "dynamodb-local"} <= specs.keys()
    assert {"ddb-client", "dynamodb-local"} <= by_kind(objs, "ServiceAccount").keys()
    assert "dynamodb-local" in by_kind(objs, "Service")

    backend = specs["dynamodb-local"]
    (java,) = backend["containers"]
    assert java["image"] == f"amazon/dynamodb-local:{dynamodb.VERSION}", \
        "the image and the local fetch run the same release"
    assert {"-inMemory", "-disableTelemetry"} <= set(java["args"])
    assert backend["automountServiceAccountToken"] is False

    client = specs["ddb-client"]
    assert client["serviceAccountName"] == "ddb-client"
    assert client["automountServiceAccountToken"] is False
    assert client["containers"][0]["args"][0] == "ddb-client"
    assert container_env(client)["DNSRACE_DDB_WORKERS"] == "3"
    assert "DNSRACE_DNS_ETCD" not in container_env(client), \
        "clients only resolve, never write records"

    lb_env = container_env(specs["lbnode"])
    assert lb_env["DNSRACE_DDB_BACKEND"] == "dynamodb-local.dnsrace.svc.cluster.local:8000"
    assert lb_env["DNSRACE_LB_CAPACITY"] == "7"
    assert specs["lbnode"]["containers"][0]["args"] == \
        ["lbnode", "--name", "$(DNSRACE_POD_NAME)"]
    assert lbnode.PORT == 8080, "clients reach the LB nodes on the port the chart exposes"

    policies = by_kind(objs, "NetworkPolicy")
    backend_from = policies["dynamodb-local-clients"]["spec"]["ingress"][0]["from"]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for f in backend_from] == ["lbnode"], "only the front door reaches the backend"


@pytest.mark.parametrize("name", ["ddb-client", "dynamodb-local"])
def test_data_path_pods_are_locked_down(name: str) -> None:
    spec = pod_specs(render(*ENABLED))[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert c["livenessProbe"]
        assert c["readinessProbe"]
        assert c["resources"]["limits"]["memory"]


def test_client_subcommand_exists() -> None:
    import typer.main

    from dnsrace.cli import app as cli_app

    commands = set(getattr(typer.main.get_command(cli_app.app), "commands", {}))
    assert "ddb-client" in commands


@pytest.mark.parametrize(("args", "complaint"), [
    (["--set", "ddb.lbCapacity=0"], "lbCapacity"),
    (["--set", "ddb.lbWaitSeconds=-1"], "lbWaitSeconds"),
    (["--set", "ddb.client.workers=0"], "workers"),
])
def test_schema_rejects_bad_limits(args: list[str], complaint: str) -> None:
    err = refusal(*ENABLED, *args)
    assert complaint in err, err
