"""``core.enacting.PlanStore`` on the API server: DnsPlan objects, read through a watch cache.

The enactor's kopf watch feeds ``observe`` with every DnsPlan event, so reads are served from
memory at the freshness of the watch, as an informer would; deletes and creates go to the API.
A watch can miss a DELETED event (a gap while it reconnects), which would leave a ghost plan that
``get`` reports as live and so hide ``ActivePlanMissing``: ``relist`` rebuilds the cache from a
list, as an informer's resync does, keeping only what the watch saw after the list began.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes_asyncio import client

from dnsrace.core import enacting, plans
from dnsrace.kube import client as kube_client


class KubePlanStore(enacting.PlanStore):
    def __init__(self, api: client.ApiClient, namespace: str, zone: str) -> None:
        self.api = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.zone = zone
        self.cache: dict[int, enacting.StoredPlan] = {}
        self.invalid: dict[str, str] = {}
        """Object name -> why the controller refused it (checks the CRD cannot express)."""
        self._parsed: dict[tuple[str, int], plans.Plan] = {}
        """(uid, generation) -> parsed plan: a plan's spec is immutable, and every finalizer
        and status patch brings the whole object again, so it is parsed once."""
        self._seq = 0
        """Counts observed events, so a relist can tell what the watch saw after it began."""
        self._seen: dict[int, int] = {}
        """serial -> sequence number of the last event that put it in the cache."""
        self._deleted: dict[int, int] = {}
        """serial -> sequence number of its DELETED event (until the next relist)."""

    def parse(self, body: Mapping[str, Any]) -> plans.Plan:
        """The plan in ``body``, parsed and checked once per (uid, generation)."""
        meta = body.get("metadata", {})
        key = (str(meta.get("uid", "")), int(meta.get("generation") or 0))
        plan = self._parsed.get(key) if key[0] else None
        if plan is None:
            plan = plans.Plan.from_body(body, self.zone)
            if key[0]:
                self._parsed[key] = plan
        return plan

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> plans.Plan | None:
        """Fold one watch event into the cache; returns the parsed plan when it is live."""
        meta = body.get("metadata", {})
        name = str(meta.get("name", ""))
        try:
            plan = self.parse(body)
        except plans.PlanError as exc:
            self.invalid[name] = str(exc)
            return None
        self._seq += 1
        if event_type == "DELETED":
            self.cache.pop(plan.serial, None)
            self._seen.pop(plan.serial, None)
            self._deleted[plan.serial] = self._seq
            self._parsed.pop((str(meta.get("uid", "")), int(meta.get("generation") or 0)), None)
            self.invalid.pop(name, None)
            return None
        terminating = bool(body.get("metadata", {}).get("deletionTimestamp"))
        self.cache[plan.serial] = enacting.StoredPlan(plan, terminating=terminating)
        self._seen[plan.serial] = self._seq
        return None if terminating else plan

    def begin_relist(self) -> int:
        """Mark the moment a list call is sent; pass the mark to ``replace``."""
        return self._seq

    def replace(self, items: Sequence[Mapping[str, Any]], mark: int) -> list[str]:
        """Rebuild the cache from a list sent at ``mark``; returns the names it dropped.

        A plan the list lacks is gone unless the watch saw it after the list was sent (then
        the list is the older view); a plan the watch saw deleted after that is not revived.
        """
        cache: dict[int, enacting.StoredPlan] = {}
        seen: dict[int, int] = {}
        names: set[str] = set()
        for body in items:
            meta = body.get("metadata", {})
            names.add(str(meta.get("name", "")))
            try:
                plan = self.parse(body)
            except plans.PlanError as exc:
                self.invalid[str(meta.get("name", ""))] = str(exc)
                continue
            if self._deleted.get(plan.serial, -1) > mark:
                continue
            if self._seen.get(plan.serial, -1) > mark:
                cache[plan.serial], seen[plan.serial] = self.cache[plan.serial], self._seen[
                    plan.serial]
                continue
            cache[plan.serial] = enacting.StoredPlan(
                plan, terminating=bool(meta.get("deletionTimestamp")))
            seen[plan.serial] = mark
        for serial, stamp in self._seen.items():
            if stamp > mark and serial not in cache and serial in self.cache:
                cache[serial], seen[serial] = self.cache[serial], stamp
                names.add(self.cache[serial].plan.name)
        dropped = sorted(p.plan.name for s, p in self.cache.items() if s not in cache)
        self.cache, self._seen = cache, seen
        self._deleted = {s: q for s, q in self._deleted.items() if q > mark}
        live_uids = {p.plan.uid for p in cache.values()}
        self._parsed = {k: v for k, v in self._parsed.items() if k[0] in live_uids}
        self.invalid = {n: why for n, why in self.invalid.items() if n in names}
        return dropped

    async def relist(self) -> list[dict[str, Any]]:
        """List the namespace's plans and rebuild the cache from them; returns the items."""
        mark = self.begin_relist()
        result = await self.api.list_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL
        )
        items: list[dict[str, Any]] = list(result.get("items", []))
        self.replace(items, mark)
        return items

    async def newest(self) -> plans.Plan | None:
        live = [s for s, p in self.cache.items() if not p.terminating]
        return self.cache[max(live)].plan if live else None

    async def get(self, serial: int) -> enacting.StoredPlan | None:
        return self.cache.get(serial)

    async def serials(self) -> list[int]:
        return sorted(s for s, p in self.cache.items() if not p.terminating)

    async def delete(self, serial: int) -> None:
        stored = self.cache.get(serial)
        name = stored.plan.name if stored and stored.plan.name else plans.object_name(serial)
        try:
            await self.api.delete_namespaced_custom_object(
                plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL, name
            )
        except client.ApiException as exc:
            if kube_client.status_of(exc) != 404:
                raise

    async def set_finalizer(self, name: str, finalizer: str, manager: str,
                            present: bool) -> bool:
        """Add or drop ``finalizer`` by server-side apply; False when the plan is gone.

        Finalizers form a set-type list, so each enactor's field manager owns its own entry
        and never overwrites the others'. A merge patch of the whole list would race the other
        enactors; kopf's own finalizer handling computes a JSON patch by diffing a deep copy of
        the whole object, which on a 100-endpoint plan stalled the enactor's event loop
        (docs/benchmarks.md).
        """
        body = {
            "apiVersion": f"{plans.GROUP}/{plans.VERSION}",
            "kind": plans.KIND,
            "metadata": {"name": name, "namespace": self.namespace,
                         "finalizers": [finalizer] if present else []},
        }
        try:
            await self.api.patch_namespaced_custom_object(  # type: ignore[call-arg]
                plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL, name, body,
                field_manager=manager, force=True,
                _content_type="application/apply-patch+yaml",
            )
        except client.ApiException as exc:
            # 404: gone. 422: being deleted (no finalizer may be added), or gone and the
            # apply would have created a plan without a spec.
            if kube_client.status_of(exc) in (404, 409, 422):
                return False
            raise
        return True

    async def create(self, plan: plans.Plan, labels: Mapping[str, str] | None = None) -> None:
        """Create the DnsPlan object; a 409 means the serial exists already."""
        body = {
            "apiVersion": f"{plans.GROUP}/{plans.VERSION}",
            "kind": plans.KIND,
            "metadata": {"name": plans.object_name(plan.serial), "labels": dict(labels or {})},
            "spec": plan.to_spec(),
        }
        await self.api.create_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL, body
        )

    async def load(self) -> None:
        """Fill the cache with a list call (for one-shot commands that run no watch)."""
        result = await self.api.list_namespaced_custom_object(
            plans.GROUP, plans.VERSION, self.namespace, plans.PLURAL
        )
        for item in result.get("items", []):
            self.observe("ADDED", item)
