"""Bad Faults are refused by the API server, naming the field; nothing is stored."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from dnsrace.components.scenarios.lab import Lab, LabParams
from tests.conftest import Cluster

NS = "dnsrace-fault-test"


@pytest.fixture(scope="module", autouse=True)
def namespace(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("create", "namespace", NS)
    yield NS
    cluster.kubectl("delete", "namespace", NS, "--wait=false")


def fault(**spec: Any) -> dict[str, Any]:
    base = {"target": "enactor-a", "action": "delay", "step": "endpoint-write",
            "delaySeconds": 1}
    base.update(spec)
    return {"apiVersion": "dnsrace.io/v1alpha1", "kind": "Fault",
            "metadata": {"name": f"f-{uuid.uuid4().hex[:8]}"},
            "spec": {k: v for k, v in base.items() if v is not None}}


BAD = {
    "unknown target": (fault(target="enactor-zz"), "spec.target", "unknown target"),
    "unknown step": (fault(step="teleport"), "spec.step", "Unsupported value"),
    "negative delay": (fault(delaySeconds=-2), "spec.delaySeconds",
                       "greater than or equal to 0"),
    "delay without step": (fault(step=None), "spec", "a delay or hold fault needs a step"),
    "endpoints on another step": (fault(step="clean-up", endpoints=["a.sim.internal"]),
                                  "spec", "endpoints only apply to the endpoint-write, "
                                  "endpoint-read and endpoint-change steps"),
    "hold without step": (fault(action="hold", step=None, delaySeconds=None), "spec",
                          "a delay or hold fault needs a step"),
    "negative skip": (fault(action="hold", step="finalize", delaySeconds=None, skip=-1),
                      "spec.skip", "greater than or equal to 0"),
    "unknown action": (fault(action="explode"), "spec.action", "Unsupported value"),
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_fault_is_refused(api: client.ApiClient, case: str) -> None:
    body, field, message = BAD[case]
    co = client.CustomObjectsApi(api)
    with pytest.raises(client.ApiException) as err:
        await co.create_namespaced_custom_object("dnsrace.io", "v1alpha1", NS, "faults", body)
    assert err.value.status == 422
    text = json.loads(err.value.body)["message"]
    assert field in text, text
    assert message in text, text
    stored = await co.list_namespaced_custom_object("dnsrace.io", "v1alpha1", NS, "faults")
    assert body["metadata"]["name"] not in {i["metadata"]["name"] for i in stored["items"]}


async def test_good_fault_is_accepted(api: client.ApiClient) -> None:
    body = fault(endpoints=["dynamodb.us-east-1.sim.internal"], count=3)
    created = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "dnsrace.io", "v1alpha1", NS, "faults", body)
    assert created["spec"]["count"] == 3


async def test_a_hold_at_an_endpoint_with_a_skip_is_accepted(api: client.ApiClient) -> None:
    body = fault(action="hold", step="endpoint-change", delaySeconds=None, skip=2, count=1,
                 endpoints=["dynamodb.us-east-1.sim.internal"])
    created = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        "dnsrace.io", "v1alpha1", NS, "faults", body)
    assert (created["spec"]["action"], created["spec"]["skip"]) == ("hold", 2)


async def test_a_live_fault_is_retuned_in_place(cluster: Cluster, api: client.ApiClient,
                                                tmp_path: Path) -> None:
    """The race's retune (``Lab.patch_fault``) changes a live Fault's delay and jitter by a
    merge patch: the rest of the spec and its status stay."""
    cfg = dataclasses.replace(cluster.cfg, kube=dataclasses.replace(cluster.cfg.kube,
                                                                     namespace=NS))
    body = fault(jitterSeconds=0.2, endpoints=["dynamodb.us-east-1.sim.internal"])
    name = body["metadata"]["name"]
    co = client.CustomObjectsApi(api)
    await co.create_namespaced_custom_object("dnsrace.io", "v1alpha1", NS, "faults", body)
    async with Lab(cfg, LabParams(), tmp_path, lambda _: None) as lab:
        await lab.patch_fault(name, {"delaySeconds": 2.5, "jitterSeconds": 0.7})
    got = await co.get_namespaced_custom_object("dnsrace.io", "v1alpha1", NS, "faults", name)
    assert got["spec"] == dict(body["spec"], delaySeconds=2.5, jitterSeconds=0.7)
