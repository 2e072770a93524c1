"""docs/metrics.md's reference table against the code: exactly the metric families the code
defines (parsed from its prometheus_client constructors, ``tests/metrics_support.py``), with
their types, labels and the components that serve them; and the naming style the issue asks
for. The live check (the names scraped from running components) is
tests/integration/test_prometheus.py."""

from __future__ import annotations

import collections
import re

from tests import metrics_support
from tests.metrics_support import Definition, DocRow


def _code() -> dict[str, Definition]:
    defs = metrics_support.definitions()
    counts = collections.Counter(d.name for d in defs)
    assert [n for n, c in counts.items() if c > 1] == [], "a metric defined twice"
    return {d.name: d for d in defs}


def _doc() -> dict[str, DocRow]:
    rows = metrics_support.doc_rows()
    counts = collections.Counter(r.name for r in rows)
    assert [n for n, c in counts.items() if c > 1] == [], "a metric listed twice"
    return {r.name: r for r in rows}


def test_the_table_lists_exactly_the_codes_metrics() -> None:
    code, doc = _code(), _doc()
    assert len(code) > 30
    assert sorted(set(code) - set(doc)) == [], "defined in the code, missing in docs/metrics.md"
    assert sorted(set(doc) - set(code)) == [], "in docs/metrics.md, not defined in the code"


def test_types_labels_and_components_agree() -> None:
    code, doc = _code(), _doc()
    wrong = []
    for name, d in code.items():
        row = doc.get(name)
        if row is None:
            continue
        if row.kind != d.kind:
            wrong.append(f"{name}: type {row.kind}, code {d.kind}")
        if row.labels != d.labels:
            wrong.append(f"{name}: labels {row.labels}, code {d.labels}")
        expected = metrics_support.MODULE_COMPONENTS.get(d.module)
        if expected is None:
            wrong.append(f"{name}: module {d.module} not in MODULE_COMPONENTS")
        elif row.components != expected:
            wrong.append(f"{name}: components {sorted(row.components)}, "
                         f"served by {sorted(expected)}")
        if not row.meaning:
            wrong.append(f"{name}: no meaning")
    assert wrong == []


def test_names_follow_the_style() -> None:
    """dnsrace_<component>_..., counters end in _total and only counters do, base units."""
    for name, d in _code().items():
        assert re.fullmatch(r"dnsrace_[a-z]+(_[a-z0-9]+)+", name), name
        assert name.endswith("_total") == (d.kind == "Counter"), name
        assert not re.search(r"_(ms|milliseconds|minutes)\b", name), name
        if d.kind == "Histogram":
            assert name.endswith("_seconds"), name
    code = _code()
    # controller-runtime's pair, for each controller loop.
    for loop, labels in (("enactor", ("enactor", "result")), ("planner", ("result",))):
        total = code[f"dnsrace_{loop}_reconcile_total"]
        assert total.kind == "Counter"
        assert total.labels == labels
        time = code[f"dnsrace_{loop}_reconcile_time_seconds"]
        assert time.kind == "Histogram"
        assert time.labels == labels[:-1]


def test_the_parser_reads_rows_and_definitions() -> None:
    rows = metrics_support.doc_rows()
    row = next(r for r in rows if r.name == "dnsrace_fault_injections_total")
    assert row.kind == "Counter"
    assert row.labels == ("component", "action", "step")
    assert row.components == {"planner", "enactor"}
    assert "dnsrace_enactor_reconcile_total" in metrics_support.documented_names("enactor")
    assert "dnsrace_fault_injections_total" in metrics_support.documented_names("planner")
    hist = _code()["dnsrace_prober_query_duration_seconds"]
    assert hist.series() == {f"dnsrace_prober_query_duration_seconds{s}"
                             for s in ("_bucket", "_sum", "_count", "_created")}
