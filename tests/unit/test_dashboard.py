"""The Grafana dashboard (dashboards/dnsrace.json) linted: its schema essentials, and every
metric its PromQL names is one the code defines (parsed from the code, not listed by hand).

Why our own check rather than Grafana's dashboard-linter: that tool's rules are about a
dashboard's conventions (a ``job`` and ``instance`` variable on every query, and so on), not
about whether the metrics exist; what breaks silently here is a metric renamed in the code and
left in a panel, which only a check against the code's own definitions catches.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests import metrics_support

DASHBOARD = metrics_support.ROOT / "dashboards" / "dnsrace.json"
GRID_WIDTH = 24
PANEL_TYPES = {"timeseries", "state-timeline", "stat", "gauge", "bargauge", "table",
               "barchart", "heatmap", "text"}

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                 "unless", "bool", "offset", "atan2", "inf", "nan"}


def defined_metrics() -> set[str]:
    """Series names the components export (the code's prometheus_client definitions and the
    default registry's collectors), parsed by ``tests/metrics_support.py``, which the metrics
    reference test (docs/metrics.md) shares."""
    return metrics_support.series_names()


def referenced_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers left once strings, label matchers,
    ranges, grouping clauses, variables and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group() not in _PROMQL_WORDS:
            found.add(m.group())
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    body: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return body


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out += panel.get("panels", [])  # collapsed rows keep theirs inside
    return [p for p in out if p.get("type") != "row"]


def test_dashboard_essentials(dashboard: dict[str, Any]) -> None:
    for key in ("title", "uid", "schemaVersion", "panels", "time", "templating"):
        assert key in dashboard, key
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    assert panels
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["type"] in PANEL_TYPES, p["title"]
        assert p.get("title"), p["id"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t.get("expr", "").strip(), p["title"]
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert t["expr"].count("{") == t["expr"].count("}"), t["expr"]
        used = {m.group(1) for t in p["targets"] for m in re.finditer(r"\$\{?(\w+)", t["expr"])}
        assert used - {"__rate_interval", "__interval", "__range"} <= set(variables), p["title"]


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    boxes = []
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert min(g["w"], g["h"]) > 0, p["title"]
        assert g["x"] >= 0, p["title"]
        assert g["x"] + g["w"] <= GRID_WIDTH, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"


def test_every_metric_a_panel_names_is_defined_in_the_code(dashboard: dict[str, Any]) -> None:
    defined = defined_metrics()
    assert "dnsrace_prober_answers_total" in defined
    assert "dnsrace_ddb_client_request_duration_seconds_bucket" in defined
    assert "coredns_dns_responses_total" not in defined  # CoreDNS's, not the components'
    referenced = {(p["title"], name) for p in _panels(dashboard) for t in p["targets"]
                  for name in referenced_metrics(t["expr"])}
    assert referenced
    missing = sorted(f"{title}: {name}" for title, name in referenced if name not in defined)
    assert missing == []


def test_the_metric_parser_sees_through_promql() -> None:
    expr = ('sum by (enactor, result) (rate(dnsrace_x_total{result!="a b", e=~"$v"}'
            '[$__rate_interval])) / on(job) group_left max(dnsrace_y) or vector(0)')
    assert referenced_metrics(expr) == {"dnsrace_x_total", "dnsrace_y"}
    assert referenced_metrics("changes(process_start_time_seconds[10m]) > bool 0") == {
        "process_start_time_seconds"}
