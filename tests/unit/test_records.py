"""The SkyDNS mapping and record format (pure)."""

from __future__ import annotations

import pytest

from dnsrace.core import records


def test_name_path_reverses_labels() -> None:
    assert records.name_path("dynamodb.us-east-1.sim.internal.") == \
        "/skydns/internal/sim/us-east-1/dynamodb"
    assert records.record_key("A.sim.internal", "p3-0") == "/skydns/internal/sim/a/p3-0"


def test_active_marker_lives_outside_the_skydns_tree_in_its_scope() -> None:
    key = records.active_key("dynamodb.us-east-1.sim.internal", "lab-a")
    assert key == "/dnsrace/active/lab-a/dynamodb.us-east-1.sim.internal"
    assert not key.startswith(records.SKYDNS_PREFIX)
    assert records.parse_active_key(key) == ("lab-a", "dynamodb.us-east-1.sim.internal")
    with pytest.raises(ValueError, match="scope"):
        records.active_key("x.sim.internal", "a/b")


def test_record_keys_parse_back_to_name_and_leaf() -> None:
    key = records.record_key("dynamodb.us-east-1.sim.internal", "p3-0")
    assert records.parse_record_key(key) == ("dynamodb.us-east-1.sim.internal", "p3-0")
    assert records.parse_record_key("/dnsrace/active/lab/x") is None


def test_record_round_trip_is_the_coredns_json_shape() -> None:
    rec = records.Record(ttl=5, host="127.0.10.1")
    assert rec.encode() == b'{"host":"127.0.10.1","ttl":5}'
    assert records.Record.decode(rec.encode()) == rec
    txt = records.Record(ttl=5, text="serial=9")
    assert records.Record.decode(txt.encode()) == txt


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 5, "host": "not-an-ip"}, "does not appear to be an IPv4 or IPv6"),
        ({"ttl": 0, "host": "127.0.0.1"}, "ttl out of range"),
        ({"ttl": 5}, "exactly one of host and text"),
    ],
)
def test_bad_records_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        records.Record(**kwargs)  # type: ignore[arg-type]


def test_record_leaf_must_be_one_segment() -> None:
    with pytest.raises(ValueError, match="path segment"):
        records.record_key("a.sim.internal", "x/y")
