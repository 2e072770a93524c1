"""Events and status on dnsrace's objects, as the components report what they did.

Status goes through server-side apply with one field manager per component, so three enactors
each own their own entry in ``status.enactors`` and their own condition without overwriting each
other. Events are core/v1 Events, which ``kubectl describe`` and ``kubectl get events`` show.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client

from dnsrace.core import plans


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def apply_status(
    api: client.ApiClient, namespace: str, plural: str, kind: str, name: str,
    manager: str, status: Mapping[str, Any],
) -> None:
    body = {
        "apiVersion": f"{plans.GROUP}/{plans.VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "status": dict(status),
    }
    await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(  # type: ignore[call-arg]
        plans.GROUP, plans.VERSION, namespace, plural, name, body,
        field_manager=manager, force=True, _content_type="application/apply-patch+yaml",
    )


def condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason,
            "message": message[:32000], "lastTransitionTime": now()}


async def post_event(
    api: client.ApiClient, namespace: str, *, kind: str, name: str, uid: str | None,
    type_: str, reason: str, message: str, component: str,
) -> None:
    stamp = datetime.datetime.now(datetime.UTC)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:12]}", namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version=f"{plans.GROUP}/{plans.VERSION}", kind=kind, name=name,
            namespace=namespace, uid=uid,
        ),
        type=type_, reason=reason, message=message[:1000],
        source=client.V1EventSource(component=component),
        reporting_component=f"dnsrace.io/{component}", reporting_instance=component,
        first_timestamp=stamp, last_timestamp=stamp, event_time=stamp, count=1,
        action=reason,
    )
    await client.CoreV1Api(api).create_namespaced_event(namespace, event)
