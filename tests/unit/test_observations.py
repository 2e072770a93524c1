"""The prober record's analysis: empty windows and stale regressions on hand-built sequences."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dnsrace.core import observations as obs
from dnsrace.core.observations import NOERROR, NXDOMAIN, SERVFAIL, TIMEOUT, Observation

EP = "dynamodb.us-east-1.sim.internal"
FIPS = "dynamodb-fips.us-east-1.sim.internal"
IPS = ("127.0.10.1", "127.0.10.2")


def ok(t: float, serial: int | None = 1, name: str = EP,
       addresses: tuple[str, ...] = IPS) -> Observation:
    return Observation(t=t, name=name, rcode=NOERROR, addresses=addresses, serial=serial)


def bad(t: float, rcode: str = NXDOMAIN, name: str = EP,
        serial: int | None = None) -> Observation:
    return Observation(t=t, name=name, rcode=rcode, addresses=(), serial=serial)


def test_all_good_answers_have_no_windows_or_regressions() -> None:
    summary = obs.analyze([ok(0.0, 1), ok(0.1, 1), ok(0.2, 2)])
    ep = summary.endpoints[EP]
    assert (ep.answers, ep.with_addresses, ep.empty) == (3, 3, 0)
    assert ep.windows == ()
    assert ep.longest is None
    assert not ep.empty_at_end
    assert ep.first_empty is None
    assert ep.regressions == ()
    assert (ep.last_serial, ep.max_serial) == (2, 2)
    assert (ep.first_t, ep.last_t) == (0.0, 0.2)
    assert summary.answers == 3
    assert summary.empty == 0
    assert summary.longest is None


def test_empty_before_first_address_answer_is_not_an_outage() -> None:
    """An endpoint that never resolved yet (the first plan not applied) is not "empty"."""
    ep = obs.analyze([bad(0.0), bad(0.1, TIMEOUT), ok(0.2), ok(0.3)]).endpoints[EP]
    assert ep.answers == 4
    assert ep.empty == 0
    assert ep.windows == ()
    assert ep.rcodes == {NOERROR: 2, NXDOMAIN: 1, TIMEOUT: 1}


def test_a_closed_window_runs_from_first_empty_to_recovery() -> None:
    seq = [ok(0.0), ok(0.1), bad(0.2, NXDOMAIN), bad(0.3, SERVFAIL), bad(0.4, TIMEOUT),
           ok(0.5), ok(0.6)]
    ep = obs.analyze(seq).endpoints[EP]
    assert ep.empty == 3
    assert ep.first_empty == 0.2
    (window,) = ep.windows
    assert window == obs.EmptyWindow(name=EP, start=0.2, end=0.5, count=3,
                                     rcodes=(NXDOMAIN, SERVFAIL, TIMEOUT), closed=True)
    assert window.duration == pytest.approx(0.3)
    assert not ep.empty_at_end


def test_nodata_counts_as_empty() -> None:
    """NOERROR with no addresses (keys left without a host) resolves to nothing as well."""
    nodata = Observation(t=0.1, name=EP, rcode=NOERROR, addresses=(), serial=3)
    ep = obs.analyze([ok(0.0, 3), nodata, ok(0.2, 3)]).endpoints[EP]
    assert ep.empty == 1
    assert ep.windows[0].rcodes == (NOERROR,)
    assert ep.with_addresses == 2


def test_window_still_open_at_end() -> None:
    ep = obs.analyze([ok(0.0), bad(1.0), bad(2.0), bad(3.5)]).endpoints[EP]
    assert ep.empty_at_end
    (window,) = ep.windows
    assert not window.closed
    assert (window.start, window.end, window.count) == (1.0, 3.5, 3)
    assert window.duration == 2.5


def test_several_windows_and_the_longest() -> None:
    seq = [ok(0), bad(1), ok(2), bad(3), bad(4), bad(5), ok(6), bad(7), ok(7.5)]
    ep = obs.analyze(seq).endpoints[EP]
    assert [(w.start, w.end) for w in ep.windows] == [(1, 2), (3, 6), (7, 7.5)]
    assert ep.longest is not None
    assert (ep.longest.start, ep.longest.duration) == (3, 3)
    assert ep.empty == 5
    assert ep.first_empty == 1


def test_single_empty_answer_window_lasts_until_recovery() -> None:
    ep = obs.analyze([ok(0.0), bad(0.1), ok(0.2)]).endpoints[EP]
    (window,) = ep.windows
    assert window.count == 1
    assert window.duration == pytest.approx(0.1)


def test_stale_serial_is_a_regression_counted_once_per_move_down() -> None:
    seq = [ok(0, 5), ok(1, 6), ok(2, 4), ok(3, 4), ok(4, 4), ok(5, 7), ok(6, 3), ok(7, 2)]
    ep = obs.analyze(seq).endpoints[EP]
    assert ep.regression_pairs == [(6, 4), (7, 3), (7, 2)]
    assert [r.t for r in ep.regressions] == [2, 6, 7]
    assert ep.stale_answers == 5
    assert ep.last_serial == 2
    assert ep.max_serial == 7


def test_serial_back_and_forth_counts_each_move_down() -> None:
    ep = obs.analyze([ok(0, 5), ok(1, 3), ok(2, 5), ok(3, 3)]).endpoints[EP]
    assert ep.regression_pairs == [(5, 3), (5, 3)]


def test_missing_serial_neither_regresses_nor_resets() -> None:
    """A failed TXT query says nothing about the plan; the stale run continues through it."""
    ep = obs.analyze([ok(0, 5), ok(1, 3), ok(2, None), ok(3, 3)]).endpoints[EP]
    assert ep.regression_pairs == [(5, 3)]
    assert ep.stale_answers == 2
    assert ep.last_serial == 3


def test_regression_across_an_empty_window() -> None:
    """The incident's shape: records deleted, then an older plan's records come back."""
    seq = [ok(0, 10), bad(1), bad(2), ok(3, 8)]
    summary = obs.analyze(seq)
    ep = summary.endpoints[EP]
    assert len(ep.windows) == 1
    assert ep.regression_pairs == [(10, 8)]
    assert summary.regressions[0].name == EP


def test_equal_serial_is_not_a_regression() -> None:
    ep = obs.analyze([ok(0, 4), ok(1, 4), ok(2, 5), ok(3, 5)]).endpoints[EP]
    assert ep.regressions == ()
    assert ep.stale_answers == 0


def test_endpoints_are_analysed_separately_and_overall() -> None:
    seq = [
        ok(0, 1), ok(0, 1, name=FIPS),
        bad(1), ok(1, 2, name=FIPS),
        bad(2), ok(2, 1, name=FIPS),
        ok(3, 2), bad(3, SERVFAIL, name=FIPS),
        ok(4, 2), bad(4, TIMEOUT, name=FIPS), bad(5, TIMEOUT, name=FIPS),
        bad(6, TIMEOUT, name=FIPS),
    ]
    summary = obs.analyze(seq)
    assert set(summary.endpoints) == {EP, FIPS}
    assert summary.answers == len(seq)
    assert summary.empty == 2 + 4
    assert summary.first_empty == 1
    assert [(w.name, w.start) for w in summary.windows] == [(EP, 1), (FIPS, 3)]
    assert summary.longest is not None
    assert summary.longest.name == FIPS
    assert summary.longest.rcodes == (SERVFAIL, TIMEOUT)
    assert summary.empty_at_end == [FIPS]
    assert [(r.name, r.from_serial, r.to_serial) for r in summary.regressions] == [(FIPS, 2, 1)]
    assert summary.stale_answers == 1
    json.dumps(summary.to_dict())  # the report view is JSON-ready


def test_unsorted_input_is_analysed_in_time_order() -> None:
    seq = [ok(2.0), bad(1.0), ok(0.0)]
    ep = obs.analyze(seq).endpoints[EP]
    assert [(w.start, w.end) for w in ep.windows] == [(1.0, 2.0)]


def test_since_skips_counts_but_keeps_the_baseline() -> None:
    seq = [ok(0, 9), ok(1, 9), bad(2), bad(3), ok(4, 7), ok(5, 7)]
    ep = obs.analyze(seq, since=3).endpoints[EP]
    assert ep.answers == 3
    assert ep.first_t == 3
    # The endpoint had answered before ``since``, so the empty answer at 3 counts, and the
    # window under way at ``since`` is counted from there.
    assert [(w.start, w.end, w.count) for w in ep.windows] == [(3, 4, 1)]
    # Serial 9 was seen before ``since``: 7 is still a regression.
    assert ep.regression_pairs == [(9, 7)]


def test_since_after_everything_gives_empty_counts() -> None:
    ep = obs.analyze([ok(0), bad(1)], since=10).endpoints[EP]
    assert ep.answers == 0
    assert ep.windows == ()
    assert not ep.empty_at_end
    assert ep.first_t is None


def test_empty_input() -> None:
    summary = obs.analyze([])
    assert summary.endpoints == {}
    assert summary.answers == 0
    assert summary.first_empty is None
    assert summary.longest is None
    assert summary.to_dict()["longest_window"] is None


@pytest.mark.parametrize(
    ("texts", "serial"),
    [
        (["serial=12"], 12),
        ([], None),
        (["hello"], None),
        (["serial=3", "serial=5"], 5),
        (["serial=x"], None),
        ([" serial=7 "], 7),
    ],
)
def test_parse_serial(texts: list[str], serial: int | None) -> None:
    assert obs.parse_serial(texts) == serial


def test_json_line_round_trip_and_sorted_addresses() -> None:
    o = Observation(t=1.5, name=EP, rcode=NOERROR, addresses=("127.0.10.2", "127.0.10.1"),
                    serial=4)
    body = json.loads(o.to_json())
    assert body == {"t": 1.5, "name": EP, "rcode": NOERROR,
                    "addresses": ["127.0.10.1", "127.0.10.2"], "serial": 4}
    back = Observation.from_json(o.to_json())
    assert back.addresses == ("127.0.10.1", "127.0.10.2")
    assert Observation.from_json('{"t":1,"name":"x","rcode":"TIMEOUT","addresses":[],'
                                 '"serial":null}').serial is None


def test_dump_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    seq = [ok(0, 1), bad(1), ok(2, 2)]
    assert obs.dump(seq[:2], path) == 2
    assert obs.dump(seq[2:], path) == 1  # appends
    assert obs.load(path) == seq
    buf = io.StringIO()
    obs.dump(seq, buf)
    assert buf.getvalue().count("\n") == 3


def test_load_skips_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "probe.jsonl"
    obs.dump([ok(0, 1), ok(1, 1)], path)
    with path.open("a") as fh:
        fh.write('{"t": 2, "name": "dyn')  # killed mid-write
    assert len(obs.load(path)) == 2

    bad_middle = tmp_path / "bad.jsonl"
    bad_middle.write_text(ok(0).to_json() + "\nnot json\n" + ok(1).to_json() + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        obs.load(bad_middle)


def test_by_endpoint_groups_in_time_order() -> None:
    groups = dict(obs.by_endpoint([ok(1), ok(0, name=FIPS), ok(0)]))
    assert [o.t for o in groups[EP]] == [0, 1]
    assert list(groups) == sorted([EP, FIPS])
