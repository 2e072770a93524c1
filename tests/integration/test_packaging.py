"""The packaging, checked against a real API server (the local plane, or whatever cluster the
suite points at): every rendered object and every manifest is accepted by ``--dry-run=server``
with strict field validation and Pod Security "restricted"; least privilege is proven with
``kubectl auth can-i`` after really applying the RBAC objects to a throwaway namespace; the chaos
targets and the stub-domain script work on real objects.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dnsrace.localplane import packaging
from tests.conftest import Cluster
from tests.packaging_support import FIXTURES, ROOT, helm_template, packaging_tools

# Per run, so that a namespace still terminating from an earlier run is never reused.
RBAC_NS = f"dnsrace-rbac-test-{os.getpid()}"
PKG_NS = f"dnsrace-pkg-test-{os.getpid()}"


def _namespace(cluster: Cluster, name: str, labels: dict[str, str]) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": labels}}
    out = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def pkg_ns(cluster: Cluster) -> Iterator[str]:
    """A namespace enforcing (and warning on) Pod Security "restricted", as the lab's does."""
    _namespace(cluster, PKG_NS, {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    })
    yield PKG_NS
    cluster.kubectl("delete", "namespace", PKG_NS, "--wait=false")


def _dry_run(cluster: Cluster, sources: dict[str, str], namespace: str) -> list[str]:
    return packaging.dry_run_server(cluster.kubectl_path, cluster.kubeconfig, sources, namespace)


def test_rendered_chart_is_accepted_by_the_server(cluster: Cluster, pkg_ns: str) -> None:
    sources: dict[str, str] = {}
    for label, args in {
        "defaults": (),
        "non-default values": (
            "--set", "enactors.count=4", "--set-json", 'safeguards="all"',
            "--set", "networkPolicies.enabled=true", "--set", "dnsEtcd.persistence.enabled=false",
            "--set", "coredns.service.type=NodePort", "--set", "coredns.service.nodePort=30053",
            "--set-json", 'faults=[{"name":"slow-a","spec":{"target":"enactor-a",'
                          '"action":"delay","step":"endpoint-write","delaySeconds":2}},'
                          '{"name":"pause-b","spec":{"target":"enactor-b","action":"pause",'
                          '"durationSeconds":10}}]',
        ),
        "kind values": ("-f", str(ROOT / "kind" / "values.yaml")),
        "cascade": ("--set", "ddb.enabled=true", "--set", "cascade.enabled=true",
                    "--set-json", 'safeguards="dwfm-throttle,propagation-throttle,'
                                  'velocity-control"',
                    "--set", "cascade.launcher.patience=600"),
    }.items():
        out = helm_template(*args, namespace=pkg_ns)
        assert out.returncode == 0, out.stderr
        sources[f"helm template ({label})"] = out.stdout
    assert _dry_run(cluster, sources, pkg_ns) == []


def test_manifests_are_accepted_by_the_server(cluster: Cluster) -> None:
    """`kubectl kustomize manifests` (CRDs + base) and every other file under manifests/."""
    built = cluster.kubectl("kustomize", str(ROOT / "manifests"))
    assert built.returncode == 0, built.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(built.stdout) if d]
    assert kinds.count("CustomResourceDefinition") == 3  # DnsPlan, Fault, Instance
    assert "Namespace" in kinds
    sources = {"kubectl kustomize manifests": built.stdout}
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            sources[str(path.relative_to(ROOT))] = path.read_text()
    assert _dry_run(cluster, sources, cluster.cfg.kube.namespace) == []


def test_a_broken_manifest_fails_the_check_by_name(cluster: Cluster) -> None:
    broken = FIXTURES / "broken-deployment.yaml"
    good = ROOT / "manifests" / "examples" / "fault.yaml"
    problems = _dry_run(cluster, {str(good): good.read_text(), str(broken): broken.read_text()},
                        cluster.cfg.kube.namespace)
    assert len(problems) == 1, problems
    assert problems[0].startswith(str(broken))
    assert "deliberately-broken" in problems[0]


