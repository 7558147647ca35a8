"""Rollouts: roll a Deployment, StatefulSet or DaemonSet once when a Secret key it reads changes.

Frame stores keep what the decision needs, and nothing more: per Secret, keyed digests of its keys (never values)
and whether it is generated credentials; per service, its uses of Secrets, whether it opted in or out, and the
state it was last rolled for. A change to a Secret enqueues the services that use it on the settling window
(``rules.settling``); the reconcile reads the caches, decides with the pure ``rules.rollout`` functions, and writes
the new state — with the restart annotation when it rolls — in one PATCH guarded by the object's resourceVersion.

The queue's lanes: at start every service is background work (most have nothing to do); a change seen on a watch is
urgent and goes ahead of them. A service's event that changes nothing the decision reads (a status update, or the
controller's own PATCH, which the reconcile writes through to the cache) enqueues nothing.
"""

from __future__ import annotations

import datetime
import sys
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from kubernetes_asyncio import client

from controller.frame.logs import outcome, reconcile_logger
from controller.frame.loop import Loop
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from controller.frame.settings import Settings
from controller.frame.store import Store
from kubeio.events import record_event
from kubeio.informer import Informer
from kubeio.rest import MERGE_PATCH, ApiException, get_or_none, json_request
from rules.names import RESTARTED_AT, ROLLOUT_STATE
from rules.references import Use, uses_in
from rules.rollout import (
    State,
    current_state,
    decide,
    describe_changes,
    describe_missing,
    format_state,
    is_generated,
    key_digests,
    legacy_key_digests,
    migrate,
    missing_needs,
    opted_in,
    opted_out,
    parse_recorded,
    rolling_uses,
)
from rules.workloads import ROLLED_KINDS, annotations_of, api_version, pod_template, resource_path

log = reconcile_logger(__name__)

ServiceKey = tuple[str, str, str]  # kind, namespace, name
SecretKey = tuple[str, str]  # namespace, name
# Who owns the fields the controller writes (managedFields): its own name, not the client library's default.
FIELD_MANAGER = "smll-secrets-controller"


@dataclass(frozen=True, slots=True)
class Service:
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    opted_in: bool
    opted_out: bool
    uses: tuple[Use, ...]
    stored: str | None

    @property
    def key(self) -> ServiceKey:
        return self.kind, self.namespace, self.name

    def same_as(self, other: Service) -> bool:
        """Equal in all but the resourceVersion: a change that is no reason to reconcile. (The generation moves
        with a change of the spec; with one of the annotations only on a Deployment, not on a StatefulSet or a
        DaemonSet. The opt-in, opt-out, uses and stored state compared here are read from the annotations too, so
        a user's edit of the spec or of the product's annotations still brings a failed service back.)"""
        return replace(other, resource_version=self.resource_version) == self


def service_of(obj: dict[str, Any], kind: str) -> Service:
    metadata = obj.get("metadata") or {}
    found = annotations_of(obj)
    pods = pod_template(obj, kind)  # a workload's: never the object itself
    template = annotations_of(pods)
    return Service(
        kind=kind,
        namespace=sys.intern(str(metadata.get("namespace", ""))),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        generation=int(metadata.get("generation") or 0),
        opted_in=opted_in(found, template),
        opted_out=opted_out(found, template),
        # A pull secret is read at image pull only: changing it is no reason to restart anything.
        uses=tuple(use for use in uses_in(pods, found, template) if not use.for_image_pull),
        stored=found.get(ROLLOUT_STATE),
    )


@dataclass(frozen=True, slots=True)
class Digests:
    """All that is kept of a Secret: keyed digests of its keys (the values go as soon as it is decoded), and
    whether it is generated credentials (a rotation rolls every reader)."""

    keys: dict[str, str]
    generated: bool


def secret_entry(obj: dict[str, Any], hmac_key: bytes) -> tuple[SecretKey, Digests]:
    metadata = obj.get("metadata") or {}
    key = (sys.intern(str(metadata.get("namespace", ""))), str(metadata.get("name", "")))
    labels = metadata.get("labels") or {}
    digests = key_digests(obj.get("data") or {}, hmac_key, namespace=key[0], secret=key[1])
    return key, Digests(digests, is_generated(labels))


