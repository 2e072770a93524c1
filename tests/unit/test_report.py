"""The incident report from the two recorded fixture runs: lanes, figures, files written."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dnsrace.cli.app import app
from dnsrace.core import verdicts
from dnsrace.report import lanes, render, write_report

RUNS = Path(__file__).parent / "fixtures" / "runs"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """The fixture runs, each with the verdict.json the runner would have written."""
    out = []
    for name in ("off", "on"):
        d = tmp_path / name
        shutil.copytree(RUNS / name, d)
        verdict = verdicts.judge(verdicts.RunRecord.load(d), str(d))
        (d / "verdict.json").write_text(json.dumps(verdict.to_json(), indent=1))
        out.append(d)
    return out


def _lane(run: lanes.Run, key: str) -> lanes.Lane:
    return next(lane for lane in lanes.lanes_of(run) if lane.key == key)


def test_answers_lane_spans_each_rcode_from_the_stall() -> None:
    run = lanes.Run.load(RUNS / "off")
    lane = _lane(run, "answers")
    spans = {t.row: list(zip(t.t, t.y, strict=True)) for t in lane.tracks}
    # The fixture answers NOERROR, then NXDOMAIN from 1008 until the repair's answer at 1023.
    assert spans["NXDOMAIN"] == [(8.0, 23.0)]
    assert spans["NOERROR"] == [(-5.0, 8.0), (23.0, 29.5)]
    assert lane.rows == lanes.ANSWER_ROWS


def test_writes_lane_puts_the_stale_write_apart() -> None:
    run = lanes.Run.load(RUNS / "off")
    lane = _lane(run, "writes")
    assert lane.rows == ("enactor-a", "enactor-b", "repair")
    stale = [t for t in lane.tracks if t.style == "stale"]
    assert [(s.row, s.t, s.y) for s in stale] == [("enactor-a", (4.0,), (4.0,))]


def test_emptiness_and_cleanup_lanes_from_the_store_and_the_prober() -> None:
    run = lanes.Run.load(RUNS / "off")
    empty = _lane(run, "empty")
    by_style = {t.style: (t.row, t.t, t.y) for t in empty.tracks}
    assert by_style["empty-store"] == ("dynamodb.us-east-1", (4.3,), (23.0,))
    assert by_style["empty-dns"] == ("dynamodb.us-east-1", (8.0,), (23.0,))
    cleanup = _lane(run, "cleanup")
    assert [(t.row, t.t) for t in cleanup.tracks] == [("records: regional", (4.3,))]
    on = lanes.Run.load(RUNS / "on")
    assert _lane(on, "empty").tracks == ()
    assert _lane(on, "cleanup").tracks == ()


def test_serial_lane_breaks_while_no_serial_is_answered() -> None:
    run = lanes.Run.load(RUNS / "off")
    prober = next(t for t in _lane(run, "serial").tracks if t.style == "prober")
    during = [y for t, y in zip(prober.t, prober.y, strict=True) if 8.0 <= t < 23.0]
    assert during
    assert all(y != y for y in during)


def test_a_lane_whose_files_are_absent_is_not_drawn(tmp_path: Path) -> None:
    run = lanes.Run.load(RUNS / "off")
    keys = [lane.key for lane in lanes.lanes_of(run)]
    # No ddb-client.jsonl, restarts.json or cascade files in the fixture folder.
    assert keys == ["answers", "serial", "writes", "empty", "cleanup"]
    d = tmp_path / "off"
    shutil.copytree(RUNS / "off", d)
    (d / "dwfm.jsonl").write_text('{"t": 1001, "leases_valid": 40}\n'
                                  '{"t": 1003, "leases_valid": 12}\nnot json\n')
    (d / "restarts.json").write_text(json.dumps([{"component": "enactor-b", "t": 1005.0,
                                                  "code": -9, "how": "killed by SIGKILL"}]))
    with_files = lanes.Run.load(d)
    found = {lane.key: lane for lane in lanes.lanes_of(with_files)}
    assert {"leases", "dwfm-goodput", "dwfm-queue", "restarts"} <= set(found)
    assert found["leases"].tracks[0].t == (1.0, 3.0)
    assert found["leases"].tracks[0].y == (40.0, 12.0)
    assert found["dwfm-goodput"].tracks == ()
    assert found["restarts"].rows == ("enactor-b",)
    assert "launches" not in found


def test_client_lanes_bin_the_requests(tmp_path: Path) -> None:
    d = tmp_path / "off"
    shutil.copytree(RUNS / "off", d)
    rows = [{"t": 1000.2 + i * 0.25, "worker": 0, "op": "read",
             "outcome": "ok" if i < 4 else "dns", "detail": "", "latency_ms": 1.0,
             "target": None} for i in range(8)]
    (d / "ddb-client.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = lanes.Run.load(d)
    ok = _lane(run, "client-ok").tracks[0]
    assert (ok.t, ok.y) == ((0.0, 1.0), (1.0, 0.0))
    dns = _lane(run, "client-dns").tracks[0]
    assert (dns.t, dns.y) == ((0.0, 1.0), (0.0, 4.0))


def test_narrative_tells_the_race_in_order() -> None:
    story = lanes.narrative(lanes.Run.load(RUNS / "off"))
    texts = [m.text for m in story]
    stale = next(i for i, t in enumerate(texts) if "stale write" in t)
    removed = next(i for i, t in enumerate(texts) if "has no address record" in t)
    first = next(i for i, t in enumerate(texts) if "first answered NXDOMAIN" in t)
    assert stale < removed < first
    assert [m.t for m in story] == sorted(m.t for m in story)
    assert "enactor-a wrote serial 4 over 6" in texts[stale]


def test_recomputed_figures_equal_verdict_json_and_a_difference_is_named(
        runs: list[Path]) -> None:
    for d in runs:
        verdict = verdicts.judge(verdicts.RunRecord.load(d), str(d))
        assert render.check(d, verdict).status == "equal"
        written = json.loads((d / "verdict.json").read_text())
        assert render.plain(verdict.figures) == written["figures"]
    off = runs[0]
    written = json.loads((off / "verdict.json").read_text())
    written["figures"]["regional_empty_window"] = 99.0
    (off / "verdict.json").write_text(json.dumps(written))
    verdict = verdicts.judge(verdicts.RunRecord.load(off), str(off))
    assert render.check(off, verdict) == render.Check("differs", ("regional_empty_window",))
    del written["figures"]["answers"]
    written["figures"]["retired"] = 1
    (off / "verdict.json").write_text(json.dumps(written))
    found = render.check(off, verdict)
    assert (found.new, found.gone) == (("answers",), ("retired",))
    assert "not in verdict.json (judged by an older version): answers" in found.text
    (off / "verdict.json").unlink()
    assert render.check(off, verdict).status == "absent"


def test_html_is_one_file_whose_figures_are_the_verdicts(runs: list[Path],
                                                         tmp_path: Path) -> None:
    out = write_report(runs, tmp_path / "r" / "report.html")
    text = out.read_text()
    assert list(out.parent.iterdir()) == [out]
    # Nothing fetched when opened: every image is a data: URI, no remote reference at all.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', text)
    assert len(images) == 2
    assert all(base64.b64decode(i).startswith(PNG) for i in images)
    cells = re.findall(r'data-run="([^"]+)" data-figure="([^"]+)" data-value="([^"]*)"', text)
    assert cells
    for d in runs:
        written = json.loads((d / "verdict.json").read_text())
        mine = {f: json.loads(html.unescape(v)) for run, f, v in cells if run == d.name}
        assert mine.pop("passed") == written["passed"]
        assert mine
        assert all(written["figures"][k] == v for k, v in mine.items())
    assert text.count("equal to verdict.json") == 2
    assert "--safeguards fencing,protect-active,no-empty,self-heal" in text
    assert "--stall 1.2" in text


def test_markdown_links_its_pictures_beside_it(runs: list[Path], tmp_path: Path) -> None:
    out = write_report(runs, tmp_path / "pr.md", "md")
    text = out.read_text()
    assert "![timeline](pr-timeline.png)" in text
    assert "![AWS phases](pr-phases.png)" in text
    for name in ("pr-timeline.png", "pr-phases.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)
    assert "| regional NXDOMAIN/NODATA window (s) | 15 | 0 |" in text
    assert "dnsrace scenario run race --safeguards off" in text


def test_unknown_format_is_refused(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown report format"):
        write_report(runs, tmp_path / "x.pdf", "pdf")


def test_cli_writes_the_report_beside_a_single_run(runs: list[Path]) -> None:
    result = CliRunner().invoke(app, ["report", str(runs[0]), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert (runs[0] / "report.md").is_file()
    assert (runs[0] / "report-timeline.png").is_file()
    bad = CliRunner().invoke(app, ["report", str(runs[0]), "--format", "pdf"])
    assert bad.exit_code == 2


def test_a_run_cut_short_still_gets_a_report(tmp_path: Path) -> None:
    d = tmp_path / "cut"
    d.mkdir()
    shutil.copy(RUNS / "off" / "prober.jsonl", d / "prober.jsonl")
    run = lanes.Run.load(d)
    assert run.t_fault == 995.0  # no observed.json: the first probe is the origin
    out = write_report([d], tmp_path / "cut.html")
    assert "no verdict.json in the run folder" in out.read_text()


def test_headline_says_what_happened_in_one_sentence(runs: list[Path]) -> None:
    off, on = render.build(runs)
    assert render.headline(off) == (
        "safeguards off: as expected; the regional records were removed 4.3 s after the stall; "
        "CoreDNS answered NXDOMAIN/NODATA from 8 s for 15 s; the enactors were left blocked; "
        "repair restored it in 3.2 s.")
    assert "no endpoint emptied (0 empty answers, 0 marker regressions" in render.headline(on)
