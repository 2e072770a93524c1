"""DnsPlan parsing, the controller's own checks, and agreement with the CRD YAML."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from dnsrace import settings
from dnsrace.core import plans


def _body(*names: str) -> dict[str, Any]:
    return {"metadata": {"name": "plan-1"}, "spec": {"serial": 1, "endpoints": [
        {"name": n, "targets": [{"address": "127.0.10.1", "weight": 1}]} for n in names]}}


def test_parse_and_records_carry_the_serial() -> None:
    plan = plans.Plan.from_body(_body("a.sim.internal", "b.sim.internal"), "sim.internal")
    recs = plan.endpoints[0].records(plan.serial)
    assert sorted(recs) == ["p1-0", "p1-txt"]
    assert recs["p1-txt"].text == "serial=1"


def test_nested_endpoint_names_are_refused() -> None:
    with pytest.raises(plans.PlanError, match="nests under"):
        plans.Plan.from_body(_body("ddb.sim.internal", "x.ddb.sim.internal"), "sim.internal")


def test_outside_zone_is_refused_by_the_controller_too() -> None:
    with pytest.raises(plans.PlanError, match=r"spec.endpoints\[0\].name"):
        plans.Plan.from_body(_body("a.example.com"), "sim.internal")


def test_model_agrees_with_the_crd() -> None:
    crd = yaml.safe_load(
        (settings.Paths().manifests_dir / "crds" / "dnsplans.dnsrace.io.yaml").read_text()
    )
    assert crd["spec"]["group"] == plans.GROUP
    assert crd["spec"]["names"]["plural"] == plans.PLURAL
    assert crd["spec"]["names"]["kind"] == plans.KIND
    version = crd["spec"]["versions"][0]
    assert version["name"] == plans.VERSION
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    endpoints = spec["properties"]["endpoints"]
    assert endpoints["maxItems"] == plans.MAX_ENDPOINTS
    item = endpoints["items"]["properties"]
    assert item["targets"]["maxItems"] == plans.MAX_TARGETS
    assert item["ttl"]["default"] == plans.DEFAULT_TTL
    fields = {f.name for f in plans.Target.__dataclass_fields__.values()}
    assert fields == set(item["targets"]["items"]["properties"])
