"""The DnsPlan CRD on the real API server: valid plans are stored, bad ones are refused with a
message that names the field, and a refused request leaves existing plans as they were."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from dnsrace.core import plans
from tests.conftest import Cluster

NS = "dnsrace-crd-test"
"""Not the lab namespace: the enactors there would act on these plans."""


def plan_body(serial: int, name: str | None = None) -> dict[str, Any]:
    name = name or plans.object_name(serial)
    return {
        "apiVersion": f"{plans.GROUP}/{plans.VERSION}",
        "kind": plans.KIND,
        "metadata": {"name": name, "labels": {"test": "crd"}},
        "spec": {
            "serial": serial,
            "endpoints": [
                {"name": "dynamodb.us-east-1.sim.internal", "ttl": 5,
                 "targets": [{"address": "127.0.10.1", "weight": 100},
                             {"address": "127.0.10.2", "weight": 20}]},
                {"name": "dynamodb.us-east-1.api.sim.internal",
                 "targets": [{"address": "fd00:10::1", "weight": 1}]},
            ],
        },
    }


def _serial() -> int:
    """A serial no other test in the namespace uses (names follow serials)."""
    return uuid.uuid4().int % 9_000_000_000 + 1_000_000_000


async def _create(api: client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        plans.GROUP, plans.VERSION, NS, plans.PLURAL, body
    )
    return result


async def _list(api: client.ApiClient) -> dict[str, Any]:
    result = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        plans.GROUP, plans.VERSION, NS, plans.PLURAL
    )
    return {item["metadata"]["name"]: item for item in result["items"]}


@pytest.fixture(scope="module", autouse=True)
def namespace(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("create", "namespace", NS)
    yield NS
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def test_crds_are_installed(cluster: Cluster) -> None:
    out = cluster.kubectl("get", "crds", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert "customresourcedefinition.apiextensions.k8s.io/dnsplans.dnsrace.io" in out.stdout


async def test_valid_plan_is_accepted_and_reads_back(api: client.ApiClient) -> None:
    serial = _serial()
    name = plans.object_name(serial)
    created = await _create(api, plan_body(serial))
    assert created["spec"]["serial"] == serial
    got = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        plans.GROUP, plans.VERSION, NS, plans.PLURAL, name
    )
    assert got["spec"]["endpoints"][0]["targets"][1] == {"address": "127.0.10.2", "weight": 20}
    assert got["spec"]["endpoints"][1]["ttl"] == 5, "the schema default fills the TTL"
    parsed = plans.Plan.from_body(got, "sim.internal")
    assert parsed.serial == serial
    assert len(parsed.endpoints) == 2


def _mutate(path: list[Any], value: Any) -> Any:
    def apply(body: dict[str, Any]) -> None:
        node: Any = body["spec"]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return apply


def _dup_endpoint(body: dict[str, Any]) -> None:
    body["spec"]["endpoints"].append(copy.deepcopy(body["spec"]["endpoints"][0]))


def _too_many(body: dict[str, Any]) -> None:
    template = body["spec"]["endpoints"][0]
    body["spec"]["endpoints"] = [
        dict(copy.deepcopy(template), name=f"acct-{i}.ddb.us-east-1.sim.internal")
        for i in range(plans.MAX_ENDPOINTS + 1)
    ]


BAD_PLANS = {
    "bad address": (_mutate(["endpoints", 0, "targets", 0, "address"], "300.1.2.3"),
                    "spec.endpoints[0].targets[0].address", "canonical IPv4 or IPv6"),
    "non-canonical IPv6": (_mutate(["endpoints", 1, "targets", 0, "address"], "FD00:10:0::1"),
                           "spec.endpoints[1].targets[0].address", "canonical"),
    "upper-case name": (_mutate(["endpoints", 0, "name"], "DynamoDB.us-east-1.sim.internal"),
                        "spec.endpoints[0].name", "lower-case"),
    "over-long name": (_mutate(["endpoints", 0, "name"], "a" * 250 + ".sim.internal"),
                       "spec.endpoints[0].name", "Too long"),
    "over-long label": (_mutate(["endpoints", 0, "name"], "a" * 64 + ".sim.internal"),
                        "spec.endpoints[0].name", "valid DNS name"),
    "name outside the zone": (_mutate(["endpoints", 0, "name"], "dynamodb.us-east-1.amazonaws.com"),
                              "spec.endpoints[0].name", "inside the lab zone"),
    "duplicate endpoint": (_dup_endpoint, "spec.endpoints[2]", "Duplicate value"),
    "zero targets": (_mutate(["endpoints", 0, "targets"], []), "spec.endpoints[0].targets",
                     "should have at least 1 items"),
    "weight out of range": (_mutate(["endpoints", 0, "targets", 0, "weight"], 256),
                            "spec.endpoints[0].targets[0].weight", "less than or equal to 255"),
    "negative weight": (_mutate(["endpoints", 0, "targets", 0, "weight"], -1),
                        "spec.endpoints[0].targets[0].weight", "greater than or equal to 0"),
    "only zero weights": (_mutate(["endpoints", 1, "targets", 0, "weight"], 0),
                          "spec.endpoints[1].targets", "positive weight"),
    "too many endpoints": (_too_many, "spec.endpoints", "must have at most 256 items"),
    "serial zero": (_mutate(["serial"], 0), "spec.serial", "greater than or equal to 1"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS))
async def test_bad_plan_is_rejected_naming_the_field(api: client.ApiClient, case: str) -> None:
    keeper = plans.object_name(ks := _serial())
    await _create(api, plan_body(ks))
    before = (await _list(api))[keeper]

    mutate, field, message = BAD_PLANS[case]
    body = plan_body(_serial())
    mutate(body)
    with pytest.raises(client.ApiException) as err:
        await _create(api, body)
    assert err.value.status == 422, err.value.body
    text = json.loads(err.value.body)["message"]
    assert field in text, text
    assert message in text, text

    after = await _list(api)
    assert body["metadata"]["name"] not in after
    assert after[keeper]["spec"] == before["spec"]
    assert after[keeper]["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_spec_is_immutable(api: client.ApiClient) -> None:
    serial = _serial()
    name = plans.object_name(serial)
    created = await _create(api, plan_body(serial))
    patch = {"spec": {"serial": serial + 1}}
    with pytest.raises(client.ApiException) as err:
        await client.CustomObjectsApi(api).patch_namespaced_custom_object(
            plans.GROUP, plans.VERSION, NS, plans.PLURAL, name, patch,
            _content_type="application/merge-patch+json",
        )
    assert err.value.status == 422
    text = json.loads(err.value.body)["message"]
    assert "spec" in text, text
    assert "immutable" in text, text
    got = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        plans.GROUP, plans.VERSION, NS, plans.PLURAL, name
    )
    assert got["spec"] == created["spec"]


def test_kubectl_shows_printer_columns_and_examples_apply(cluster: Cluster) -> None:
    applied = cluster.kubectl("apply", "-n", NS, "-f",
                              str(cluster.cfg.paths.manifests_dir / "examples"))
    assert applied.returncode == 0, applied.stderr
    table = cluster.kubectl("get", "dnsplans", "-n", NS, "plan-0000000001")
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "SERIAL", "ENDPOINTS", "APPLIED-BY", "ACTIVE-ON"], header


def test_kubectl_reports_a_bad_plan_clearly(cluster: Cluster) -> None:
    serial = _serial()
    bad = json.dumps(dict(plan_body(serial), metadata={"name": plans.object_name(serial),
                                                        "namespace": NS}))
    bad = bad.replace("127.0.10.1", "not-an-ip")
    out = cluster.kubectl("apply", "-f", "-", stdin=bad)
    assert out.returncode != 0
    assert "spec.endpoints[0].targets[0].address" in out.stderr, out.stderr
    assert "must be a canonical IPv4 or IPv6 address" in out.stderr, out.stderr


@pytest.mark.parametrize("name", ["plan-42", "plan-0000000042", "my-plan"])
async def test_a_name_that_is_not_the_serial_is_refused(api: client.ApiClient, name: str) -> None:
    # plan-42 with serial 900002 was accepted before: two plans could then carry one serial.
    keeper = plans.object_name(ks := _serial())
    await _create(api, plan_body(ks))
    serial = _serial()
    with pytest.raises(client.ApiException) as err:
        await _create(api, plan_body(serial, name=name))
    assert err.value.status == 422, err.value.body
    text = json.loads(err.value.body)["message"]
    assert "spec.serial" in text, text
    assert "metadata.name must be plan-<spec.serial in 10 digits>" in text, text
    after = await _list(api)
    assert name not in after
    assert keeper in after
    await _create(api, plan_body(serial))  # its own name is accepted
