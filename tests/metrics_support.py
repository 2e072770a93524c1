"""The metrics the code defines, parsed from its prometheus_client constructors, and the
reference table of docs/metrics.md: shared by the dashboard lint, the metrics reference test
and the live-scrape integration test, so all three read the same names the same way."""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from pathlib import Path

import prometheus_client

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT / "operator" / "dnsrace"
METRICS_DOC = ROOT / "docs" / "metrics.md"

METRIC_TYPES = {"Counter": ("_total", "_created"), "Gauge": ("",),
                "Histogram": ("_bucket", "_sum", "_count", "_created"),
                "Summary": ("", "_sum", "_count", "_created"), "Info": ("_info",),
                "Enum": ("",)}
"""Each type's series suffixes, appended to the family's base name."""
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

MODULE_COMPONENTS = {
    "enactor": {"enactor"}, "planner": {"planner"}, "prober": {"prober"},
    "lbnode": {"lbnode"}, "ddbclient": {"ddb-client"}, "dwfm": {"dwfm"},
    "leasestore": {"dwfm"}, "nlbfigures": {"nlb"}, "launcher": {"launcher"},
    "netmanager": {"network-manager"}, "instancehost": {"instances"},
    # Fault injection runs inside every kopf component (its FaultTable).
    "faults": {"planner", "enactor"},
}
"""Which processes export the metrics a module defines (module file stem -> component jobs,
as in core/scrape.py). A new module with metrics must be added here and to docs/metrics.md."""


@dataclasses.dataclass(frozen=True)
class Definition:
    """One metric family the code constructs."""

    name: str
    """As scraped and as the docs write it: a Counter's with ``_total``, others as given."""
    kind: str
    labels: tuple[str, ...]
    module: str
    """The defining module's file stem (``enactor``, ``leasestore``)."""

    @property
    def base(self) -> str:
        return self.name.removesuffix("_total") if self.kind == "Counter" else self.name

    def series(self) -> set[str]:
        return {self.base + suffix for suffix in METRIC_TYPES[self.kind]}


def _labels(node: ast.Call) -> tuple[str, ...]:
    arg: ast.expr | None = node.args[2] if len(node.args) > 2 else None
    for kw in node.keywords:
        if kw.arg == "labelnames":
            arg = kw.value
    if not isinstance(arg, ast.List | ast.Tuple):
        return ()
    return tuple(e.value for e in arg.elts
                 if isinstance(e, ast.Constant) and isinstance(e.value, str))


def definitions() -> list[Definition]:
    """Every prometheus_client metric constructed in ``operator/dnsrace``, in file order."""
    return list(_definitions())


@functools.cache
def _definitions() -> tuple[Definition, ...]:
    """Parsed once per test session: walking every module's AST takes over a second."""
    found: list[Definition] = []
    for path in sorted(CODE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            kind = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if kind not in METRIC_TYPES or not (isinstance(first, ast.Constant)
                                                and isinstance(first.value, str)
                                                and _NAME.match(first.value)):
                continue
            name = first.value
            if kind == "Counter" and not name.endswith("_total"):
                name += "_total"
            found.append(Definition(name, kind, _labels(node), path.stem))
    return tuple(found)


def series_names() -> set[str]:
    """Series names the components export: every family's series (a Counter named ``x_total``
    or ``x`` exports ``x_total``), plus the process and platform collectors of the default
    registry that ``/metrics`` serves."""
    names: set[str] = set()
    for d in definitions():
        names |= d.series()
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    for family in registry.collect():
        names |= {sample.name for sample in family.samples}
    # The process collector only reports what /proc has; these are its names on Linux.
    names |= {"process_start_time_seconds", "process_cpu_seconds_total",
              "process_resident_memory_bytes", "process_open_fds"}
    return names


@dataclasses.dataclass(frozen=True)
class DocRow:
    """One row of the reference table in docs/metrics.md."""

    name: str
    kind: str
    labels: tuple[str, ...]
    components: frozenset[str]
    meaning: str


_ROW = re.compile(r"^\|\s*`(dnsrace_[a-z0-9_]+)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|(.*)\|\s*$")


def doc_rows(path: Path = METRICS_DOC) -> list[DocRow]:
    """The reference table's rows: ``| `name` | Type | `label`, ... | component, ... | meaning |``
    (labels ``none`` when there are none)."""
    rows = []
    for line in path.read_text().splitlines():
        m = _ROW.match(line)
        if m is None:
            continue
        name, kind, labels, components, meaning = (g.strip() for g in m.groups())
        rows.append(DocRow(name, kind, tuple(re.findall(r"`([a-z_]+)`", labels)),
                           frozenset(c.strip() for c in components.split(",") if c.strip()),
                           meaning))
    return rows


def documented_names(component: str) -> set[str]:
    """The family names docs/metrics.md says ``component`` exports."""
    return {r.name for r in doc_rows() if component in r.components}


def expected_series(component: str) -> set[str]:
    """The series each documented family of ``component`` shows once it has a sample: a
    histogram's _bucket/_sum/_count, a counter's _total, a gauge's name (``_created`` is
    prometheus_client's extra and not required)."""
    defs = {d.name: d for d in definitions()}
    out: set[str] = set()
    for name in documented_names(component):
        d = defs[name]
        if d.kind == "Histogram":
            out |= {d.base + s for s in ("_bucket", "_sum", "_count")}
        else:
            out.add(name)
    return out
