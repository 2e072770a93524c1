"""The race verdict over recorded run folders: each way a run must be judged "not as expected".

Two small recorded runs (``fixtures/runs/off`` and ``on``, written by ``make_runs.py``) pass as
they are; every test below changes one thing in a copy and checks that exactly that is caught.
Removing the corresponding check from ``core.verdicts`` makes the test fail.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dnsrace.core import verdicts

RUNS = Path(__file__).parent / "fixtures" / "runs"
REGIONAL = "dynamodb.us-east-1.sim.internal"
FIPS = "dynamodb-fips.us-east-1.sim.internal"


def copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(RUNS / name, target)
    return target


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def edit_lines(path: Path, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
    rows = [change(json.loads(line)) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r is not None))


def judge(run: Path) -> verdicts.Verdict:
    return verdicts.judge(verdicts.RunRecord.load(run), str(run))


def observed(run: Path, **values: Any) -> None:
    edit_json(run / "observed.json", lambda o: o | values)


def failed_because(v: verdicts.Verdict, words: str) -> None:
    assert not v.passed
    assert any(words in r for r in v.reasons), v.reasons


@pytest.mark.parametrize("name", ["off", "on"])
def test_the_recorded_runs_pass_as_they_are(tmp_path: Path, name: str) -> None:
    v = judge(copy(tmp_path, name))
    assert v.passed, v.reasons


def test_off_figures_come_from_the_records(tmp_path: Path) -> None:
    f = judge(copy(tmp_path, "off")).figures
    assert f["time_to_records_removed"] == 4.3
    assert f["time_to_first_empty"] == 8.0
    assert f["regional_empty_window"] == 15.0
    assert f["store_endpoints_emptied"] == [REGIONAL]
    assert f["store_regressions"] == 1
    assert f["store_regression_pairs"] == [(REGIONAL, 6, 4, "enactor-a")]
    assert f["answers"] == f["answers_expected"] == 120


# -- safeguards off: the incident must be shown, with its evidence ----------------------------

def test_off_fails_when_the_independent_query_timed_out(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    observed(run, direct_query_regional={"rcode": "TIMEOUT", "addresses": []})
    failed_because(judge(run), "independent query")


def test_off_fails_when_the_window_was_servfail_not_nxdomain(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    edit_lines(run / "prober.jsonl",
               lambda p: p | {"rcode": "SERVFAIL"} if p["rcode"] == "NXDOMAIN" else p)
    v = judge(run)
    failed_because(v, "did not answer NXDOMAIN/NODATA")
    failed_because(v, "less than the 10")


def test_off_fails_when_the_window_is_shorter_than_the_hold(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    edit_lines(run / "prober.jsonl", lambda p: p | {"rcode": "NOERROR", "addresses": ["1.2.3.4"]}
               if p["rcode"] == "NXDOMAIN" and p["t"] >= 1015 else p)
    failed_because(judge(run), "less than the 10")


def test_off_fails_when_another_endpoint_answered_nxdomain(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    edit_lines(run / "prober.jsonl", lambda p: p | {"rcode": "NXDOMAIN", "addresses": []}
               if p["name"] == FIPS and 1010 <= p["t"] < 1012 else p)
    failed_because(judge(run), "not the regional endpoint alone")


def test_off_fails_when_the_store_never_saw_the_removal(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    edit_lines(run / "store.jsonl", lambda r: None if r["rev"] == 104 else r)
    v = judge(run)
    failed_because(v, "removal was not seen in the store")
    failed_because(v, "emptied in the store were []")


def test_off_fails_when_the_enactors_were_not_left_blocked(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    observed(run, converged=True)
    failed_because(judge(run), "not left blocked")


def test_off_fails_without_the_blocked_condition(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    observed(run, conditions_on_newest=[])
    failed_because(judge(run), "says why it is blocked")


def test_off_fails_when_repair_did_not_restore(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    observed(run, repair_restored=False)
    failed_because(judge(run), "repair did not restore")


# -- evidence common to every run ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["off", "on"])
def test_fails_when_a_fault_was_never_injected(tmp_path: Path, name: str) -> None:
    run = copy(tmp_path, name)
    edit_json(run / "faults.json", lambda fs: [
        f | {"status": {"injected": 0}} if f["name"] == "enactor-a-stall" else f for f in fs])
    failed_because(judge(run), "faults never injected: enactor-a-stall")


@pytest.mark.parametrize("name", ["off", "on"])
def test_fails_when_the_prober_sampled_too_little(tmp_path: Path, name: str) -> None:
    run = copy(tmp_path, name)
    edit_lines(run / "prober.jsonl", lambda p: p if int(p["t"] * 2) % 3 == 0 else None)
    failed_because(judge(run), "fewer than 80%")


@pytest.mark.parametrize("name", ["off", "on"])
def test_fails_when_the_store_recorder_saw_nothing(tmp_path: Path, name: str) -> None:
    run = copy(tmp_path, name)
    edit_lines(run / "store.jsonl", lambda r: r if r.get("snapshot") else None)
    failed_because(judge(run), "store recorder saw no transaction")


# -- safeguards on: no harm, judged from the store as well as from the answers ------------------

def test_on_fails_on_a_sub_second_empty_store_the_prober_never_saw(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    with (run / "store.jsonl").open("a") as fh:
        for rev, t, ops in ((104, 1025.0, [["del", "/skydns/internal/sim/us-east-1/dynamodb/"
                                                   "p30-0"]]),
                            (105, 1025.4, [["put", "/skydns/internal/sim/us-east-1/dynamodb/"
                                                   "p30-0", '{"host": "127.0.10.1", "ttl": 5}']])):
            fh.write(json.dumps({"t": t, "rev": rev, "ops": ops}) + "\n")
    v = judge(run)
    assert v.figures["empty_answers"] == 0
    failed_because(v, f"records emptied in the store on {REGIONAL}")


def test_on_fails_on_a_store_regression_the_prober_never_saw(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    with (run / "store.jsonl").open("a") as fh:
        fh.write(json.dumps({"t": 1019.5, "rev": 104, "ops": [[
            "put", f"/dnsrace/active/lab/{FIPS}", '{"serial": 4, "enactor": "enactor-a"}']]})
            + "\n")
    v = judge(run)
    assert v.figures["stale_regressions"] == 0
    failed_because(v, "1 active-serial regressions in the store")


def test_on_does_not_count_other_scopes_markers(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    with (run / "store.jsonl").open("a") as fh:
        fh.write(json.dumps({"t": 1019.5, "rev": 104, "ops": [[
            "put", f"/dnsrace/active/other-lab/{FIPS}", '{"serial": 1, "enactor": "x"}']]})
            + "\n")
    assert judge(run).passed


def test_on_fails_on_an_empty_answer(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    edit_lines(run / "prober.jsonl", lambda p: p | {"rcode": "SERVFAIL", "addresses": []}
               if p["name"] == REGIONAL and p["t"] == 1010 else p)
    failed_because(judge(run), f"1 empty answers on {REGIONAL}")


def test_on_fails_on_a_stale_answer(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    edit_lines(run / "prober.jsonl", lambda p: p | {"serial": 5}
               if p["name"] == REGIONAL and p["t"] == 1010 else p)
    failed_because(judge(run), "stale regressions through CoreDNS")


def test_on_fails_when_not_converged(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    observed(run, converged=False)
    failed_because(judge(run), "did not converge")


# -- each single safeguard has its own expectation -----------------------------------------------

def off_as(tmp_path: Path, safeguards: str, **values: Any) -> Path:
    """The off run's records, judged as if recorded under ``safeguards``."""
    run = copy(tmp_path, "off")
    observed(run, safeguards=safeguards, **values)
    return run


