"""The Prometheus scrape config of a scenario lab: which component serves ``/metrics`` where.

Who calls it: ``localplane.prometheus`` (it writes the rendered file before starting the local
Prometheus), the scenario lab (``lab_targets`` from its own ports), and the tests. Why pure: the
addresses are data the lab already decides (``Lab.start_components``: component ``i`` on
``base_port + i``, LB nodes on their own loopback address), and a config built from them can be
checked without a Prometheus or a cluster.

One static job per component kind (``planner``, ``enactor``, ``prober``, ``ddb-client``,
``lbnode``, ``coredns``, and the cascade's ``dwfm``, ``launcher``, ``network-manager``,
``instances``, ``nlb``), so ``job`` says what a series is from and ``instance``
which process; every target also carries a ``process`` label with the process's own name
(``enactor-a``, ``lbnode-3``), the name the lab, the Faults and the report use. Not
``component``: ``dnsrace_fault_injections_total`` has a label of that name, which a target
label would rename to ``exported_component``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import yaml

SCRAPE_INTERVAL = 1.0
"""Seconds between two scrapes: the race's windows are a few seconds long."""

BASE_PORT = 18200
"""Where the scenario lab starts its components' HTTP ports (``race.py``, ``chaos.py``)."""
ENACTOR_OFFSET = 1
PROBER_OFFSET = 5
DDB_CLIENT_OFFSET = 6
LBNODE_PREFIX = "127.0.10."
LBNODE_PORT = 8080
"""LB nodes serve /health and /metrics on their own address (``components.lbnode.PORT``)."""
COREDNS_METRICS = "127.0.0.1:19153"
"""The local plane's CoreDNS ``prometheus`` plugin (``LocalPlane.coredns_metrics_port``)."""
CASCADE_PORTS = {"dwfm": 18207, "launcher": 18208, "network-manager": 18209,
                 "instances": 18210, "nlb": 18211}
"""The cascade's components (docs/cascade.md) and the HTTP ports the lab gives them (each its
``DNSRACE_HTTP_PORT``), in the order they are listed: after the race's, whatever the race's
base port (the outage scenario's ``PORTS``; the launcher's default ``--dwfm-url`` and
``--admit-url`` name 18207 and 18209)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One process to scrape."""

    job: str
    """The kind of component: planner, enactor, prober, ddb-client, lbnode, dwfm, coredns."""
    component: str
    """The process's own name (enactor-a, lbnode-0; the job's name when there is one),
    written as the target's ``process`` label."""
    address: str
    """host:port of its HTTP server."""
    path: str = "/metrics"


def lab_targets(
    enactors: Sequence[str],
    *,
    base_port: int = BASE_PORT,
    lb_nodes: int = 6,
    ddb_client: bool = True,
    dwfm_port: int | None = None,
    cascade: bool = False,
    coredns: str | None = COREDNS_METRICS,
    host: str = "127.0.0.1",
) -> list[Target]:
    """Every component ``Lab.start_components`` starts, at the address it gives it: the planner
    on ``base_port``, enactor ``i`` on ``base_port + 1 + i``, the prober on ``base_port + 5``,
    the DynamoDB clients on ``base_port + 6``, LB node ``i`` on ``127.0.10.<i+1>:8080``; DWFM
    when it runs (``dwfm_port``, its ``DNSRACE_HTTP_PORT``); with ``cascade``, all five of the
    cascade's components at ``CASCADE_PORTS`` (DWFM at ``dwfm_port`` when given); and
    CoreDNS's own metrics when given."""
    if len(enactors) > PROBER_OFFSET - ENACTOR_OFFSET:
        raise ValueError(f"at most {PROBER_OFFSET - ENACTOR_OFFSET} enactors fit between the "
                         f"planner's port and the prober's, got {len(enactors)}")
    targets = [Target("planner", "planner", f"{host}:{base_port}")]
    targets += [Target("enactor", name, f"{host}:{base_port + ENACTOR_OFFSET + i}")
                for i, name in enumerate(enactors)]
    targets.append(Target("prober", "prober", f"{host}:{base_port + PROBER_OFFSET}"))
    if ddb_client:
        targets.append(Target("ddb-client", "ddb-client",
                              f"{host}:{base_port + DDB_CLIENT_OFFSET}"))
    targets += [Target("lbnode", f"lbnode-{i}", f"{LBNODE_PREFIX}{i + 1}:{LBNODE_PORT}")
                for i in range(lb_nodes)]
    if cascade:
        ports = dict(CASCADE_PORTS)
        if dwfm_port is not None:
            ports["dwfm"] = dwfm_port
        targets += [Target(job, job, f"{host}:{port}") for job, port in ports.items()]
    elif dwfm_port is not None:
        targets.append(Target("dwfm", "dwfm", f"{host}:{dwfm_port}"))
    if coredns is not None:
        targets.append(Target("coredns", "coredns", coredns))
    return targets


def render(targets: Iterable[Target], *, interval: float = SCRAPE_INTERVAL,
           lab: str = "dnsrace") -> str:
    """prometheus.yml scraping ``targets``: one static job per kind, in first-seen order.

    ``lab`` becomes an external label (``lab="..."``) so series from two labs stay apart.
    The scrape timeout is the interval's (Prometheus refuses one longer than the interval).
    """
    jobs: dict[tuple[str, str], list[Target]] = {}
    for t in targets:
        jobs.setdefault((t.job, t.path), []).append(t)
    names = [job for job, _ in jobs]
    if len(names) != len(set(names)):
        raise ValueError("one job's targets must share one metrics path")
    seconds = _duration(interval)
    config = {
        "global": {"scrape_interval": seconds, "scrape_timeout": seconds,
                   "evaluation_interval": seconds, "external_labels": {"lab": lab}},
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "honor_labels": False,
             "static_configs": [{"targets": [t.address], "labels": {"process": t.component}}
                                for t in group]}
            for (job, path), group in jobs.items()
        ],
    }
    header = "# Generated by dnsrace (core/scrape.py): the lab's components, one job per kind.\n"
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole milliseconds (``1s``, ``500ms``)."""
    if not seconds > 0:
        raise ValueError(f"scrape interval must be more than 0 s, got {seconds}")
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"
