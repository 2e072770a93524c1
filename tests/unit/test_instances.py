"""core/instances: names, endpoints, conditions and the status an attempt writes, and their
agreement with the Instance CRD's YAML (the API server's own verdicts on bad Instances are
tests/integration/test_launcher.py's)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dnsrace import settings
from dnsrace.core import instances, launching

CRD_PATH = settings.Paths().manifests_dir / "crds" / "instances.dnsrace.io.yaml"


def _crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# -- names and endpoints ---------------------------------------------------------------------


def test_names_number_requests_from_one() -> None:
    assert instances.name_of(42) == "i-000042"
    assert instances.name_of(1_234_567) == "i-1234567"
    assert instances.request_of("i-000042") == 42
    assert instances.request_of("i-000000") is None
    assert instances.request_of("droplet-001") is None
    with pytest.raises(ValueError, match="start at 1"):
        instances.name_of(0)
    first = launching.Attempt(t=1.0, request=0, attempt=1, az="us-east-1a",
                              outcome=launching.FAILED)
    assert instances.number_of(first) == 1
    assert instances.number_of(first, offset=300) == 301


@pytest.mark.parametrize(("number", "endpoint"), [
    (1, "127.0.20.1:8080"), (250, "127.0.20.250:8080"), (251, "127.0.21.1:8080"),
    (42, "127.0.20.42:8080"), (59_000, "127.0.255.250:8080"),
])
def test_address_endpoints(number: int, endpoint: str) -> None:
    assert instances.endpoint_for(number) == endpoint


def test_address_endpoints_are_distinct_and_end_at_the_loopback_net() -> None:
    seen = {instances.endpoint_for(n) for n in range(1, 5001)}
    assert len(seen) == 5000
    with pytest.raises(ValueError, match="use style port"):
        instances.endpoint_for(59_001)


def test_port_endpoints() -> None:
    assert instances.endpoint_for(42, "port", "instances.dnsrace") == "instances.dnsrace:20042"
    assert instances.endpoint_for(20_001, "port", "h") == "h:20001"
    assert instances.endpoint_for(5, "port", "h", base=30000) == "h:30005"
    with pytest.raises(ValueError, match="needs a host"):
        instances.endpoint_for(1, "port")
    with pytest.raises(ValueError, match="not a TCP port"):
        instances.endpoint_for(19_999, "port", "h", base=50000)
    with pytest.raises(ValueError, match="unknown endpoint style"):
        instances.endpoint_for(1, "dns")


# -- conditions ------------------------------------------------------------------------------


def test_merging_keeps_the_transition_time_while_the_status_holds() -> None:
    first = instances.condition("Launched", False, "InsufficientCapacity", "a", 1000.0)
    assert first["lastTransitionTime"] == "1970-01-01T00:16:40Z"
    other = instances.condition("NetworkReady", "Unknown", "", "b", 1000.0)
    assert other["reason"] == "NetworkReady"  # never empty
    merged = instances.merge_condition([first, other], instances.condition(
        "Launched", False, "RequestLimitExceeded", "c", 2000.0))
    assert [c["type"] for c in merged] == ["Launched", "NetworkReady"]
    assert merged[0]["lastTransitionTime"] == first["lastTransitionTime"]
    assert (merged[0]["reason"], merged[0]["message"]) == ("RequestLimitExceeded", "c")
    assert merged[1] == other
    flipped = instances.merge_condition(merged, instances.condition(
        "Launched", True, "Launched", "d", 3000.0))
    assert flipped[0]["lastTransitionTime"] == instances.timestamp(3000.0)
    assert instances.merge_condition(None, first) == [first]
    assert instances.merge_condition([other], first) == [other, first]
    with pytest.raises(ValueError, match="True, False or Unknown"):
        instances.condition("Launched", "Maybe", "x", "y", 0.0)


# -- what an attempt writes ------------------------------------------------------------------


def _attempt(outcome: str, **kw: Any) -> launching.Attempt:
    base: dict[str, Any] = {"t": 1_700_000_000.25, "request": 41, "attempt": 3,
                            "az": "us-east-1b", "outcome": outcome, "waited": 21.5}
    base.update(kw)
    return launching.Attempt(**base)


def test_a_failed_attempt_is_pending_with_its_reason() -> None:
    a = _attempt(launching.FAILED, reason=launching.INSUFFICIENT_CAPACITY)
    patch = instances.status_patch(a, None, retry_after=10.0)["status"]
    assert patch["phase"] == "Pending"
    assert patch["attempts"] == 3
    assert patch["reason"] == "InsufficientCapacity"
    (cond,) = patch["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "Launched", "False", "InsufficientCapacity")
    assert "holds a valid lease" in cond["message"]
    assert "about 10 s" in cond["message"]
    assert "droplet" not in patch
    assert "endpoint" not in patch
    kind, reason, message = instances.event_for(a, 10.0)
    assert (kind, reason) == ("Warning", "InsufficientCapacity")
    assert message == cond["message"]


def test_a_launch_keeps_the_last_failure_reason_and_the_first_transition() -> None:
    failed = instances.status_patch(
        _attempt(launching.FAILED, reason=launching.REQUEST_LIMIT_EXCEEDED, t=100.0), None)
    launched = _attempt(launching.LAUNCHED, droplet="droplet-007", instance="i-000003")
    patch = instances.status_patch(launched, failed["status"]["conditions"],
                                   endpoint="127.0.20.42:8080")["status"]
    assert patch["phase"] == "Launched"
    assert "reason" not in patch  # a merge patch: the last failed attempt's reason stays
    assert patch["droplet"] == "droplet-007"
    assert patch["endpoint"] == "127.0.20.42:8080"
    assert patch["launchedAt"] == 1_700_000_000.25
    (cond,) = patch["conditions"]
    assert (cond["status"], cond["reason"]) == ("True", "Launched")
    assert cond["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert instances.event_for(launched)[:2] == ("Normal", "Launched")
    with pytest.raises(ValueError, match="droplet and endpoint"):
        instances.status_patch(launched, None)


def test_giving_up() -> None:
    a = _attempt(launching.GAVE_UP, reason=launching.INSUFFICIENT_CAPACITY)
    patch = instances.status_patch(a, None)["status"]
    assert (patch["phase"], patch["reason"]) == ("GaveUp", "InsufficientCapacity")
    assert patch["conditions"][0]["reason"] == "GaveUp"
    kind, reason, message = instances.event_for(a)
    assert (kind, reason) == ("Warning", "InsufficientCapacity")
    assert "gave up" in message


def test_the_body_of_a_new_instance() -> None:
    assert instances.body(42, "us-east-1c") == {
        "apiVersion": "dnsrace.io/v1alpha1", "kind": "Instance",
        "metadata": {"name": "i-000042", "labels": {"dnsrace.io/az": "us-east-1c"}},
        "spec": {"az": "us-east-1c", "request": 42}}
    with pytest.raises(ValueError, match="unknown AZ"):
        instances.body(1, "us-west-2a")


# -- the CRD ---------------------------------------------------------------------------------


def test_names_agree_with_the_crd() -> None:
    crd = _crd()
    assert crd["metadata"]["name"] == f"{instances.PLURAL}.{instances.GROUP}"
    spec = crd["spec"]
    assert spec["group"] == instances.GROUP
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["plural"], names["singular"], names["kind"]) == (
        instances.PLURAL, instances.SINGULAR, instances.KIND)
    assert names["shortNames"] == [instances.SHORT_NAME]
    (version,) = spec["versions"]
    assert version["name"] == instances.VERSION
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {"AZ": ".spec.az", "Phase": ".status.phase",
                       "Droplet": ".status.droplet", "Reason": ".status.reason",
                       "Network": ".status.networkReady", "Endpoint": ".status.endpoint",
                       "Age": ".metadata.creationTimestamp"}


def test_the_spec_refuses_a_bad_az_a_request_below_one_and_any_change() -> None:
    spec = _schema()["properties"]["spec"]
    assert sorted(spec["required"]) == ["az", "request"]
    assert spec["properties"]["az"]["enum"] == list(launching.AZS)
    assert spec["properties"]["request"]["type"] == "integer"
    assert spec["properties"]["request"]["minimum"] == 1
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert rules == ["self == oldSelf"]  # immutable as a whole
    assert set(spec["properties"]) == {"az", "request"}


def test_the_status_holds_what_the_components_write() -> None:
    status = _schema()["properties"]["status"]
    props = status["properties"]
    assert "required" not in status
    assert props["phase"]["enum"] == list(instances.PHASES)
    assert props["reason"]["enum"] == list(instances.REASONS)
    assert props["attempts"]["minimum"] == 0
    assert props["networkReady"]["type"] == "boolean"
    for field in ("launchedAt", "networkReadyAt"):
        assert props[field]["type"] == "number"
    item = props["conditions"]["items"]
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    # Everything a status patch writes is a field of the schema, with a value it allows.
    launched = _attempt(launching.LAUNCHED, droplet="droplet-001")
    failed = _attempt(launching.FAILED, reason=launching.REQUEST_LIMIT_EXCEEDED)
    for patch in (instances.status_patch(launched, None, endpoint="127.0.20.1:8080"),
                  instances.status_patch(failed, None)):
        for key, value in patch["status"].items():
            assert key in props, key
            if "enum" in props[key]:
                assert value in props[key]["enum"], (key, value)
        for cond in patch["status"]["conditions"]:
            assert set(item["required"]) <= set(cond)
    # The object the launcher creates fits the spec's schema.
    body = instances.body(1, "us-east-1a")
    assert set(body["spec"]) == set(_schema()["properties"]["spec"]["required"])


def test_the_crd_is_installed_by_kustomize() -> None:
    kustomization = yaml.safe_load(
        (settings.Paths().manifests_dir / "kustomization.yaml").read_text())
    assert "crds/instances.dnsrace.io.yaml" in kustomization["resources"]