def test_fencing_alone_expects_no_harm(tmp_path: Path) -> None:
    v = judge(off_as(tmp_path, "fencing"))
    failed_because(v, "records emptied in the store")
    failed_because(v, "regressions in the store")


def test_single_writer_alone_expects_no_stale_write(tmp_path: Path) -> None:
    failed_because(judge(off_as(tmp_path, "single-writer")), "regressions in the store")


def test_self_heal_alone_may_empty_but_must_heal(tmp_path: Path) -> None:
    healed = off_as(tmp_path, "self-heal", converged=True, endpoints_on_deleted_plans=[])
    assert judge(healed).passed, judge(healed).reasons
    stuck = tmp_path / "stuck"
    shutil.copytree(healed, stuck)
    edit_lines(stuck / "store.jsonl", lambda r: None if r["rev"] == 105 else r)
    failed_because(judge(stuck), f"still empty in the store at the end: {REGIONAL}")
    observed(stuck, converged=False)
    failed_because(judge(stuck), "did not converge")


def test_protect_active_alone_allows_a_stale_serial_but_not_an_empty_one(tmp_path: Path) -> None:
    run = off_as(tmp_path, "protect-active", converged=True, endpoints_on_deleted_plans=[])
    failed_because(judge(run), "records emptied in the store")
    edit_lines(run / "store.jsonl", lambda r: None if r["rev"] == 104 else r)
    edit_lines(run / "prober.jsonl", lambda p: p | {"rcode": "NOERROR", "addresses": ["1.1.1.1"],
                                                     "serial": 4} if p["rcode"] == "NXDOMAIN"
               else p)
    v = judge(run)
    assert v.figures["store_regressions"] == 1
    assert v.passed, v.reasons


