"""Helpers shared by the packaging tests (tests/unit/test_chart.py, test_ddb_chart.py,
test_cascade_chart.py, test_chart_scrape.py, tests/integration/test_packaging.py,
test_ddb_chart.py): the packaging tools, built once per session from the cache, rendering and
linting the chart, and reading its objects.

Why a module and not conftest fixtures: tests/conftest.py belongs to the cluster fixtures; these
helpers need no cluster, and ``functools.cache`` already makes the tool build once per session.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from dnsrace import settings as settings_mod
from dnsrace.localplane import binaries, packaging, tools

ROOT = Path(__file__).resolve().parents[1]
LAYOUT = packaging.Layout(ROOT)
FIXTURES = ROOT / "tests" / "fixtures" / "packaging"


@functools.cache
def packaging_tools() -> binaries.Binaries:
    """helm, kind, kubeconform, actionlint and hadolint, built or reused from the cache."""
    cfg = settings_mod.Settings.from_env()
    return tools.ensure_tools(cfg, lambda line: print(f"[tools] {line}"))


def helm_template(*args: str, namespace: str = packaging.NAMESPACE,
                  ) -> subprocess.CompletedProcess[str]:
    return packaging.render_chart(packaging_tools()["helm"], LAYOUT.chart, *args,
                                  namespace=namespace)


def helm_lint(*args: str) -> subprocess.CompletedProcess[str]:
    """``helm lint --strict`` of the chart with the given ``--set``/``-f`` arguments."""
    return subprocess.run([str(packaging_tools()["helm"]), "lint", "--strict", str(LAYOUT.chart),
                           *args], capture_output=True, text=True, timeout=120, check=False)


def refusal(*args: str) -> str:
    """What helm says when the chart must refuse the given arguments; fails the test if it
    renders them."""
    out = helm_template(*args)
    assert out.returncode != 0, f"{list(args)} was accepted"
    return out.stderr


def render(*args: str, namespace: str = packaging.NAMESPACE) -> list[dict[str, Any]]:
    """The chart's objects for the given ``--set``/``-f`` arguments; fails the test on error."""
    out = helm_template(*args, namespace=namespace)
    assert out.returncode == 0, f"helm template {' '.join(args)} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every Deployment and StatefulSet, by name."""
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in ("Deployment", "StatefulSet")}


def pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod templates of every workload, by workload name."""
    return {name: o["spec"]["template"]["spec"] for name, o in workloads(objs).items()}


def container_env(spec: dict[str, Any]) -> dict[str, str | None]:
    """The first container's env, name -> value (None where it comes from a ``valueFrom``)."""
    return {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
