"""core.ddb: outcome classification over real botocore/aiohttp exception shapes, the
resolution cache on a virtual clock, and the ddb settings' validation."""

from __future__ import annotations

import dataclasses
import random

import aiohttp
import pytest
from botocore import exceptions as boto_exc

from dnsrace import settings as settings_mod
from dnsrace.core import ddb
from dnsrace.core.ddb import Outcome


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner``, as aiobotocore does."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer from None
    except BaseException as exc:
        exc.__context__ = inner
        return exc


def test_dns_failure_inside_a_connection_error_is_dns() -> None:
    dns_error = ddb.DnsFailure("dynamodb.us-east-1.sim.internal", "NXDOMAIN")
    key = object()
    connector = aiohttp.ClientConnectorDNSError(key, dns_error)  # type: ignore[arg-type]
    outer = boto_exc.EndpointConnectionError(endpoint_url="http://x", error=connector)
    got = ddb.classify(_wrapped(connector, outer))
    assert got == ddb.Classified(Outcome.DNS, "NXDOMAIN")


def test_refused_and_reset_are_connect() -> None:
    refused = boto_exc.EndpointConnectionError(
        endpoint_url="http://x", error=ConnectionRefusedError(111, "refused"))
    assert ddb.classify(refused).outcome is Outcome.CONNECT
    closed = boto_exc.ConnectionClosedError(
        endpoint_url="http://x", error=aiohttp.ServerDisconnectedError())
    assert ddb.classify(closed).outcome is Outcome.CONNECT


def test_timeouts_are_timeout_even_when_also_connection_errors() -> None:
    assert ddb.classify(boto_exc.ReadTimeoutError(endpoint_url="x")).outcome is Outcome.TIMEOUT
    assert ddb.classify(boto_exc.ConnectTimeoutError(endpoint_url="x")).outcome \
        is Outcome.TIMEOUT
    assert ddb.classify(TimeoutError()).outcome is Outcome.TIMEOUT


def _client_error(code: str, status: int) -> boto_exc.ClientError:
    return boto_exc.ClientError(
        {"Error": {"Code": code, "Message": "m"},
         "ResponseMetadata": {"HTTPStatusCode": status}}, "PutItem")


def test_error_answers() -> None:
    assert ddb.classify(_client_error("ThrottlingException", 400)) == \
        ddb.Classified(Outcome.THROTTLED, "ThrottlingException")
    assert ddb.classify(_client_error("503", 503)).outcome is Outcome.THROTTLED
    assert ddb.classify(_client_error("ConditionalCheckFailedException", 400)).outcome \
        is Outcome.OK, "a failed condition is the service working"
    assert ddb.classify(_client_error("ValidationException", 400)) == \
        ddb.Classified(Outcome.OTHER, "ValidationException")
    assert ddb.classify(_client_error("504", 504)).outcome is Outcome.TIMEOUT
    assert ddb.classify(None) == ddb.Classified(Outcome.OK, "200")
    assert ddb.classify(ValueError("x")) == ddb.Classified(Outcome.OTHER, "ValueError")


def test_dns_failure_names_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown DNS failure"):
        ddb.DnsFailure("x", "BOGUS")


def test_resolution_cache_honours_ttl_capped() -> None:
    cache = ddb.ResolutionCache(max_ttl=5.0, rng=random.Random(1))
    assert cache.get("n", 0.0) is None
    entry = cache.put("n", ["127.0.10.1", "127.0.10.2"], ttl=3, now=10.0)
    assert entry.expires == 13.0
    assert cache.get("n", 12.9) is entry
    assert cache.get("n", 13.0) is None, "expired at its TTL"
    assert cache.put("n", ["a"], ttl=3600, now=0.0).expires == 5.0, "capped at max_ttl"
    assert sorted(cache.order(entry)) == ["127.0.10.1", "127.0.10.2"]
    with pytest.raises(ValueError, match="addresses"):
        cache.put("n", [], ttl=1, now=0.0)


def test_connection_lives_no_longer_than_its_answer() -> None:
    entry = ddb.Resolved(("a",), expires=5.0)
    assert not ddb.connection_expired(entry, 4.9)
    assert ddb.connection_expired(entry, 5.0)
    assert ddb.connection_expired(None, 0.0)


def test_zone_and_request_mix() -> None:
    assert ddb.in_zone("dynamodb.us-east-1.sim.internal.", "sim.internal")
    assert not ddb.in_zone("dynamodb.us-east-1.amazonaws.com", "sim.internal")
    assert not ddb.in_zone("notsim.internal", "sim.internal")
    rng = random.Random(3)
    picks = [ddb.choose_request(rng, 0.3, 10) for _ in range(2000)]
    writes = sum(kind == "write" for kind, _ in picks)
    assert 500 < writes < 700
    assert {key for _, key in picks} == {f"key-{i:05d}" for i in range(10)}


@pytest.mark.parametrize(("change", "setting"), [
    ({"endpoint": "dynamodb.us-east-1.amazonaws.com"}, "ddb.endpoint"),
    ({"lb_capacity": 0}, "ddb.lb_capacity"),
    ({"lb_wait": -1.0}, "ddb.lb_wait"),
    ({"client_workers": 0}, "ddb.client_workers"),
    ({"write_fraction": 1.5}, "ddb.write_fraction"),
])
def test_bad_settings_name_the_setting(change: dict[str, object], setting: str) -> None:
    bad = dataclasses.replace(settings_mod.Ddb(), **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=setting):
        bad.validate()


def test_settings_from_env() -> None:
    cfg = settings_mod.Settings.from_env({"DNSRACE_LB_CAPACITY": "4", "DNSRACE_LB_WAIT": "0.2",
                                          "DNSRACE_DDB_BACKEND": "127.0.0.1:9000"})
    assert (cfg.ddb.lb_capacity, cfg.ddb.lb_wait, cfg.ddb.backend_url) == \
        (4, 0.2, "http://127.0.0.1:9000")
    with pytest.raises(ValueError, match="DNSRACE_LB_CAPACITY"):
        settings_mod.Settings.from_env({"DNSRACE_LB_CAPACITY": "many"})
    with pytest.raises(ValueError, match="DNSRACE_DDB_BACKEND"):
        settings_mod.Settings.from_env({"DNSRACE_DDB_BACKEND": "nohost"})
