"""The Helm chart, the rendered manifests, the Dockerfile and the CI workflow, checked without a
cluster: helm lint, values schema, what each component's pod must look like, the copies that
must stay in step, hadolint and actionlint. The cluster-side checks are in
tests/integration/test_packaging.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from dnsrace import settings as settings_mod
from dnsrace.localplane import packaging
from tests.packaging_support import (
    FIXTURES,
    LAYOUT,
    ROOT,
    by_kind,
    container_env,
    helm_lint,
    packaging_tools,
    pod_specs,
    refusal,
    render,
)

DNSRACE_WORKLOADS = {"planner", "enactor-a", "enactor-b", "enactor-c", "prober", "lbnode"}


def test_helm_lint_strict_passes() -> None:
    out = helm_lint()
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_render_has_every_part() -> None:
    objs = render()
    workloads = pod_specs(objs)
    assert set(workloads) == DNSRACE_WORKLOADS | {"dnsrace-coredns", "dns-etcd"}
    assert set(by_kind(objs, "Service")) == {"dynamodb-lb", "dnsrace-coredns", "dns-etcd"}
    assert set(by_kind(objs, "ServiceAccount")) == {
        "planner", "enactor-a", "enactor-b", "enactor-c", "prober", "lbnode",
        "dnsrace-coredns", "dns-etcd",
    }
    # The planner reads the EndpointSlices of dynamodb-lb: its selector must pick the LB nodes.
    lb = by_kind(objs, "Service")["dynamodb-lb"]
    assert lb["spec"]["selector"]["app.kubernetes.io/component"] == "lbnode"
    sts = by_kind(objs, "StatefulSet")["lbnode"]
    assert lb["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    assert not by_kind(objs, "Fault")


@pytest.mark.parametrize("name", sorted(DNSRACE_WORKLOADS | {"dnsrace-coredns", "dns-etcd"}))
def test_every_pod_is_locked_down(name: str) -> None:
    spec = pod_specs(render())[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert set(sc["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, name
        assert c["livenessProbe"], name
        assert c["readinessProbe"], name
        assert c["resources"]["requests"]["memory"], name
        assert c["resources"]["limits"]["memory"], name


def test_components_run_the_cli_contract() -> None:
    """Each dnsrace pod runs one subcommand of the image's `dnsrace`, with the env contract."""
    specs = pod_specs(render())
    for name in DNSRACE_WORKLOADS:
        (c,) = specs[name]["containers"]
        env = container_env(specs[name])
        assert {"DNSRACE_NAMESPACE", "DNSRACE_DNS_SERVER", "DNSRACE_SAFEGUARDS",
                "DNSRACE_HTTP_PORT"} <= env.keys()
        assert "DNSRACE_KUBECONFIG" not in env, "in-cluster: the service account is used"
        assert env["DNSRACE_HTTP_PORT"] == "8080"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        # Only Enactors are told where the DNS etcd is (and only they may reach it).
        assert ("DNSRACE_DNS_ETCD" in env) == name.startswith("enactor-"), name
    assert specs["enactor-b"]["containers"][0]["args"] == ["enactor", "--name", "enactor-b"]
    assert specs["lbnode"]["containers"][0]["args"] == ["lbnode", "--name", "$(DNSRACE_POD_NAME)"]
    assert specs["lbnode"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"
    assert specs["planner"]["containers"][0]["args"] == ["planner"]
    # Components without API access carry no token at all.
    assert specs["prober"]["automountServiceAccountToken"] is False
    assert specs["lbnode"]["automountServiceAccountToken"] is False
    assert specs["enactor-a"]["serviceAccountName"] == "enactor-a"


def test_subcommands_exist_in_the_cli() -> None:
    """The args the manifests run are commands the image's `dnsrace` really has."""
    import typer.main

    from dnsrace.cli import app as cli_app

    group = typer.main.get_command(cli_app.app)
    commands = set(getattr(group, "commands", {}))
    wanted = {pod["containers"][0]["args"][0] for name, pod in pod_specs(render()).items()
              if name in DNSRACE_WORKLOADS}
    assert wanted <= commands, f"manifests run {sorted(wanted - commands)}, not in the CLI"


def test_non_default_values_render() -> None:
    objs = render(
        "--set", "enactors.count=5", "--set-json", 'safeguards="fencing,no-empty"',
        "--set", "lbnodes.replicas=4", "--set", "networkPolicies.enabled=false",
        "--set", "dnsEtcd.persistence.enabled=false", "--set", "coredns.service.type=NodePort",
        "--set", "coredns.service.nodePort=30053", "--set", "image.tag=abc123",
        "--set", "dns.cacheTTL=2",
        "--set-json", 'faults=[{"name":"slow-a","spec":{"target":"enactor-a","action":"delay",'
                      '"step":"endpoint-write","delaySeconds":2}}]',
    )
    specs = pod_specs(objs)
    assert {f"enactor-{x}" for x in "abcde"} <= specs.keys()
    binding = by_kind(objs, "RoleBinding")["dnsrace-enactor"]
    assert [s["name"] for s in binding["subjects"]] == [f"enactor-{x}" for x in "abcde"]
    env = {e["name"]: e.get("value") for e in specs["enactor-e"]["containers"][0]["env"]}
    assert env["DNSRACE_SAFEGUARDS"] == "fencing,no-empty"
    assert specs["planner"]["containers"][0]["image"] == "dnsrace:abc123"
    assert by_kind(objs, "StatefulSet")["lbnode"]["spec"]["replicas"] == 4
    assert not by_kind(objs, "NetworkPolicy")
    etcd = by_kind(objs, "StatefulSet")["dns-etcd"]["spec"]
    assert "volumeClaimTemplates" not in etcd
    assert etcd["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    svc = by_kind(objs, "Service")["dnsrace-coredns"]["spec"]
    assert svc["type"] == "NodePort"
    assert {p["nodePort"] for p in svc["ports"] if p["name"].startswith("dns")} == {30053}
    assert "cache 2 {" in by_kind(objs, "ConfigMap")["dnsrace-coredns"]["data"]["Corefile"]
    fault = by_kind(objs, "Fault")["slow-a"]
    assert fault["spec"]["delaySeconds"] == 2
    assert fault["metadata"]["namespace"] == packaging.NAMESPACE


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "enactors.count=0"], "/enactors/count"),
        (["--set", "enactors.count=27"], "/enactors/count"),
        (["--set-json", 'safeguards="fencing,bogus"'], "safeguards"),
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "unknownKey=1"], "unknownKey"),
        (["--set", "coredns.service.nodePort=53"], "nodePort"),
        (["--set", "planner.resources.limits.memory=lots"], "memory"),
        (["--set-json", 'faults=[{"name":"x","spec":{"target":"enactor-1","action":"delay"}}]'],
         "target"),
    ],
)
def test_schema_rejects_bad_values(args: list[str], complaint: str) -> None:
    err = refusal(*args)
    assert "schema" in err, err
    assert complaint in err, err