class Caches:
    """Secret digests and services (one store per kind), with the reverse index Secret → services that read it."""

    def __init__(
        self, hmac_key: bytes, queue: WorkQueue[ServiceKey], settle_seconds: float, settle_max_seconds: float = 0.0
    ) -> None:
        self.queue = queue
        self.hmac_key = hmac_key
        self.settle_seconds = settle_seconds
        self.settle_max_seconds = settle_max_seconds
        self.secrets: Store[SecretKey, Digests] = Store(
            lambda obj: secret_entry(obj, hmac_key), changed=self._secret_changed
        )
        self.services: dict[str, Store[ServiceKey, Service]] = {
            kind: Store(_service_compact(kind), changed=self._service_changed) for kind in sorted(ROLLED_KINDS)
        }
        self.readers: dict[SecretKey, set[ServiceKey]] = defaultdict(set)

    def service(self, key: ServiceKey) -> Service | None:
        return self.services[key[0]].get(key)

    def _secret_changed(self, key: SecretKey, before: Digests | None, after: Digests | None) -> None:
        """A change of a Secret's keys or type (not at the first list: no rollout at start) reconciles its readers
        on the settling window."""
        if before == after or not self.secrets.synced:
            return
        for service in self.readers.get(key, ()):
            self.queue.add_settled(service, self.settle_seconds, self.settle_max_seconds)

    def _service_changed(self, key: ServiceKey, before: Service | None, after: Service | None) -> None:
        """Every service once at the first list, as background work; afterwards only a change the decision reads,
        as urgent work."""
        if before is not None and after is not None and before.same_as(after):
            return
        if before is not None:
            for use in before.uses:
                readers = self.readers.get((before.namespace, use.secret))
                if readers is not None:
                    readers.discard(key)
                    if not readers:  # keep no empty set for a Secret nobody reads any more
                        del self.readers[(before.namespace, use.secret)]
        if after is not None:
            for use in after.uses:
                self.readers[(after.namespace, use.secret)].add(key)
            self.queue.add(key, background=not self.services[key[0]].synced)

    def secrets_of(self, service: Service) -> dict[str, dict[str, str] | None]:
        """The digests of each Secret the service uses; None for one that does not exist."""
        found = {use.secret: self.secrets.get((service.namespace, use.secret)) for use in service.uses}
        return {secret: digests.keys if digests is not None else None for secret, digests in found.items()}

    def rolling_uses(self, service: Service) -> tuple[Use, ...]:
        generated = set()
        for use in service.uses:
            digests = self.secrets.get((service.namespace, use.secret))
            if digests is not None and digests.generated:
                generated.add(use.secret)
        return rolling_uses(service.uses, opted_in=service.opted_in, opted_out=service.opted_out, generated=generated)


def _service_compact(kind: str) -> Callable[[dict[str, Any]], tuple[ServiceKey, Service]]:
    def compact(obj: dict[str, Any]) -> tuple[ServiceKey, Service]:
        service = service_of(obj, kind)
        return service.key, service

    return compact


