"""The chart's cascade (``cascade.enabled``, docs/cascade.md), rendered without a cluster: one
Deployment, ServiceAccount and (but for DWFM) Role per component; the Roles granting exactly the
API calls the components' code makes (read from the code, not listed by hand); the args each pod
runs parsed by the real CLI; the values' defaults equal to the components' own; the Services and
NetworkPolicies that wire the launcher to DWFM and the Network Manager and the NLB to the
instances. The server-side dry run and the ``kubectl auth can-i`` table of the same render are
in tests/integration/test_packaging.py."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import typer.main
import yaml

from dnsrace.cli import app as cli_app
from dnsrace.core import instances, safeguards
from tests.packaging_support import (
    LAYOUT,
    ROOT,
    by_kind,
    container_env,
    helm_lint,
    pod_specs,
    refusal,
    render,
)

ON = ("--set", "ddb.enabled=true", "--set", "cascade.enabled=true")
CASCADE = ("dwfm", "launcher", "network-manager", "instances", "nlb")
VALUES_KEY = {"dwfm": "dwfm", "launcher": "launcher", "network-manager": "networkManager",
              "instances": "instances", "nlb": "nlb"}
COMPONENTS = ROOT / "operator" / "dnsrace" / "components"
MODULES = {
    "dwfm": ("dwfm.py", "leasestore.py"),
    "launcher": ("launcher.py", "launchleases.py", "launchwriter.py"),
    "network-manager": ("netmanager.py", "instancewatch.py"),
    "instances": ("instancehost.py", "instancewatch.py"),
    "nlb": ("nlbctl.py",),
}
"""The modules each component's process runs that could call the API server."""


def _args(spec: dict[str, Any]) -> list[str]:
    args: list[str] = spec["containers"][0]["args"]
    return args


def _option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.fixture(scope="module")
def objs() -> list[dict[str, Any]]:
    return render(*ON)


def test_off_by_default_and_the_default_render_is_unchanged() -> None:
    objs = render()
    assert not set(CASCADE) & pod_specs(objs).keys()
    assert not set(CASCADE) & by_kind(objs, "ServiceAccount").keys()
    assert not {"dwfm", "network-manager", "instances"} & by_kind(objs, "Service").keys()
    assert not {f"dnsrace-{c}" for c in CASCADE} & by_kind(objs, "Role").keys()
    assert "instances-from-nlb" not in by_kind(objs, "NetworkPolicy")


def test_helm_lint_strict_passes_with_the_cascade() -> None:
    out = helm_lint(*ON)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cascade_needs_the_data_path() -> None:
    err = refusal("--set", "cascade.enabled=true")
    assert "cascade.enabled needs ddb.enabled" in err, err


def test_one_deployment_and_account_per_component(objs: list[dict[str, Any]]) -> None:
    deployments = by_kind(objs, "Deployment")
    accounts = by_kind(objs, "ServiceAccount")
    specs = pod_specs(objs)
    for name in CASCADE:
        d = deployments[name]["spec"]
        assert d["replicas"] == 1, name
        assert d["strategy"] == {"type": "Recreate"}, name
        assert d["selector"]["matchLabels"]["app.kubernetes.io/component"] == name
        assert specs[name]["serviceAccountName"] == name
        (c,) = specs[name]["containers"]
        assert _args(specs[name])[0] == name, "each pod runs `dnsrace <its component>`"
        env = container_env(specs[name])
        assert env["DNSRACE_HTTP_PORT"] == "8080"
        assert env["DNSRACE_SAFEGUARDS"] == "off"
        assert "DNSRACE_KUBECONFIG" not in env, "in-cluster: the service account is used"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
        # Only the NLB writes to the DNS etcd (its own record).
        assert ("DNSRACE_DNS_ETCD" in env) == (name == "nlb"), name
        # Figures go to the only writable path.
        if name != "instances":
            assert _option(_args(specs[name]), "--out").startswith("/tmp/"), name
    # DWFM talks to DynamoDB, not to the API server: no token at all.
    assert specs["dwfm"]["automountServiceAccountToken"] is False
    assert accounts["dwfm"]["automountServiceAccountToken"] is False
    for name in CASCADE[1:]:
        assert specs[name]["automountServiceAccountToken"] is True, name
    assert "dnsrace-dwfm" not in by_kind(objs, "Role")


