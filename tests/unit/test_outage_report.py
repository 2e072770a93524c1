"""The report of an outage-2025 run folder: the cascade's verdict recomputed from the folder,
compared with the runner's outage.json, its lanes drawn."""

from __future__ import annotations

import json
from pathlib import Path

from dnsrace.core import outage
from dnsrace.report import lanes, render
from tests.unit.test_outage_verdict import STEPS, records

REGIONAL = "dynamodb.us-east-1.sim.internal"


def _write_lines(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def outage_folder(tmp_path: Path) -> Path:
    """A run folder as the runner leaves it, from the hand-made safeguards-off series."""
    rec = records()
    d = tmp_path / "outage-off"
    d.mkdir()
    _write_lines(d / "prober.jsonl", [
        {"t": t, "name": REGIONAL,
         "rcode": "NXDOMAIN" if 1010 <= t < 1071 else "NOERROR",
         "addresses": [] if 1010 <= t < 1071 else ["127.0.10.1"], "serial": None}
        for t in (990.0 + i for i in range(411))])
    _write_lines(d / "ddb-client.jsonl", [
        {"t": t, "worker": 0, "op": "read", "outcome": o, "detail": "", "latency_ms": 2.0,
         "target": None} for t, o in rec.client_outcomes])
    _write_lines(d / "dwfm.jsonl", list(rec.dwfm))  # type: ignore[arg-type]
    _write_lines(d / "netmanager.jsonl", list(rec.network))  # type: ignore[arg-type]
    _write_lines(d / "nlb.jsonl", list(rec.nlb))  # type: ignore[arg-type]
    _write_lines(d / "launcher.jsonl", list(rec.launcher))  # type: ignore[arg-type]
    (d / "faults.json").write_text(json.dumps([
        {"name": n, "spec": {}, "status": {"injected": c}}
        for n, c in (rec.injected or {}).items()]))
    steps = {"t_dwfm_restart": STEPS.t_dwfm_restart, "t_failover_off": STEPS.t_failover_off,
             "t_repair": 1070.0}
    (d / "observed.json").write_text(json.dumps({
        "scenario": "outage-2025", "kind": outage.CASCADE, "safeguards": "off",
        "regional": REGIONAL, "endpoints": [REGIONAL], "zone": "sim.internal",
        "t_fault": rec.t_fault, "t_end": rec.t_end, "steps": steps, "outage": 60}))
    loaded, stp, kind = outage.load(d)
    (d / "outage.json").write_text(json.dumps(outage.judge(loaded, kind, stp).to_json()))
    return d


def test_the_outage_verdict_is_recomputed_and_matches_the_runners(tmp_path: Path) -> None:
    d = outage_folder(tmp_path)
    [r] = render.build([d])
    assert r.verdict.passed, r.verdict.reasons
    assert r.check.status == "equal", r.check.text
    assert r.check.text == "equal to outage.json"
    assert r.verdict.figures["phase dns-empty"] == [10.0, 71.0]
    assert r.verdict.figures["reachable_again"] == 72.0
    assert "scenario run outage-2025 --safeguards off" in " ".join(r.commands)


def test_a_changed_outage_json_is_reported(tmp_path: Path) -> None:
    d = outage_folder(tmp_path)
    written = json.loads((d / "outage.json").read_text())
    written["passed"] = False
    (d / "outage.json").write_text(json.dumps(written))
    [r] = render.build([d])
    assert r.check.text == "DIFFERS from outage.json: values differ: passed"


def test_the_html_shows_the_phases_and_the_cascade_lanes(tmp_path: Path) -> None:
    d = outage_folder(tmp_path)
    out = render.write_report([d], tmp_path / "report.html")
    page = out.read_text()
    assert "phase dwfm-collapse: start, end (s after the fault)" in page
    assert "outage-2025, safeguards off: as expected; phases: dns-empty" in page
    drawn = {lane.key: lane for lane in lanes.lanes_of(lanes.Run.load(d))}
    assert [t.label for t in drawn["capacity"].tracks] == [  # per AZ, the total left out
        "us-east-1a", "us-east-1b", "us-east-1c"]
    assert min(drawn["leases"].tracks[0].y) == 0.0
    assert max(drawn["network"].tracks[0].y) == 120.0