class Rollouts:
    """The reconcile of one service key."""

    def __init__(
        self,
        api: client.ApiClient,
        caches: Caches,
        metrics: ControllerMetrics,
        *,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.caches = caches
        self.metrics = metrics
        self.now = now
        # Services whose rollout is held, with the reason last told in an Event: told once, not per reconcile.
        self.held: dict[ServiceKey, str] = {}

    async def reconcile(self, key: ServiceKey) -> bool:
        """Whether the frame paces it: a rollout (pods restart) or a held service's Event, yes; nothing to do, or
        only the service's state recorded (a metadata PATCH, no restart: a first start records every service), no —
        those go as fast as the workers and the apiserver's own priority and fairness let them."""
        service = self.caches.service(key)
        uses = self.caches.rolling_uses(service) if service is not None else ()
        if service is None or not uses:
            self.held.pop(key, None)
            return False
        secrets = self.caches.secrets_of(service)
        current = current_state(uses, secrets)
        recorded = parse_recorded(service.stored)
        stored = recorded.state if recorded is not None else None
        legacy = recorded is not None and recorded.legacy
        if recorded is not None and legacy:
            stored = await self.migrated(service, recorded.state, current)
        decision = decide(stored, current, missing_needs(service.uses, secrets))
        if decision.held:
            return await self.hold(
                service, f"{describe_changes(decision.changed)}, but {describe_missing(decision.held)}"
            )
        self.held.pop(key, None)
        if not decision.record and not legacy:  # a legacy record is rewritten in this format even when unchanged
            return False
        patch: dict[str, Any] = {
            "metadata": {
                "resourceVersion": service.resource_version,
                "annotations": {ROLLOUT_STATE: format_state(current)},
            }
        }
        now = self.now()
        if decision.roll:
            # Sub-second precision: two rollouts within one second must still change the template.
            restarted_at = now.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            patch["spec"] = {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at}}}}
        path = resource_path(service.kind, service.namespace, service.name)
        try:
            patched = await json_request(
                self.api, "PATCH", path, query={"fieldManager": FIELD_MANAGER}, body=patch, content_type=MERGE_PATCH
            )
        except ApiException as error:
            if error.status == 404:
                return decision.roll
            raise
        self.write_through(service, patched)
        if decision.roll:
            self.metrics.rollouts.labels(service.kind).inc()
            log.info(
                "rolled out %s/%s/%s: %s",
                service.kind,
                service.namespace,
                service.name,
                describe_changes(decision.changed),
                extra=outcome("rolled-out"),
            )
            await self.event(service, describe_changes(decision.changed))
        return decision.roll

    async def migrated(self, service: Service, stored: State, reading: Collection[str]) -> State:
        """MIGRATION ONLY: a record written before ``rules.rollout.FORMAT`` (unbound digests), in this format. The
        caches keep no value and no legacy digest, so each Secret the record names and the service still reads is
        read once more (a GET, at the first start after the upgrade; the record is rewritten then) and digested both
        ways: unchanged keys take their current digests, so the upgrade rolls nothing that did not change."""
        legacy: dict[str, dict[str, str] | None] = {}
        current: dict[str, dict[str, str] | None] = {}
        for secret in sorted(set(stored) & set(reading)):
            found = await get_or_none(self.api, resource_path("Secret", service.namespace, secret))
            if found is None:
                legacy[secret] = current[secret] = None
                continue
            data = found.get("data") or {}
            legacy[secret] = legacy_key_digests(data, self.caches.hmac_key)
            current[secret] = key_digests(data, self.caches.hmac_key, namespace=service.namespace, secret=secret)
        return migrate({secret: keys for secret, keys in stored.items() if secret in current}, legacy, current)

    def write_through(self, service: Service, patched: dict[str, Any]) -> None:
        """The cache sees the PATCH at once, so its watch event changes nothing and enqueues nothing — unless the
        watch already brought this or a later version (the cache moved on from what was patched): then it stays."""
        store = self.caches.services[service.kind]
        cached = store.get(service.key)
        if cached is not None and cached.resource_version == service.resource_version and patched:
            after = service_of(patched, service.kind)
            if after.key == service.key:
                store.put(service.key, after)

    async def failed(self, key: ServiceKey, message: str) -> None:
        """A reconcile refused for good (an RBAC rule missing, another admission webhook denying the patch): one
        Warning Event on the service; its next change tries again."""
        service = self.caches.service(key)
        if service is None:
            return
        await self._record(
            service, "RolloutFailed", f"Could not roll out or record the Secrets this service reads: {message}", True
        )

    async def hold(self, service: Service, why: str) -> bool:
        """A change that would roll the service into pods that cannot start: say so once, roll nothing. Whether it
        told (wrote an Event)."""
        if self.held.get(service.key) == why:
            return False
        self.held[service.key] = why
        log.warning(
            "held the rollout of %s/%s/%s: %s",
            service.kind,
            service.namespace,
            service.name,
            why,
            extra=outcome("held"),
        )
        message = f"Not rolled out: {why}; new pods could not start, the running ones keep their values"
        await self._record(service, "RolloutHeld", message, True)
        return True

    async def event(self, service: Service, why: str) -> None:
        await self._record(service, "SecretChanged", f"Rolled out: {why}", False)

    async def _record(self, service: Service, reason: str, message: str, warning: bool) -> None:
        """One Event on a service (names and keys only, never a value)."""
        await record_event(
            self.api,
            api_version=api_version(service.kind),
            kind=service.kind,
            name=service.name,
            namespace=service.namespace,
            uid=service.uid,
            reason=reason,
            message=message,
            warning=warning,
        )


def rollout_loop(
    api: client.ApiClient, settings: Settings, metrics: ControllerMetrics, hmac_key: bytes
) -> Loop[ServiceKey]:
    """Rollouts: one key per service; fed by every Secret (reduced to digests) and every service of a rolled kind."""
    queue: WorkQueue[ServiceKey] = WorkQueue()
    caches = Caches(hmac_key, queue, settings.settle_seconds, settings.settle_max_seconds)
    informers = [Informer(api, resource_path("Secret"), caches.secrets, managed_fields=False)] + [
        Informer(api, resource_path(kind), store, managed_fields=False) for kind, store in caches.services.items()
    ]
    rollouts = Rollouts(api, caches, metrics)
    return Loop("rollouts", queue, informers, rollouts.reconcile, rollouts.failed)
