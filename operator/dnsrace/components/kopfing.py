"""How every dnsrace component runs kopf: its own registry, standalone, with its own finalizer.

The enactors must be fully independent, as the three per-AZ enactors were: no kopf peering (which
would let only one of them run), and distinct finalizers and progress annotations, so each
enactor's handlers see and block deletion on their own. This module is the one place that sets
that up; components register handlers on the registry it returns and call ``run``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import kopf


def registry(kubeconfig: Path | None) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        if kubeconfig is None:
            return kopf.login_with_service_account(**kwargs)
        # kopf's kubeconfig login reads the file named by KUBECONFIG, nothing else.
        os.environ["KUBECONFIG"] = str(kubeconfig)
        return kopf.login_with_kubeconfig(**kwargs)

    return reg


def settings(component: str) -> kopf.OperatorSettings:
    cfg = kopf.OperatorSettings()
    cfg.peering.standalone = True
    cfg.persistence.finalizer = f"{component}.dnsrace.io/finalizer"
    cfg.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=f"{component}.dnsrace.io")
    cfg.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=f"{component}.dnsrace.io", key="last-handled-configuration")
    cfg.posting.level = logging.WARNING
    cfg.watching.server_timeout = 120
    cfg.networking.request_timeout = 30
    return cfg


async def run(reg: kopf.OperatorRegistry, component: str, namespace: str,
              stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    await kopf.operator(
        registry=reg, settings=settings(component), standalone=True,
        namespaces=[namespace], stop_flag=stop, ready_flag=ready,
    )