def test_no_empty_alone_may_end_blocked_if_repair_restores(tmp_path: Path) -> None:
    run = off_as(tmp_path, "no-empty")
    edit_lines(run / "store.jsonl", lambda r: None if r["rev"] == 104 else r)
    edit_lines(run / "prober.jsonl", lambda p: p | {"rcode": "NOERROR", "addresses": ["1.1.1.1"],
                                                     "serial": 4} if p["rcode"] == "NXDOMAIN"
               else p)
    assert judge(run).passed, judge(run).reasons
    observed(run, repair_restored=False)
    failed_because(judge(run), "left blocked and repair did not restore")


@pytest.mark.parametrize(("safeguards", "may_empty", "may_regress", "may_block"), [
    ("fencing", False, False, False),
    ("single-writer", False, False, False),
    ("protect-active", False, True, False),
    ("no-empty", False, True, True),
    ("self-heal", True, True, False),
    ("no-empty,self-heal", False, True, False),
    ("on", False, False, False),
])
def test_expectations_follow_from_what_each_safeguard_removes(
        safeguards: str, may_empty: bool, may_regress: bool, may_block: bool) -> None:
    from dnsrace.core.safeguards import Safeguards
    exp = verdicts.expectation(Safeguards.parse(safeguards))
    assert (exp.outage, exp.may_empty, exp.may_regress, exp.may_block) == (
        False, may_empty, may_regress, may_block)


def test_series_sums_up_runs(tmp_path: Path) -> None:
    runs = [judge(copy(tmp_path / str(i), "off")) for i in range(3)]
    s = verdicts.series(runs)
    assert s["runs as expected"] == "3/3"
    assert s["time_to_records_removed"] == "4.3-4.3 (median 4.3, 3 runs)"
    assert s["store_regressions (total)"] == "3"


