"""Whose finalizers another enactor may finish: only those whose heartbeat is gone."""

from __future__ import annotations

from dnsrace.core import heartbeats
from dnsrace.core.heartbeats import Heartbeat


def test_only_expired_or_missing_heartbeats_are_orphaned() -> None:
    fins = [heartbeats.finalizer_of(n) for n in ("enactor-a", "enactor-b", "enactor-c",
                                                 "enactor-d")]
    fins += ["kopf.dnsrace.io/enactor-b", "example.com/other"]
    beats = {"enactor-b": Heartbeat(renewed=100, duration=15),
             "enactor-c": Heartbeat(renewed=80, duration=15),
             "enactor-d": None}
    # a: me; b: renewed 5 s ago; c: expired 5 s ago; d: never had one.
    assert heartbeats.orphaned(fins, "enactor-a", beats, now=100 + 5) == ["enactor-c",
                                                                         "enactor-d"]
    assert heartbeats.orphaned(fins, "enactor-a", beats, now=116) == [
        "enactor-b", "enactor-c", "enactor-d"]


def test_finalizer_names_round_trip() -> None:
    assert heartbeats.owner_of(heartbeats.finalizer_of("enactor-b")) == "enactor-b"
    assert heartbeats.owner_of("kopf.dnsrace.io/enactor-b") is None