def test_corefile_matches_the_local_plane() -> None:
    """Same zone, path and cache bounds as the local plane's Corefile: both modes answer alike."""
    corefile = by_kind(render(), "ConfigMap")["dnsrace-coredns"]["data"]["Corefile"]
    dns = settings_mod.Dns()
    assert corefile.startswith(f"{dns.zone}:53 {{")
    assert "path /skydns" in corefile
    assert f"cache {dns.cache_ttl} {{" in corefile
    assert f"success 9984 {dns.cache_ttl} 1" in corefile
    assert f"denial 9984 {dns.cache_ttl} 1" in corefile
    assert "endpoint http://dns-etcd.dnsrace.svc.cluster.local:2379" in corefile
    for plugin in ("prometheus :9153", "ready :8181", "health :8080"):
        assert plugin in corefile


def test_upstream_images_match_the_pinned_versions() -> None:
    specs = pod_specs(render())
    v = settings_mod.Versions()
    assert specs["dnsrace-coredns"]["containers"][0]["image"] == \
        f"coredns/coredns:{v.coredns.lstrip('v')}"
    assert specs["dns-etcd"]["containers"][0]["image"].endswith(f"/etcd:{v.etcd}")


def test_chart_crds_are_copies_of_manifests_crds() -> None:
    assert packaging.crd_drift(LAYOUT) == [], "run `make manifests`"
    assert sorted(p.name for p in LAYOUT.chart_crds.glob("*.yaml")) == [
        "dnsplans.dnsrace.io.yaml", "faults.dnsrace.io.yaml", "instances.dnsrace.io.yaml"]


def test_manifests_base_is_the_rendered_chart() -> None:
    expected = packaging.render_base(packaging_tools()["helm"], LAYOUT)
    assert LAYOUT.base_file.read_text() == expected, "manifests/base is stale: run `make manifests`"
    # Plain manifests: no Helm bookkeeping labels.
    assert "helm.sh/chart" not in expected
    assert "managed-by: Helm" not in expected


def test_values_schema_is_strict_json_schema() -> None:
    schema: dict[str, Any] = json.loads((LAYOUT.chart / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((LAYOUT.chart / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_dockerfile_passes_hadolint() -> None:
    hadolint = packaging_tools()["hadolint"]
    out = subprocess.run([str(hadolint), str(ROOT / "operator" / "Dockerfile")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile() -> None:
    out = subprocess.run([str(packaging_tools()["hadolint"]), str(FIXTURES / "bad.Dockerfile")],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode != 0
    assert "DL3007" in out.stdout, out.stdout
    assert "bad.Dockerfile" in out.stdout, out.stdout


def test_dockerfile_shape() -> None:
    """Multi-stage, frozen lock, non-root numeric user, tini, no HEALTHCHECK in the final stage."""
    text = (ROOT / "operator" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    assert len(stages) == 2, "a builder stage and a final stage"
    builder, final = stages
    assert "uv sync --frozen --no-dev --no-editable" in builder
    assert not re.search(r"^HEALTHCHECK", text, flags=re.M)
    assert re.search(r"^USER 10001:10001$", final, flags=re.M)
    assert 'ENTRYPOINT ["/usr/bin/tini", "--", "dnsrace"]' in final
    assert "uv sync" not in final
    assert "pip install" not in final
    for tool in ("gcc", "build-essential", "git "):
        assert tool not in final


def test_workflow_passes_actionlint() -> None:
    out = subprocess.run([str(packaging_tools()["actionlint"]), "-no-color",
                          str(ROOT / ".github" / "workflows" / "e2e.yml")],
                         capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow() -> None:
    out = subprocess.run([str(packaging_tools()["actionlint"]), "-no-color",
                          str(FIXTURES / "broken-workflow.yml")],
                         capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)
    assert out.returncode != 0
    assert "broken-workflow.yml" in out.stdout, out.stdout
