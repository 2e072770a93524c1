"""The controller's own checks, second after the CRD's: a plan whose endpoint names nest (valid
to the schema, but CoreDNS would serve one name's records as the other's) is refused by a real
enactor process with a Warning Event and a condition, and nothing is written to the DNS etcd."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

from kubernetes_asyncio import client

from dnsrace.core import plans
from dnsrace.dnsstore import etcd as etcd_store
from dnsrace.localplane import processes
from tests.conftest import Cluster


async def test_nested_names_are_refused_with_event_and_condition(
    cluster: Cluster, api: client.ApiClient, dns_store: etcd_store.EtcdRecordStore,
    namespace: str, tmp_path: Path,
) -> None:
    procs = processes.Processes(tmp_path)
    env = dict(os.environ, DNSRACE_KUBECONFIG=str(cluster.kubeconfig), DNSRACE_NAMESPACE=namespace,
               DNSRACE_DNS_ETCD=cluster.cfg.dns.etcd_endpoint, DNSRACE_HTTP_PORT="18290")
    procs.start("enactor-a", [sys.executable, "-m", "dnsrace", "enactor", "--name", "enactor-a"],
                env=env, cwd=tmp_path)
    tag = uuid.uuid4().hex[:6]
    outer, inner = f"{tag}.ddb.sim.internal", f"x.{tag}.ddb.sim.internal"
    body = {"apiVersion": "dnsrace.io/v1alpha1", "kind": "DnsPlan",
            "metadata": {"name": "plan-0000000005"},
            "spec": {"serial": 5, "endpoints": [
                {"name": n, "targets": [{"address": "127.0.10.1", "weight": 1}]}
                for n in (outer, inner)]}}
    try:
        await client.CustomObjectsApi(api).create_namespaced_custom_object(
            plans.GROUP, plans.VERSION, namespace, plans.PLURAL, body)
        events: list[client.CoreV1Event] = []
        for _ in range(60):
            events = [e for e in (await client.CoreV1Api(api).list_namespaced_event(
                namespace)).items if e.reason == "InvalidPlan"]
            if events:
                break
            await asyncio.sleep(0.5)
        assert events, f"no InvalidPlan event; log: {procs.log_path('enactor-a').read_text()}"
        assert events[0].type == "Warning"
        assert "nests under" in events[0].message
        got = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            plans.GROUP, plans.VERSION, namespace, plans.PLURAL, "plan-0000000005")
        conditions = {c["type"]: c for c in got["status"]["conditions"]}
        cond = conditions["enactor-a.dnsrace.io/Applied"]
        assert cond["status"] == "False"
        assert cond["reason"] == "InvalidPlan"
        assert (await dns_store.read(outer)).records == {}
    finally:
        # Deleted while the enactor runs, so its finalizer comes off and the namespace can go.
        co = client.CustomObjectsApi(api)
        await co.delete_namespaced_custom_object(plans.GROUP, plans.VERSION, namespace,
                                                 plans.PLURAL, "plan-0000000005")
        for _ in range(40):
            items = (await co.list_namespaced_custom_object(
                plans.GROUP, plans.VERSION, namespace, plans.PLURAL))["items"]
            if not items:
                break
            await asyncio.sleep(0.25)
        procs.stop("enactor-a")