def test_other_names_in_the_zone_are_not_the_labs(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    bench = "/skydns/internal/sim/bench/x/p1-0"
    with (run / "store.jsonl").open("a") as fh:
        for rev, op in ((104, ["put", bench, '{"host": "127.0.0.9", "ttl": 5}']),
                        (105, ["del", bench])):
            fh.write(json.dumps({"t": 1019.0 + rev / 1000, "rev": rev, "ops": [op]}) + "\n")
    v = judge(run)
    assert v.figures["store_endpoints_emptied"] == []
    assert v.passed, v.reasons


# -- the DynamoDB clients' view ------------------------------------------------------------------

def clients(run: Path, outcome_at: Callable[[float], tuple[str, str]], end: float = 1040) -> None:
    """Client records every 0.25 s from t=990 to ``end``; ``outcome_at(t)`` says what happened."""
    rows = []
    t = 990.0
    while t < end:
        outcome, detail = outcome_at(t)
        rows.append({"t": t, "worker": 0, "op": "read", "outcome": outcome, "detail": detail,
                     "latency_ms": 2.0, "target": None if outcome == "dns" else "127.0.10.1"})
        t += 0.25
    (run / "ddb-client.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    observed(run, clients=True, record_ttl=5, t_repair=1023.0)


def incident(t: float) -> tuple[str, str]:
    """What clients saw in the off run: the record empty from 1008 (CoreDNS) to the repair."""
    return ("dns", "NXDOMAIN") if 1009 <= t < 1024 else ("ok", "")


def test_off_clients_fail_with_dns_while_empty_and_recover(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    clients(run, incident)
    v = judge(run)
    assert v.passed, v.reasons
    f = v.figures
    assert f["client_ok_before_fault"] == 1.0
    assert f["client_dns_share_while_empty"] == 1.0
    assert f["client_dns_details_while_empty"] == ["NXDOMAIN"]
    assert f["client_ok_after_recovery"] == 1.0
    assert f["client_time_to_recover"] == 0.75


def test_off_fails_when_clients_kept_succeeding_while_the_record_was_empty(
        tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    clients(run, lambda t: ("ok", "") if 1015 <= t < 1017 else incident(t))
    failed_because(judge(run), "failed with a DNS error")


def test_off_fails_when_clients_did_not_recover_after_the_repair(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    clients(run, lambda t: ("connect", "refused") if t >= 1030 else incident(t))
    failed_because(judge(run), "after the repair only")


def test_fails_when_clients_failed_before_the_fault(tmp_path: Path) -> None:
    run = copy(tmp_path, "off")
    clients(run, lambda t: ("throttled", "ThrottlingException") if 993 <= t < 994
            else incident(t))
    failed_because(judge(run), "before the fault only")


def test_fails_when_the_clients_were_started_but_left_no_record(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    observed(run, clients=True)
    failed_because(judge(run), "too few to judge")


def test_on_clients_must_never_see_a_dns_error(tmp_path: Path) -> None:
    run = copy(tmp_path, "on")
    clients(run, lambda t: ("ok", ""))
    assert judge(run).passed, judge(run).reasons
    clients(run, lambda t: ("dns", "SERVFAIL") if t == 1015 else ("ok", ""))
    failed_because(judge(run), "1 client requests failed with a DNS error")


def test_single_writer_excuses_only_the_faults_of_an_enactor_that_never_wrote() -> None:
    from dnsrace.core import storelog
    from dnsrace.core.safeguards import Safeguards

    faults = [{"name": f"enactor-{x}-slow-writes", "spec": {"target": f"enactor-{x}"},
               "status": {"injected": n}} for x, n in (("a", 5), ("b", 0), ("c", 0))]
    writes = (storelog.MarkerWrite(REGIONAL, 15.0, 9, 3, "enactor-a"),
              storelog.MarkerWrite(REGIONAL, 16.0, 10, 4, "enactor-c"),
              storelog.MarkerWrite(REGIONAL, 30.0, 11, 5, "enactor-b"))  # after the faults
    sw = Safeguards.parse("single-writer")
    # enactor-b never held the writer lease while its Faults were live: nothing to slow.
    assert verdicts.starved_faults(faults, writes, sw, [10.0, 20.0]) == ["enactor-b-slow-writes"]
    # enactor-c wrote meanwhile, so its idle Fault is the fault machinery failing; without
    # single-writer nothing is excused, and neither is a run that did not record the window.
    assert verdicts.starved_faults(faults, writes, Safeguards.parse("fencing"),
                                   [10.0, 20.0]) == []
    assert verdicts.starved_faults(faults, writes, sw, None) == []