def test_the_check_reports_pod_security_violations(cluster: Cluster, pkg_ns: str) -> None:
    """The same check must notice a pod spec that "restricted" refuses (here: root allowed)."""
    out = helm_template(namespace=pkg_ns)
    text = out.stdout.replace("runAsNonRoot: true", "runAsNonRoot: false")
    problems = _dry_run(cluster, {"tampered chart": text}, pkg_ns)
    assert problems, "running as root went unnoticed"
    assert "PodSecurity" in problems[0]


def test_kubeconform_is_built() -> None:
    # Its Kubernetes schemas are downloaded at run time from a public repository this machine
    # cannot reach; CI's lint job runs it. Here we prove the pinned binary is there and runs.
    out = subprocess.run([str(packaging_tools()["kubeconform"]), "-v"],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.strip() == "v0.8.0"


# -- least privilege ------------------------------------------------------------------------

ENACTORS = ("enactor-a", "enactor-b", "enactor-c")
# (verb, resource, subresource); resource as `kubectl auth can-i` takes it (resource.group).
PLANNER_ALLOWED = [
    *((v, "dnsplans.dnsrace.io", "") for v in ("create", "get", "list", "watch")),
    *((v, "dnsplans.dnsrace.io", "status") for v in ("get", "patch")),
    *((v, "endpointslices.discovery.k8s.io", "") for v in ("get", "list", "watch")),
    *((v, "services", "") for v in ("get", "list", "watch")),
    *((v, "configmaps/dnsrace-planner", "") for v in ("get", "update", "patch")),
    ("create", "configmaps", ""),
    *((v, "events", "") for v in ("create", "patch")),
    *((v, "events.events.k8s.io", "") for v in ("create", "patch")),
    *((v, "faults.dnsrace.io", "") for v in ("get", "list", "watch")),
    *((v, "faults.dnsrace.io", "status") for v in ("get", "patch")),
]
PLANNER_DENIED = [
    ("delete", "dnsplans.dnsrace.io", ""), ("update", "dnsplans.dnsrace.io", ""),
    ("patch", "dnsplans.dnsrace.io", ""), ("deletecollection", "dnsplans.dnsrace.io", ""),
    ("delete", "configmaps", ""), ("delete", "configmaps/dnsrace-planner", ""),
    ("get", "configmaps", ""), ("list", "configmaps", ""), ("get", "configmaps/coredns", ""),
    ("update", "configmaps/coredns", ""), ("patch", "configmaps/other", ""),
    ("get", "secrets", ""), ("list", "secrets", ""),
    ("create", "leases.coordination.k8s.io", ""), ("create", "faults.dnsrace.io", ""),
    ("delete", "faults.dnsrace.io", ""), ("create", "pods", ""), ("create", "pods", "exec"),
    ("update", "endpointslices.discovery.k8s.io", ""), ("delete", "services", ""),
]
ENACTOR_ALLOWED = [
    *((v, "dnsplans.dnsrace.io", "") for v in ("get", "list", "watch", "patch", "delete")),
    *((v, "dnsplans.dnsrace.io", "status") for v in ("get", "patch", "update")),
    *((v, "events", "") for v in ("create", "patch")),
    *((v, "faults.dnsrace.io", "") for v in ("get", "list", "watch")),
    *((v, "faults.dnsrace.io", "status") for v in ("get", "patch")),
    *((v, "leases.coordination.k8s.io", "") for v in ("get", "create", "update")),
]
ENACTOR_DENIED = [
    ("create", "dnsplans.dnsrace.io", ""), ("update", "dnsplans.dnsrace.io", ""),
    ("deletecollection", "dnsplans.dnsrace.io", ""), ("delete", "leases.coordination.k8s.io", ""),
    ("get", "secrets", ""), ("get", "configmaps", ""),
    ("list", "endpointslices.discovery.k8s.io", ""),
    ("create", "faults.dnsrace.io", ""), ("delete", "faults.dnsrace.io", ""),
    ("patch", "faults.dnsrace.io", ""), ("create", "pods", ""), ("create", "pods", "exec"),
]
NOTHING = [
    ("get", "dnsplans.dnsrace.io", ""), ("list", "faults.dnsrace.io", ""),
    ("create", "events", ""), ("get", "configmaps", ""), ("list", "pods", ""),
    ("list", "endpointslices.discovery.k8s.io", ""), ("get", "secrets", ""),
    ("create", "leases.coordination.k8s.io", ""),
]
# The cascade (cascade.enabled): exactly the calls each component's code makes
# (tests/unit/test_cascade_chart.py reads them from the code).
CASCADE_ALLOWED = {
    "launcher": [("create", "instances.dnsrace.io", ""), ("list", "instances.dnsrace.io", ""),
                 ("delete", "instances.dnsrace.io", ""),  # at the end of their --lifetime
                 ("patch", "instances.dnsrace.io", "status"), ("create", "events", "")],
    "network-manager": [("list", "instances.dnsrace.io", ""),
                        ("watch", "instances.dnsrace.io", ""),
                        ("patch", "instances.dnsrace.io", "status"), ("create", "events", "")],
    "instances": [("list", "instances.dnsrace.io", ""), ("watch", "instances.dnsrace.io", "")],
    "nlb": [("list", "instances.dnsrace.io", ""), ("watch", "instances.dnsrace.io", "")],
    "dwfm": [],
}
CASCADE_DENIED = [
    ("get", "instances.dnsrace.io", ""), ("update", "instances.dnsrace.io", ""),
    ("patch", "instances.dnsrace.io", ""), ("delete", "instances.dnsrace.io", ""),
    ("deletecollection", "instances.dnsrace.io", ""), ("update", "instances.dnsrace.io", "status"),
    ("patch", "events", ""), ("create", "events.events.k8s.io", ""),
    ("get", "dnsplans.dnsrace.io", ""), ("list", "faults.dnsrace.io", ""),
    ("get", "secrets", ""), ("get", "configmaps", ""), ("create", "pods", ""),
    ("create", "leases.coordination.k8s.io", ""),
]
# Cluster-wide: nobody gets anything (kopf runs namespaced and tolerates not listing these).
CLUSTER_DENIED = [
    ("list", "namespaces", ""), ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("list", "nodes", ""), ("create", "clusterroles.rbac.authorization.k8s.io", ""),
]


def _table() -> list[tuple[str, tuple[str, str, str], bool, bool]]:
    """(service account, (verb, resource, subresource), allowed?, cluster-scoped?)."""
    rows: list[tuple[str, tuple[str, str, str], bool, bool]] = []
    rows += [("planner", check, True, False) for check in PLANNER_ALLOWED]
    rows += [("planner", check, False, False) for check in PLANNER_DENIED]
    for enactor in ENACTORS:
        rows += [(enactor, check, True, False) for check in ENACTOR_ALLOWED]
        rows += [(enactor, check, False, False) for check in ENACTOR_DENIED]
    for sa in ("prober", "lbnode", "dnsrace-coredns", "dns-etcd"):
        rows += [(sa, check, False, False) for check in NOTHING]
    for sa, allowed in CASCADE_ALLOWED.items():
        rows += [(sa, check, True, False) for check in allowed]
        denied = dict.fromkeys(CASCADE_DENIED + NOTHING + ALL_INSTANCE_CALLS)
        rows += [(sa, check, False, False) for check in denied if check not in allowed]
    for sa in ("planner", *ENACTORS, "prober", "lbnode", *CASCADE_ALLOWED):
        rows += [(sa, check, False, True) for check in CLUSTER_DENIED]
    return rows


ALL_INSTANCE_CALLS = sorted({c for checks in CASCADE_ALLOWED.values() for c in checks})
"""Each call any cascade component may make: the others must be refused it."""


@pytest.fixture(scope="module")
def rbac_ns(cluster: Cluster) -> Iterator[str]:
    """The chart's ServiceAccounts, Roles and RoleBindings, really applied to a throwaway
    namespace (rendered for it with --namespace), so that can-i answers about them."""
    _namespace(cluster, RBAC_NS, {"app.kubernetes.io/part-of": "dnsrace-tests"})
    # Every optional part on, so that the cascade's accounts and Roles are in the table too.
    out = helm_template("--set", "ddb.enabled=true", "--set", "cascade.enabled=true",
                        namespace=RBAC_NS)
    assert out.returncode == 0, out.stderr
    rbac = [d for d in yaml.safe_load_all(out.stdout)
            if d and d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    assert {d["kind"] for d in rbac} == {"ServiceAccount", "Role", "RoleBinding"}
    assert all(d["metadata"]["namespace"] == RBAC_NS for d in rbac)
    applied = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": rbac}))
    assert applied.returncode == 0, applied.stderr
    yield RBAC_NS
    cluster.kubectl("delete", "namespace", RBAC_NS, "--wait=false")


def _can_i(cluster: Cluster, sa: str, verb: str, resource: str, sub: str,
           namespace: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{RBAC_NS}:{sa}"]
    args += [f"--subresource={sub}"] if sub else []
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    out = cluster.kubectl(*args)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {args}: {out.stdout} {out.stderr}"
    return answer == "yes"


def test_least_privilege_table(cluster: Cluster, rbac_ns: str) -> None:
    rows = _table()

    def check(row: tuple[str, tuple[str, str, str], bool, bool]) -> str | None:
        sa, (verb, resource, sub), allowed, cluster_scoped = row
        got = _can_i(cluster, sa, verb, resource, sub, None if cluster_scoped else rbac_ns)
        if got == allowed:
            return None
        what = f"{verb} {resource}{'/' + sub if sub else ''}"
        return f"{sa}: {what} is {'allowed' if got else 'denied'}, expected the opposite"

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        wrong = [w for w in pool.map(check, rows) if w]
    assert wrong == [], "\n".join(wrong)
    assert len(rows) > 150  # the table really covers every component


def test_rbac_does_not_reach_other_namespaces(cluster: Cluster, rbac_ns: str) -> None:
    for sa, verb, resource in (("planner", "create", "dnsplans.dnsrace.io"),
                               ("enactor-a", "delete", "dnsplans.dnsrace.io")):
        assert _can_i(cluster, sa, verb, resource, "", rbac_ns)
        assert not _can_i(cluster, sa, verb, resource, "", "default")


def test_least_privilege_check_catches_a_wider_role(cluster: Cluster, rbac_ns: str) -> None:
    """Grant one extra verb and the table must notice it: the check can fail."""
    patch = [{"op": "add", "path": "/rules/-",
              "value": {"apiGroups": ["dnsrace.io"], "resources": ["dnsplans"],
                        "verbs": ["delete"]}}]
    out = cluster.kubectl("-n", rbac_ns, "patch", "role", "dnsrace-planner", "--type=json",
                          "-p", json.dumps(patch))
    assert out.returncode == 0, out.stderr
    try:
        assert _can_i(cluster, "planner", "delete", "dnsplans.dnsrace.io", "", rbac_ns)
    finally:
        restored = helm_template("--show-only", "templates/rbac.yaml", namespace=rbac_ns)
        role = next(d for d in yaml.safe_load_all(restored.stdout)
                    if d and d["metadata"]["name"] == "dnsrace-planner" and d["kind"] == "Role")
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(role))
    assert not _can_i(cluster, "planner", "delete", "dnsplans.dnsrace.io", "", rbac_ns)


# -- make targets and scripts on real objects --------------------------------------------------

def _make(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args,
         f"KUBECTL={cluster.kubectl_path}", f"CHAOS_KUBECONFIG={cluster.kubeconfig}"],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    )


def _faults(cluster: Cluster, ns: str) -> dict[str, dict[str, object]]:
    out = cluster.kubectl("-n", ns, "get", "faults", "-o", "json")
    assert out.returncode == 0, out.stderr
    return {i["metadata"]["name"]: i["spec"] for i in json.loads(out.stdout)["items"]}


def test_chaos_targets_create_faults(cluster: Cluster, rbac_ns: str) -> None:
    before = set(_faults(cluster, rbac_ns))
    delay = _make(cluster, "chaos-delay", "TARGET=enactor-b", "DELAY=2.5",
                  f"NAMESPACE={rbac_ns}")
    assert delay.returncode == 0, delay.stderr
    pause = _make(cluster, "chaos-pause", "TARGET=enactor-c", "DURATION=7",
                  f"NAMESPACE={rbac_ns}")
    assert pause.returncode == 0, pause.stderr
    new = {n: s for n, s in _faults(cluster, rbac_ns).items() if n not in before}
    assert sorted(new.values(), key=lambda s: str(s["target"])) == [
        {"target": "enactor-b", "action": "delay", "step": "endpoint-write", "delaySeconds": 2.5},
        {"target": "enactor-c", "action": "pause", "durationSeconds": 7},
    ]
    assert all(n.startswith("chaos-enactor-") for n in new)
    # The CRD refuses a target that is no component, and make says so.
    bad = _make(cluster, "chaos-delay", "TARGET=enactor-1", f"NAMESPACE={rbac_ns}")
    assert bad.returncode != 0
    assert "unknown target" in bad.stderr


def test_stub_domain_script_is_idempotent(cluster: Cluster, rbac_ns: str) -> None:
    """kind/stub-domain.sh on a kind-like Corefile, twice: one block, forwarding to the Service."""
    kind_corefile = ".:53 {\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa\n"\
                    "    forward . /etc/resolv.conf\n    cache 30\n}\n"
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "dnsrace-coredns", "namespace": rbac_ns},
           "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap",
          "metadata": {"name": "coredns", "namespace": rbac_ns},
          "data": {"Corefile": kind_corefile}}
    for doc in (svc, cm):
        out = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(doc))
        assert out.returncode == 0, out.stderr
    ip = cluster.kubectl("-n", rbac_ns, "get", "svc", "dnsrace-coredns",
                         "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    assert ip
    script = ROOT / "kind" / "stub-domain.sh"
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    for _ in range(2):
        run = subprocess.run([str(script), str(cluster.kubectl_path), rbac_ns, rbac_ns,
                              "--no-restart"], capture_output=True, text=True, timeout=60,
                             check=False, env=env)
        assert run.returncode == 0, run.stderr
    corefile = cluster.kubectl("-n", rbac_ns, "get", "configmap", "coredns",
                               "-o", "jsonpath={.data.Corefile}").stdout
    assert corefile.startswith(kind_corefile.rstrip("\n"))
    assert corefile.count("sim.internal:53 {") == 1
    assert f"forward . {ip}:53" in corefile


def test_image_install_step_works_here(tmp_path: Path) -> None:
    """The Dockerfile's builder steps, run here: the locked, non-editable, no-dev install gives a
    `dnsrace` with every subcommand the manifests run (Docker itself is not available here)."""
    uv = next((packaging_tools()["helm"].parents[2]).glob("uv-*/bin/uv"), None)
    assert uv is not None, "make setup installs uv into the cache"
    env = dict(os.environ, UV_PROJECT_ENVIRONMENT=str(tmp_path / "venv"),
               UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV", None)
    for extra in (["--no-install-project"], ["--no-editable"]):
        out = subprocess.run([str(uv), "sync", "--frozen", "--no-dev", "--quiet", *extra],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
        assert out.returncode == 0, out.stderr
    site = next((tmp_path / "venv" / "lib").glob("python3*/site-packages"))
    assert not (site / "pytest").exists(), "dev dependencies must stay out of the image"
    assert (site / "dnsrace" / "__init__.py").is_file(), "the package is copied, not linked"
    helptext = subprocess.run([str(tmp_path / "venv" / "bin" / "dnsrace"), "--help"],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={"PATH": os.environ["PATH"], "COLUMNS": "200"})
    assert helptext.returncode == 0, helptext.stderr
    for command in ("planner", "enactor", "prober", "lbnode", "ddb-client", "dwfm", "launcher",
                    "network-manager", "instances", "nlb"):
        assert f" {command} " in helptext.stdout, f"`dnsrace {command}` missing from the image"