@pytest.mark.parametrize("name", CASCADE)
def test_cascade_pods_are_locked_down(objs: list[dict[str, Any]], name: str) -> None:
    spec = pod_specs(objs)[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_the_launcher_and_the_nlb_reach_the_others(objs: list[dict[str, Any]]) -> None:
    specs = pod_specs(objs)
    services = by_kind(objs, "Service")
    launcher = _args(specs["launcher"])
    assert _option(launcher, "--dwfm-url") == "http://dwfm.dnsrace.svc.cluster.local:8080"
    assert _option(launcher, "--admit-url") == \
        "http://network-manager.dnsrace.svc.cluster.local:8080/admit"
    # kind: one pod hosts every instance, one port each, behind a headless Service's name.
    assert _option(launcher, "--endpoints") == instances.PORT
    assert _option(launcher, "--endpoint-host") == "instances.dnsrace.svc.cluster.local"
    assert _option(launcher, "--endpoint-base") == str(instances.PORT_BASE)
    assert "--bind-all" in _args(specs["instances"])
    for name in ("dwfm", "network-manager", "instances"):
        svc = services[name]["spec"]
        assert svc["selector"]["app.kubernetes.io/component"] == name
        assert svc["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                 "protocol": "TCP"}]
        labels = by_kind(objs, "Deployment")[name]["spec"]["template"]["metadata"]["labels"]
        assert svc["selector"].items() <= labels.items(), name
    assert services["instances"]["spec"]["clusterIP"] == "None"
    assert services["instances"]["spec"]["publishNotReadyAddresses"] is True
    assert services["dwfm"]["spec"]["type"] == "ClusterIP"


def test_the_args_are_options_the_cli_has(objs: list[dict[str, Any]]) -> None:
    """Each cascade pod's args parse with the image's own `dnsrace` (types included)."""
    group = typer.main.get_command(cli_app.app)
    commands: dict[str, click.Command] = getattr(group, "commands", {})
    for name in CASCADE:
        args = _args(pod_specs(objs)[name])
        command = commands[args[0]]
        with command.make_context(args[0], list(args[1:])) as ctx:
            assert ctx.params, name
        if isinstance(command, click.Group):
            assert ctx.protected_args == [], f"{name}: no subcommand"
            assert ctx.args == [], f"{name}: no subcommand"


def _cli_defaults(command: str) -> dict[str, Any]:
    group = typer.main.get_command(cli_app.app)
    cmd: click.Command = getattr(group, "commands", {})[command]
    return {p.name: p.default for p in cmd.params if p.name}


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def test_values_defaults_are_the_components_defaults() -> None:
    """The chart passes every option explicitly; its defaults must be the commands' own, so that
    the chart runs the cascade docs/cascade.md measured."""
    values = yaml.safe_load((LAYOUT.chart / "values.yaml").read_text())["cascade"]
    assert values["enabled"] is False
    special = {("instances", "portBase"): instances.PORT_BASE,
               ("nlb", "name"): None, ("launcher", "patience"): None}
    for name in CASCADE:
        defaults = _cli_defaults(name)
        for key, value in values[VALUES_KEY[name]].items():
            if key == "resources":
                continue
            expected = special.get((VALUES_KEY[name], key), defaults.get(_snake(key), KeyError))
            got = None if value == "" else value
            assert got == expected, f"cascade.{VALUES_KEY[name]}.{key}: {value!r}, the " \
                                    f"command's default is {expected!r}"
    assert _cli_defaults("launcher")["endpoint_base"] == instances.PORT_BASE


def test_changed_values_reach_the_args() -> None:
    objs = render(*ON, "--set", "cascade.dwfm.droplets=50",
                  "--set", "cascade.dwfm.provision=false",
                  "--set", "cascade.launcher.patience=120",
                  "--set-json", "cascade.launcher.rate=2.5",
                  "--set", "cascade.instances.portBase=30000",
                  "--set", "cascade.nlb.name=web.us-east-1.sim.internal",
                  "--set-json", "cascade.nlb.failoverShare=0.25",
                  "--set-json", 'safeguards="dwfm-throttle,propagation-throttle,velocity-control"')
    specs = pod_specs(objs)
    assert _option(_args(specs["dwfm"]), "--droplets") == "50"
    assert "--no-provision" in _args(specs["dwfm"])
    assert _option(_args(specs["launcher"]), "--patience") == "120"
    assert _option(_args(specs["launcher"]), "--rate") == "2.5"
    assert _option(_args(specs["launcher"]), "--endpoint-base") == "30000"
    assert _option(_args(specs["nlb"]), "--name") == "web.us-east-1.sim.internal"
    assert _option(_args(specs["nlb"]), "--failover-share") == "0.25"
    for name in CASCADE:
        assert container_env(specs[name])["DNSRACE_SAFEGUARDS"] == \
            "dwfm-throttle,propagation-throttle,velocity-control"
    (rule,) = by_kind(objs, "NetworkPolicy")["instances-from-nlb"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": 30000, "endPort": 49999, "protocol": "TCP"}]
    # Defaults leave the optional flags out.
    default = pod_specs(render(*ON))
    assert "--patience" not in _args(default["launcher"])
    assert "--name" not in _args(default["nlb"])
    assert "--no-provision" not in _args(default["dwfm"])


# -- least privilege, from the code ------------------------------------------------------------

CUSTOM_OBJECT_CALLS = {
    "create_namespaced_custom_object": ("instances", "create"),
    "list_namespaced_custom_object": ("instances", "list"),
    "patch_namespaced_custom_object_status": ("instances/status", "patch"),
    "delete_namespaced_custom_object": ("instances", "delete"),
}
"""kubernetes_asyncio's CustomObjectsApi methods the components call, as (resource, verb); the
custom objects are Instances (checked below). A watch is ``Watch.stream`` over the list."""
API_METHOD = re.compile(
    r"^(create|list|patch|read|replace|delete|get|watch|connect)_(namespaced_|cluster_)?\w+$")


def _calls(module: Path) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every API call in ``module``; an API method the table
    above does not know fails the test (extend the table and the Role together)."""
    tree = ast.parse(module.read_text(), str(module))
    found: set[tuple[str, str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method == "stream" and node.args and isinstance(node.args[0], ast.Attribute):
                assert node.args[0].attr == "list_namespaced_custom_object", ast.unparse(node)
                found.add(("dnsrace.io", "instances", "watch"))
            elif method in CUSTOM_OBJECT_CALLS:
                resource, verb = CUSTOM_OBJECT_CALLS[method]
                found.add(("dnsrace.io", resource, verb))
            elif method == "post_event":  # kube.reporting: CoreV1Api.create_namespaced_event
                found.add(("", "events", "create"))
            else:
                assert not (API_METHOD.match(method) and "namespaced" in method), \
                    f"{module.name}: {ast.unparse(node.func)} is not in CUSTOM_OBJECT_CALLS"
    if any(g == "dnsrace.io" for g, _, _ in found):
        assert "instances.PLURAL" in module.read_text(), f"{module.name}: not Instances?"
    return found


def test_post_event_is_one_core_v1_create() -> None:
    text = (ROOT / "operator" / "dnsrace" / "kube" / "reporting.py").read_text()
    body = text[text.index("async def post_event"):]
    assert "CoreV1Api(api).create_namespaced_event(" in body
    assert "patch_namespaced_event" not in text


@pytest.mark.parametrize("name", CASCADE)
def test_each_role_grants_exactly_the_calls_the_code_makes(
        objs: list[dict[str, Any]], name: str) -> None:
    needed: set[tuple[str, str, str]] = set()
    for module in MODULES[name]:
        needed |= _calls(COMPONENTS / module)
    role = by_kind(objs, "Role").get(f"dnsrace-{name}")
    granted = {(group, resource, verb) for rule in (role or {}).get("rules", [])
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert all("resourceNames" not in r for r in (role or {}).get("rules", []))
    assert granted == needed, f"{name}: granted {sorted(granted - needed)} beyond the code, " \
                              f"missing {sorted(needed - granted)}"
    if not needed:
        assert role is None
        assert f"dnsrace-{name}" not in by_kind(objs, "RoleBinding")
        return
    binding = by_kind(objs, "RoleBinding")[f"dnsrace-{name}"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": f"dnsrace-{name}"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                    "namespace": "dnsrace"}]


def test_the_code_scan_sees_the_calls() -> None:
    """The scan is not vacuous: the launcher creates, the watchers watch, DWFM calls nothing."""
    assert ("dnsrace.io", "instances", "create") in _calls(COMPONENTS / "launchwriter.py")
    assert ("dnsrace.io", "instances", "delete") in _calls(COMPONENTS / "launchwriter.py")
    assert ("dnsrace.io", "instances", "watch") in _calls(COMPONENTS / "instancewatch.py")
    assert ("dnsrace.io", "instances", "watch") in _calls(COMPONENTS / "nlbctl.py")
    assert ("", "events", "create") in _calls(COMPONENTS / "netmanager.py")
    assert _calls(COMPONENTS / "dwfm.py") == set()


def test_no_cluster_wide_grants(objs: list[dict[str, Any]]) -> None:
    assert not by_kind(objs, "ClusterRole")
    assert not by_kind(objs, "ClusterRoleBinding")


# -- network policies --------------------------------------------------------------------------

def test_network_policies_wire_the_cascade(objs: list[dict[str, Any]]) -> None:
    policies = by_kind(objs, "NetworkPolicy")
    etcd_from = policies["dns-etcd-clients"]["spec"]["ingress"][0]["from"]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for f in etcd_from] == ["enactor", "nlb", "coredns"]
    inst = policies["instances-from-nlb"]["spec"]
    assert inst["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "instances"
    (rule,) = inst["ingress"]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for f in rule["from"]] == ["nlb"]
    # Every port an endpoint can have: base + n % PORT_SPAN.
    assert rule["ports"] == [{"port": instances.PORT_BASE,
                              "endPort": instances.PORT_BASE + instances.PORT_SPAN - 1,
                              "protocol": "TCP"}]
    http = policies["dnsrace-cascade-http"]["spec"]
    (expr,) = [e for e in http["podSelector"]["matchExpressions"]
               if e["key"] == "app.kubernetes.io/component"]
    assert sorted(expr["values"]) == sorted(CASCADE)
    assert http["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    # Without the cascade the DNS etcd keeps its two clients.
    default = by_kind(render(), "NetworkPolicy")["dns-etcd-clients"]["spec"]["ingress"][0]
    assert [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for f in default["from"]] == ["enactor", "coredns"]


# -- the values schema -------------------------------------------------------------------------

def test_the_safeguards_pattern_knows_every_name() -> None:
    schema = json.loads((LAYOUT.chart / "values.schema.json").read_text())
    pattern = re.compile(schema["properties"]["safeguards"]["pattern"])
    for name in (*safeguards.NAMES, "off", "on", "all", ",".join(safeguards.CASCADE)):
        assert pattern.fullmatch(name), name
    assert not pattern.fullmatch("dwfm-throttle,bogus")


@pytest.mark.parametrize(("args", "complaint"), [
    (["--set", "cascade.instances.portBase=8080"], "portBase"),
    (["--set", "cascade.instances.portBase=50000"], "portBase"),
    (["--set", "cascade.nlb.failoverShare=1"], "failoverShare"),
    (["--set", "cascade.nlb.name=nlb.example.com"], "name"),
    (["--set", "cascade.launcher.rate=0"], "rate"),
    (["--set", "cascade.dwfm.droplets=0"], "droplets"),
    (["--set", "cascade.launcher.unknown=1"], "unknown"),
])
def test_schema_rejects_bad_cascade_values(args: list[str], complaint: str) -> None:
    err = refusal(*ON, *args)
    assert "schema" in err, err
    assert complaint in err, err
