"""The chart's ServiceMonitor-free scrape setup: every pod that serves metrics carries the
``prometheus.io/*`` annotations on its pod template, with the port its container really
exposes metrics on and a path it serves; the NetworkPolicies let a scraper reach that port.
Rendered with helm, no cluster (the same helpers as test_chart.py)."""

from __future__ import annotations

from typing import Any

from tests.packaging_support import render, workloads

DDB = ("--set", "ddb.enabled=true", "--set", "cascade.enabled=true")
"""Every optional part on: the data path and the cascade (which needs it)."""
EXPECTED_PORTS = {
    "planner": 8080, "enactor-a": 8080, "enactor-b": 8080, "enactor-c": 8080,
    "prober": 8080, "lbnode": 8080, "ddb-client": 8080,
    "dwfm": 8080, "launcher": 8080, "network-manager": 8080, "instances": 8080, "nlb": 8080,
    "dnsrace-coredns": 9153, "dns-etcd": 2381,
}
"""Workload -> metrics port. The dnsrace components serve /metrics on DNSRACE_HTTP_PORT
(8080, see test_chart.py); CoreDNS's prometheus plugin is on 9153, etcd's metrics on 2381."""


def test_every_metrics_pod_is_annotated_with_its_real_port() -> None:
    rendered = workloads(render(*DDB))
    annotated = {}
    for name, w in rendered.items():
        ann = w["spec"]["template"]["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            annotated[name] = ann
    assert set(annotated) == set(EXPECTED_PORTS), "dynamodb-local has no metrics: not scraped"
    for name, ann in annotated.items():
        assert ann["prometheus.io/path"] == "/metrics", name
        port = int(ann["prometheus.io/port"])
        assert port == EXPECTED_PORTS[name], name
        assert isinstance(ann["prometheus.io/port"], str), "annotation values are strings"
        (container,) = rendered[name]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        exposed = {p["containerPort"] for p in container.get("ports", [])}
        assert env.get("DNSRACE_HTTP_PORT") == str(port) or port in exposed, name


def test_coredns_keeps_its_corefile_checksum_annotation() -> None:
    ann = workloads(render())["dnsrace-coredns"]["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/corefile" in ann
    assert ann["prometheus.io/port"] == "9153"


def test_network_policies_admit_the_metrics_ports() -> None:
    """Any source may reach each annotated port (a Prometheus in another namespace)."""
    objs = render(*DDB)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    labels = {name: w["spec"]["template"]["metadata"]["labels"]
              for name, w in workloads(objs).items()}

    def selects(policy: dict[str, Any], pod: dict[str, str]) -> bool:
        sel = policy["spec"]["podSelector"]
        if not sel.keys() <= {"matchLabels", "matchExpressions"}:
            return False
        if not sel.get("matchLabels", {}).items() <= pod.items():
            return False
        return all(pod.get(e["key"]) in e["values"] for e in sel.get("matchExpressions", [])
                   if e["operator"] == "In")

    for name, port in EXPECTED_PORTS.items():
        open_ports = {p["port"] for pol in policies if selects(pol, labels[name])
                      for rule in pol["spec"].get("ingress", []) if "from" not in rule
                      for p in rule.get("ports", [])}
        assert port in open_ports, f"{name}: port {port} not admitted from any source"
