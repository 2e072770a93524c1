"""``dnsrace status``'s snapshot from hand-built inputs (``core.status.build``), its JSON keys,
the rendering, and the CLI's refusals and its answer when the API server is unreachable."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dnsrace.cli import status as status_cli
from dnsrace.cli.app import app
from dnsrace.core import status
from dnsrace.core.stores import ActiveMarker

NOW = 1_800_000_000.0
ZONE = "sim.internal"
REGIONAL = f"dynamodb.us-east-1.{ZONE}"
FIPS = f"dynamodb-fips.us-east-1.{ZONE}"
ACCOUNT = f"100000007919.ddb.us-east-1.{ZONE}"
ENDPOINTS = [ACCOUNT, FIPS, REGIONAL]  # the regional endpoint last, as the planner orders them


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan(serial: int, *, terminating: bool = False,
         reports: dict[str, tuple[str, str, str]] | None = None) -> dict[str, Any]:
    """A DnsPlan as the API server returns it; ``reports``: enactor -> (phase, reason,
    message), written as ``components.enactor`` writes them."""
    meta: dict[str, Any] = {"name": f"plan-{serial:010d}", "uid": f"uid-{serial}"}
    if terminating:
        meta["deletionTimestamp"] = stamp(NOW - 1)
    body: dict[str, Any] = {
        "metadata": meta,
        "spec": {"serial": serial, "endpoints": [
            {"name": n, "ttl": 5, "targets": [{"address": "127.0.10.1", "weight": 1}]}
            for n in ENDPOINTS]},
    }
    if reports:
        body["status"] = {
            "endpointCount": len(ENDPOINTS),
            "enactors": [{"name": n, "phase": phase, "message": msg,
                          "appliedEndpoints": 2 if phase == "Blocked" else 3,
                          "updatedAt": stamp(NOW - 2)}
                         for n, (phase, _, msg) in reports.items()],
            "conditions": [{"type": f"{n}.dnsrace.io/Applied",
                            "status": "True" if phase == "Applied" else "False",
                            "reason": reason, "message": msg,
                            "lastTransitionTime": stamp(NOW - 2)}
                           for n, (phase, reason, msg) in reports.items()],
        }
    return body


def fault(name: str, spec: dict[str, Any], status_: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec, "status": status_ or {}}


def marker(serial: int, enactor: str) -> tuple[ActiveMarker, int]:
    return ActiveMarker(serial=serial, enactor=enactor, uid=f"uid-{serial}"), serial * 10


def ok(serial: int) -> status.DnsAnswer:
    return status.DnsAnswer("NOERROR", ("127.0.10.1",), serial)


BLOCKED_MESSAGE = (f"endpoint {REGIONAL}: its active plan 40 no longer exists, so the change "
                   "against it cannot be computed")


def race_inputs(**overrides: Any) -> status.Inputs:
    """The incident's end state: enactor-a's stale plan 40 on the regional endpoint was
    deleted by enactor-b's clean-up, the finalizer removed its records (the marker stays),
    CoreDNS answers NXDOMAIN, and every enactor is blocked there."""
    blocked = ("Blocked", "ActivePlanMissing", BLOCKED_MESSAGE)
    defaults: dict[str, Any] = dict(
        now=NOW, namespace="dnsrace",
        plans=[plan(52, reports={"enactor-b": ("Applied", "Applied", "applied 3 of 3")}),
               plan(53, reports={"enactor-a": blocked, "enactor-b": blocked}),
               plan(54),
               plan(41, terminating=True)],
        faults=[],
        markers={ACCOUNT: marker(54, "enactor-c"), FIPS: marker(54, "enactor-c"),
                 REGIONAL: marker(40, "enactor-a")},
        store_addresses={ACCOUNT: ["127.0.10.1"], FIPS: ["127.0.10.1"], REGIONAL: []},
        answers={ACCOUNT: ok(54), FIPS: ok(54), REGIONAL: status.DnsAnswer("NXDOMAIN")},
        heartbeats={n: status.Lease(n, NOW - 1, 15) for n in ("enactor-a", "enactor-b",
                                                              "enactor-c")},
        enactors=("enactor-a", "enactor-b", "enactor-c"),
    )
    defaults.update(overrides)
    return status.Inputs(**defaults)


def by_name(items: list[Any], name: str) -> Any:
    return next(i for i in items if i.name == name)


def test_newest_serial_counts_live_plans_only() -> None:
    snap = status.build(race_inputs())
    assert snap.plans.newest_serial == 54
    assert snap.plans.live == 3
    assert snap.plans.oldest_serial == 52
    assert snap.plans.terminating == [41]
    assert snap.plans.newest_endpoints == 3
    assert snap.sources == {"api": "ok", "dns-etcd": "ok", "dns": "ok"}


def test_an_enactor_blocked_by_active_plan_missing_says_so_and_why() -> None:
    snap = status.build(race_inputs())
    a = by_name(snap.enactors, "enactor-a")
    assert a.state == "blocked"
    assert a.why.startswith("ActivePlanMissing: ")
    assert "its active plan 40 no longer exists" in a.why
    assert a.last.serial == 53
    assert a.last.reason == "ActivePlanMissing"
    assert a.last.applied_endpoints == 2
    assert a.last.endpoint_count == 3
    b = by_name(snap.enactors, "enactor-b")
    assert b.state == "blocked"
    assert b.applied_serial == 52
    assert b.behind == 2


def test_an_enactor_whose_markers_run_ahead_of_its_reports_is_applying_then_cleaning_up(
) -> None:
    # enactor-c reported nothing yet; the store holds its marker of 54 on 2 of 3 endpoints.
    c = by_name(status.build(race_inputs()).enactors, "enactor-c")
    assert c.state == "applying"
    assert c.progress == status.Progress(serial=54, written=2, endpoints=3,
                                         last_endpoint_written=False)
    assert c.endpoints_marked == 2
    # Once its marker is on the plan's last endpoint, the walk is over: clean-up comes next.
    markers = {n: marker(54, "enactor-c") for n in ENDPOINTS}
    c = by_name(status.build(race_inputs(markers=markers)).enactors, "enactor-c")
    assert c.state == "cleaning-up"
    assert c.progress is not None
    assert c.progress.last_endpoint_written


def test_applied_enactor_is_idle_and_an_unknown_one_unknown() -> None:
    inputs = race_inputs(
        plans=[plan(54, reports={"enactor-a": ("Applied", "Applied", "applied 3 of 3")})],
        markers={n: marker(54, "enactor-a") for n in ENDPOINTS})
    snap = status.build(inputs)
    a = by_name(snap.enactors, "enactor-a")
    assert (a.state, a.applied_serial, a.behind) == ("idle", 54, 0)
    assert by_name(snap.enactors, "enactor-b").state == "unknown"


def test_a_refused_plan_is_named_not_hidden() -> None:
    refused = plan(55)
    refused["status"] = {"conditions": [{
        "type": "enactor-a.dnsrace.io/Applied", "status": "False", "reason": "InvalidPlan",
        "message": "endpoint names nest", "lastTransitionTime": stamp(NOW)}]}
    a = by_name(status.build(race_inputs(plans=[plan(54), refused])).enactors, "enactor-a")
    assert a.state == "unknown"
    assert a.why == "plan 55: InvalidPlan: endpoint names nest"


def test_a_paused_enactor_shows_its_fault_before_anything_else() -> None:
    pause = fault("pause-a", {"target": "enactor-a", "action": "pause", "durationSeconds": 10},
                  {"phase": "Done", "injected": 1, "lastInjectedAt": stamp(NOW - 3)})
    snap = status.build(race_inputs(faults=[pause]))
    a = by_name(snap.enactors, "enactor-a")
    assert a.state == "paused"
    assert "pause-a" in a.why
    assert "10s" in a.why
    assert a.faults == ["pause-a"]
    f = by_name(snap.faults, "pause-a")
    assert f.active
    assert f.effect == "pauses the process for 10s"
    # Past its duration the pause is over: the enactor's own state shows again.
    later = status.build(race_inputs(faults=[pause], now=NOW + 30))
    assert by_name(later.enactors, "enactor-a").state == "blocked"
    assert not by_name(later.faults, "pause-a").active


def test_delay_faults_are_listed_with_the_state_they_slow() -> None:
    stall = fault("stall-a", {"target": "enactor-a", "action": "delay",
                              "step": "endpoint-write", "delaySeconds": 1.2,
                              "jitterSeconds": 0.3, "endpoints": [REGIONAL]},
                  {"phase": "Active", "injected": 4})
    slow = fault("slow-writes", {"target": "enactor-c", "action": "delay",
                                 "step": "endpoint-write", "delaySeconds": 0.03},
                 {"phase": "Active", "injected": 100})
    done = fault("old", {"target": "enactor-b", "action": "delay", "step": "clean-up",
                         "delaySeconds": 0.5, "count": 1}, {"phase": "Done", "injected": 1})
    snap = status.build(race_inputs(faults=[stall, slow, done]))
    a = by_name(snap.enactors, "enactor-a")
    assert a.state == "blocked"
    assert a.delayed_by == ["stall-a"]
    assert a.why.endswith("(delayed by stall-a)")
    c = by_name(snap.enactors, "enactor-c")
    assert c.state == "applying"
    assert c.delayed_by == ["slow-writes"]
    assert by_name(snap.enactors, "enactor-b").delayed_by == []
    f = by_name(snap.faults, "stall-a")
    assert f.effect == f"delays endpoint-write by 1.2s ±0.3s at {REGIONAL}"
    assert f.active
    assert f.injected == 4
    assert not by_name(snap.faults, "old").active


def test_a_hold_fault_holds_once_it_has_struck() -> None:
    hold = fault("hold-a", {"target": "enactor-c", "action": "hold", "step": "clean-up"},
                 {"phase": "Active", "injected": 1})
    c = by_name(status.build(race_inputs(faults=[hold])).enactors, "enactor-c")
    assert c.state == "held"
    assert "hold-a" in c.why
    waiting = fault("hold-a", {"target": "enactor-c", "action": "hold", "step": "clean-up"},
                    {"phase": "Active", "injected": 0})
    c = by_name(status.build(race_inputs(faults=[waiting])).enactors, "enactor-c")
    assert c.state == "applying"


def test_down_and_unresponsive_come_from_metrics_and_heartbeat_together() -> None:
    expired = {n: status.Lease(n, NOW - 60, 15) for n in ("enactor-a", "enactor-b",
                                                          "enactor-c")}
    metrics = {"enactor-a": status.Scrape(error="refused"),
               "enactor-b": status.Scrape(error="timeout"),
               "enactor-c": status.Scrape(error="refused")}
    snap = status.build(race_inputs(heartbeats=expired, metrics=metrics))
    assert by_name(snap.enactors, "enactor-a").state == "down"
    assert by_name(snap.enactors, "enactor-b").state == "unresponsive"
    # A refused /metrics alone (no port there, another mode) is not "down".
    fresh = status.build(race_inputs(metrics=metrics))
    assert by_name(fresh.enactors, "enactor-a").state == "blocked"
    assert by_name(fresh.enactors, "enactor-a").metrics == "refused"


def test_enactor_metrics_are_read() -> None:
    text = "\n".join([
        "# HELP dnsrace_enactor_cycles_total Plans taken",
        "# TYPE dnsrace_enactor_cycles_total counter",
        'dnsrace_enactor_cycles_total{enactor="enactor-b",outcome="applied"} 12.0',
        'dnsrace_enactor_cycles_total{enactor="enactor-b",outcome="blocked"} 3.0',
        'dnsrace_enactor_blocked_endpoints{enactor="enactor-b"} 1.0',
        'dnsrace_enactor_last_applied_serial{enactor="enactor-b"} 52.0',
    ])
    snap = status.build(race_inputs(metrics={"enactor-b": status.Scrape(text=text)}))
    b = by_name(snap.enactors, "enactor-b")
    assert b.cycles == {"applied": 12.0, "blocked": 3.0}
    assert b.blocked_endpoints == 1.0
    assert b.metrics == "ok"
    assert by_name(snap.enactors, "enactor-a").metrics == "not scraped"


def test_nxdomain_while_the_store_says_serial_n_shows_both() -> None:
    snap = status.build(race_inputs())
    regional = by_name(snap.endpoints, REGIONAL)
    assert regional.store_serial == 40
    assert regional.store_enactor == "enactor-a"
    assert regional.store_addresses == []
    assert regional.dns == "NXDOMAIN"
    assert regional.dns_serial is None
    assert regional.active_plan_exists is False
    assert regional.flags == ["empty-in-dns", "empty-in-store", "active-plan-missing",
                              "dns-differs-from-store", "behind-newest"]
    account = by_name(snap.endpoints, ACCOUNT)
    assert (account.store_serial, account.dns, account.dns_serial) == (54, "NOERROR", 54)
    assert account.flags == []
    assert account.active_plan_exists is True
    assert [e.name for e in snap.endpoints] == ENDPOINTS


def test_the_probers_view_of_empty_endpoints_is_shown() -> None:
    text = (f'dnsrace_prober_empty{{endpoint="{REGIONAL}"}} 1.0\n'
            f'dnsrace_prober_empty{{endpoint="{FIPS}"}} 0.0\n')
    snap = status.build(race_inputs(metrics={"prober": status.Scrape(text=text)}))
    assert by_name(snap.endpoints, REGIONAL).prober_empty is True
    assert by_name(snap.endpoints, FIPS).prober_empty is False
    assert by_name(snap.endpoints, ACCOUNT).prober_empty is None


def test_nodata_and_a_cached_older_answer_are_told_apart() -> None:
    answers = {ACCOUNT: status.DnsAnswer("NOERROR", (), None), FIPS: ok(53),
               REGIONAL: status.DnsAnswer("TIMEOUT")}
    snap = status.build(race_inputs(answers=answers))
    assert by_name(snap.endpoints, ACCOUNT).dns == "NODATA"
    assert "empty-in-dns" in by_name(snap.endpoints, ACCOUNT).flags
    assert by_name(snap.endpoints, FIPS).flags == ["dns-differs-from-store"]
    assert "empty-in-dns" not in by_name(snap.endpoints, REGIONAL).flags


def test_unreachable_sources_are_named_and_the_rest_still_shows() -> None:
    snap = status.build(race_inputs(
        plans=None, faults=None, markers=None, store_addresses=None,
        errors={"api": "unreachable (timed out)", "dns-etcd": "DNS etcd unreachable (X)"}))
    assert not snap.api_reachable
    assert snap.sources["api"] == "unreachable (timed out)"
    assert snap.sources["dns-etcd"] == "DNS etcd unreachable (X)"
    assert snap.sources["dns"] == "ok"
    assert snap.plans.newest_serial is None
    # The endpoints CoreDNS was asked about are still there, with what it answered.
    assert by_name(snap.endpoints, REGIONAL).dns == "NXDOMAIN"
    assert by_name(snap.endpoints, REGIONAL).active_plan_exists is None
    # Without its reports an enactor's state is unknown, however its markers look.
    api_down = status.build(race_inputs(plans=None, faults=None,
                                        errors={"api": "unreachable (timed out)"}))
    c = by_name(api_down.enactors, "enactor-c")
    assert c.state == "unknown"
    assert "API server" in c.why
    assert c.progress is not None


def test_cascade_figures_from_dwfm_metrics_and_skipped_when_absent() -> None:
    assert status.build(race_inputs()).cascade.dwfm == "not scraped"
    text = ("dnsrace_dwfm_droplets 100.0\ndnsrace_dwfm_leases_valid 37.0\n"
            "dnsrace_dwfm_queue_depth 250.0\ndnsrace_dwfm_throttle 0.0\n")
    c = status.build(race_inputs(metrics={"dwfm": status.Scrape(text=text)})).cascade
    assert (c.dwfm, c.droplets, c.leases_valid, c.queue_depth, c.throttle) == (
        "ok", 100.0, 37.0, 250.0, False)
    assert c.goodput_ratio is None


LAUNCHER_TEXT = """\
# TYPE dnsrace_launcher_attempts_total counter
dnsrace_launcher_attempts_total{outcome="Launched",reason=""} 40.0
dnsrace_launcher_attempts_total{outcome="Failed",reason="InsufficientCapacity"} 7.0
dnsrace_launcher_attempts_total{outcome="Failed",reason="RequestLimitExceeded"} 3.0
dnsrace_launcher_attempts_total{outcome="GaveUp",reason="InsufficientCapacity"} 2.0
dnsrace_launcher_attempts_total{outcome="GaveUp",reason="RequestLimitExceeded"} 1.0
dnsrace_launcher_pending 12.0
dnsrace_launcher_oldest_pending_seconds 4.5
dnsrace_launcher_instances 38.0
"""
NETWORK_TEXT = """\
dnsrace_network_backlog 120.0
dnsrace_network_oldest_age_seconds 33.0
dnsrace_network_propagated_total 500.0
dnsrace_network_throttle 1.0
"""
NLB_TEXT = """\
dnsrace_nlb_targets{az="use1-az2",state="healthy"} 9.0
dnsrace_nlb_targets{az="use1-az2",state="unhealthy"} 1.0
dnsrace_nlb_targets{az="use1-az1",state="healthy"} 4.0
dnsrace_nlb_targets{az="use1-az1",state="unhealthy"} 6.0
dnsrace_nlb_failed_over{az="use1-az1"} 1.0
dnsrace_nlb_failed_over{az="use1-az2"} 0.0
dnsrace_nlb_failovers_total 1.0
dnsrace_nlb_capacity_removed_total 4.0
"""


def test_cascade_launcher_network_manager_and_nlb_from_their_metrics() -> None:
    c = status.build(race_inputs(metrics={
        "launcher": status.Scrape(text=LAUNCHER_TEXT),
        "network-manager": status.Scrape(text=NETWORK_TEXT),
        "nlb": status.Scrape(text=NLB_TEXT)})).cascade
    assert c.dwfm == "not scraped"
    lau = c.launcher
    assert lau.metrics == "ok"
    assert (lau.launched, lau.insufficient_capacity, lau.request_limit_exceeded,
            lau.gave_up) == (40.0, 7.0, 3.0, 3.0)
    assert (lau.pending, lau.oldest_pending_seconds, lau.instances) == (12.0, 4.5, 38.0)
    net = c.network_manager
    assert (net.metrics, net.backlog, net.oldest_age_seconds, net.propagated, net.throttle) == (
        "ok", 120.0, 33.0, 500.0, True)
    nlb = c.nlb
    assert nlb.metrics == "ok"
    assert nlb.healthy == {"use1-az1": 4.0, "use1-az2": 9.0}
    assert list(nlb.healthy) == ["use1-az1", "use1-az2"]  # in AZ order, whatever the text's
    assert nlb.unhealthy == {"use1-az1": 6.0, "use1-az2": 1.0}
    assert nlb.failed_over == ["use1-az1"]  # the 0 of use1-az2 is not a failover
    assert (nlb.capacity_removed, nlb.failovers) == (4.0, 1.0)


def test_cascade_components_not_running_show_as_not_scraped_or_why() -> None:
    c = status.build(race_inputs()).cascade
    assert (c.launcher.metrics, c.network_manager.metrics, c.nlb.metrics) == (
        "not scraped", "not scraped", "not scraped")
    assert (c.launcher.launched, c.launcher.pending, c.network_manager.backlog,
            c.network_manager.throttle, c.nlb.capacity_removed) == (None,) * 5
    assert (c.nlb.healthy, c.nlb.unhealthy, c.nlb.failed_over) == ({}, {}, [])
    down = status.build(race_inputs(metrics={
        "launcher": status.Scrape(error="refused"),
        "network-manager": status.Scrape(error="timeout"),
        "nlb": status.Scrape(error="HTTP 500")})).cascade
    assert (down.launcher.metrics, down.network_manager.metrics, down.nlb.metrics) == (
        "refused", "timeout", "HTTP 500")
    assert down.launcher.launched is None


def test_safeguards_and_the_writer_lease() -> None:
    inputs = race_inputs(safeguards=["fencing", "single-writer"],
                         safeguards_source="DNSRACE_SAFEGUARDS",
                         writer_lease=status.Lease("enactor-b", NOW - 2, 10))
    sg = status.build(inputs).safeguards
    assert (sg.configured, sg.source, sg.writer_lease_holder) == (
        ["fencing", "single-writer"], "DNSRACE_SAFEGUARDS", "enactor-b")
    expired = race_inputs(writer_lease=status.Lease("enactor-b", NOW - 20, 10))
    assert status.build(expired).safeguards.writer_lease_holder is None


def test_parse_metrics_reads_labels_with_escapes_and_skips_comments() -> None:
    text = ('# HELP x y\nx_total{a="1",b="say \\"hi\\", ok"} 3\nplain 2.5e1\nbad{ nan-ish\n'
            'x_total{a="2"} NaN\n')
    samples = status.parse_metrics(text)
    assert samples[0] == ("x_total", {"a": "1", "b": 'say "hi", ok'}, 3.0)
    assert samples[1] == ("plain", {}, 25.0)
    assert len(samples) == 3


JSON_KEYS = {"schema", "time", "namespace", "sources", "plans", "enactors", "endpoints",
             "faults", "safeguards", "cascade"}
PLANS_KEYS = {"newest_serial", "live", "oldest_serial", "terminating", "newest_endpoints",
              "planner_serial"}
ENACTOR_KEYS = {"name", "state", "why", "last", "applied_serial", "behind", "progress",
                "faults", "delayed_by", "heartbeat_age", "heartbeat_valid", "metrics",
                "cycles", "blocked_endpoints", "endpoints_marked"}
REPORT_KEYS = {"serial", "phase", "reason", "message", "applied_endpoints", "endpoint_count",
               "updated_at"}
ENDPOINT_KEYS = {"name", "in_newest_plan", "store_serial", "store_enactor", "store_addresses",
                 "active_plan_exists", "dns", "dns_addresses", "dns_serial", "prober_empty",
                 "flags"}
FAULT_KEYS = {"name", "target", "action", "step", "delay_seconds", "jitter_seconds",
              "endpoints", "injected", "phase", "last_injected_at", "active", "effect"}
CASCADE_KEYS = {"dwfm", "droplets", "leases_valid", "queue_depth", "in_service",
                "queue_oldest_age_seconds", "goodput_ratio", "throttle", "launcher",
                "network_manager", "nlb"}
LAUNCHER_KEYS = {"metrics", "launched", "insufficient_capacity", "request_limit_exceeded",
                 "gave_up", "pending", "oldest_pending_seconds", "instances"}
NETWORK_KEYS = {"metrics", "backlog", "oldest_age_seconds", "propagated", "throttle"}
NLB_KEYS = {"metrics", "healthy", "unhealthy", "failed_over", "capacity_removed", "failovers"}


def test_json_keys_are_the_documented_ones() -> None:
    stall = fault("stall-a", {"target": "enactor-a", "action": "delay",
                              "step": "endpoint-write", "delaySeconds": 1.0},
                  {"phase": "Active", "injected": 1})
    body = status.build(race_inputs(faults=[stall])).to_json()
    body = json.loads(json.dumps(body))  # JSON-ready as it is
    assert set(body) == JSON_KEYS
    assert body["schema"] == status.SCHEMA == 1
    assert set(body["plans"]) == PLANS_KEYS
    assert set(body["sources"]) == {"api", "dns-etcd", "dns"}
    assert set(body["safeguards"]) == {"configured", "source", "writer_lease_holder"}
    assert set(body["cascade"]) == CASCADE_KEYS
    assert set(body["cascade"]["launcher"]) == LAUNCHER_KEYS
    assert set(body["cascade"]["network_manager"]) == NETWORK_KEYS
    assert set(body["cascade"]["nlb"]) == NLB_KEYS
    for e in body["enactors"]:
        assert set(e) == ENACTOR_KEYS
        assert e["state"] in status.ENACTOR_STATES
        if e["last"] is not None:
            assert set(e["last"]) == REPORT_KEYS
        if e["progress"] is not None:
            assert set(e["progress"]) == {"serial", "written", "endpoints",
                                          "last_endpoint_written"}
    assert all(set(ep) == ENDPOINT_KEYS for ep in body["endpoints"])
    assert all(set(f) == FAULT_KEYS for f in body["faults"])


def test_docs_name_every_json_key() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "report.md").read_text()
    section = doc[doc.index("## Live status"):]
    for key in (JSON_KEYS | PLANS_KEYS | ENACTOR_KEYS | ENDPOINT_KEYS | FAULT_KEYS
                | CASCADE_KEYS | REPORT_KEYS | LAUNCHER_KEYS | NETWORK_KEYS | NLB_KEYS):
        assert f"`{key}`" in section or f"`{key}[]`" in section, key


def test_render_shows_states_flags_and_faults() -> None:
    stall = fault("stall-a", {"target": "enactor-a", "action": "delay",
                              "step": "endpoint-write", "delaySeconds": 1.0},
                  {"phase": "Active", "injected": 1})
    text = status.build(race_inputs(
        faults=[stall], metrics={"dwfm": status.Scrape(text="dnsrace_dwfm_leases_valid 3\n")}))
    out = Console(width=250, record=True)
    out.print(status_cli.render(text))
    shown = out.export_text()
    for word in ("newest plan 54", "blocked", "ActivePlanMissing", "applying", "NXDOMAIN",
                 "active-plan-missing", "stall-a", "delays endpoint-write by 1s",
                 "leases valid 3"):
        assert word in shown, word


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "yaml"], "unknown output 'yaml'"),
    (["--interval", "0"], "must be more than 0"),
    (["--safeguards", "nope"], "unknown safeguard nope"),
])
def test_cli_refuses_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["status", "--once", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_cli_once_exits_1_with_one_line_when_the_api_server_is_unreachable(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster: {server: 'https://127.0.0.1:1'}\n"
        "  name: x\ncontexts:\n- context: {cluster: x, user: u}\n  name: x\n"
        "current-context: x\nusers:\n- name: u\n  user: {token: t}\n")
    monkeypatch.setenv("DNSRACE_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("DNSRACE_DNS_ETCD", "127.0.0.1:1")
    monkeypatch.setenv("DNSRACE_DNS_SERVER", "127.0.0.1:1")
    result = CliRunner().invoke(app, ["status", "--once", "-o", "json", "--metrics-base", "0",
                                      "--timeout", "1"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: API server")
    assert "unreachable" in lines[0]


# -- the reads (components.status), without a cluster ------------------------------------------


def test_metrics_ports_are_the_scenarios() -> None:
    from dnsrace import settings as settings_mod
    from dnsrace.components import status as reads

    ports = reads.metrics_ports(settings_mod.Settings(), 18200)
    assert ports == {"planner": 18200, "enactor-a": 18201, "enactor-b": 18202,
                     "enactor-c": 18203, "prober": 18205}


async def test_scrape_tells_ok_refused_and_timeout_apart() -> None:
    import asyncio
    import socket

    import aiohttp
    from aiohttp import web

    from dnsrace.components import status as reads

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text='dnsrace_planner_last_serial 42.0\n')

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(text="")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            ok = await reads.scrape(session, f"http://127.0.0.1:{port}/metrics", 2)
            assert ok.text is not None
            assert "42.0" in ok.text
            missing = await reads.scrape(session, f"http://127.0.0.1:{port}/nope", 2)
            assert missing.error == "HTTP 404"
            late = await reads.scrape(session, f"http://127.0.0.1:{port}/slow", 0.3)
            assert late.error == "timeout"
            refused = await reads.scrape(session, f"http://127.0.0.1:{closed}/metrics", 2)
            assert refused.error == "refused"
    finally:
        await runner.cleanup()


async def test_reader_names_where_the_safeguards_come_from() -> None:
    from dnsrace import settings as settings_mod
    from dnsrace.components import status as reads

    async def read(env: dict[str, str], given: str | None) -> tuple[list[str], str]:
        cfg = settings_mod.Settings.from_env(env)
        reader = reads.Reader(cfg, reads.Options(safeguards=given))
        await reader.close()
        return reader.safeguards, reader.safeguards_source

    assert await read({}, None) == ([], "default")
    assert await read({"DNSRACE_SAFEGUARDS": "fencing,dwfm-throttle"}, None) == (
        ["fencing", "dwfm-throttle"], "DNSRACE_SAFEGUARDS")
    names, source = await read({"DNSRACE_SAFEGUARDS": "off"}, "on")
    assert source == "--safeguards"
    assert {"fencing", "serve-stale"} <= set(names)


def test_reader_asks_about_the_newest_plans_endpoints_then_the_marked_ones() -> None:
    from dnsrace.components import status as reads

    items = [plan(53), plan(54), plan(60, terminating=True)]
    other = f"old.{ZONE}"
    names = reads.Reader._endpoints(items, {other: marker(3, "enactor-a"),
                                            REGIONAL: marker(54, "enactor-a")})
    assert names == [*ENDPOINTS, other]
    assert reads.Reader._endpoints(None, None) == []


@pytest.mark.parametrize("output", ["json", "table"])
def test_cli_once_prints_the_snapshot(monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    from dnsrace.components import status as reads

    snap = status.build(race_inputs())

    async def snapshot(self: reads.Reader) -> status.Snapshot:
        return snap

    monkeypatch.setattr(reads.Reader, "snapshot", snapshot)
    result = CliRunner().invoke(app, ["status", "--once", "-o", output, "--metrics-base", "0"])
    assert result.exit_code == 0, result.output
    if output == "json":
        assert json.loads(result.stdout) == json.loads(json.dumps(snap.to_json()))
    else:
        assert "newest plan 54" in result.stdout
        assert "ActivePlanMissing" in result.stdout


def test_render_shows_each_scraped_cascade_component_and_leaves_out_the_others() -> None:
    out = Console(width=250, record=True)
    out.print(status_cli.render(status.build(race_inputs(metrics={
        "launcher": status.Scrape(text=LAUNCHER_TEXT),
        "network-manager": status.Scrape(error="refused"),
        "nlb": status.Scrape(text=NLB_TEXT)}))))
    shown = out.export_text()
    for words in ("cascade: launcher launches ok 40 · InsufficientCapacity 7 · "
                  "RequestLimitExceeded 3 · gave up 3 · pending 12 (oldest 4.50 s)",
                  "cascade: Network Manager /metrics refused",
                  "cascade: NLB healthy use1-az1 4, use1-az2 9 · unhealthy use1-az1 6, "
                  "use1-az2 1 · failed over use1-az1 · capacity removed 4"):
        assert words in shown, words
    assert "DWFM" not in shown  # not scraped: no URL given
    out = Console(width=250, record=True)
    out.print(status_cli.render(status.build(race_inputs(metrics={
        "network-manager": status.Scrape(text=NETWORK_TEXT)}))))
    shown = out.export_text()
    assert "cascade: Network Manager backlog 120 (oldest 33 s) · propagated 500 · throttle on" \
        in shown
    assert "launcher" not in shown
    assert "NLB" not in shown


def test_cli_passes_the_cascade_urls_to_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from dnsrace.components import status as reads

    seen: list[dict[str, str]] = []

    async def snapshot(self: reads.Reader) -> status.Snapshot:
        seen.append(self.options.cascade_urls())
        return status.build(race_inputs())

    monkeypatch.setattr(reads.Reader, "snapshot", snapshot)
    result = CliRunner().invoke(app, [
        "status", "--once", "-o", "json", "--metrics-base", "0",
        "--launcher-url", "http://h:18208/", "--network-manager-url", "http://h:18209",
        "--nlb-url", "http://h:18211"])
    assert result.exit_code == 0, result.output
    assert seen == [{"launcher": "http://h:18208/", "network-manager": "http://h:18209",
                     "nlb": "http://h:18211"}]
    assert reads.Options(dwfm_url="http://d:1").cascade_urls() == {"dwfm": "http://d:1"}


def test_importing_the_cli_module_leaves_the_kubernetes_client_out() -> None:
    import subprocess
    import sys

    code = ("import sys, dnsrace.cli.status; "
            "print(sorted(m for m in ('kubernetes_asyncio', 'dnsrace.components.status') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
