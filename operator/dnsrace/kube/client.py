"""Kubernetes API access for dnsrace's own code (components and tests), via kubernetes_asyncio.

kopf keeps its own client for watching; everything dnsrace itself calls (create a plan, delete
old ones, patch status, post Events) goes through here so one client library is used throughout.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes_asyncio import client, config


async def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from ``kubeconfig``, or the in-cluster service account when it is None."""
    if kubeconfig is None:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an API error, or None for anything else."""
    return exc.status if isinstance(exc, client.ApiException) else None
