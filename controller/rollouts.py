"""Rollouts: roll a Deployment, StatefulSet or DaemonSet once when a Secret key it reads changes.

Two informer handlers keep what the decision needs, and nothing more: per Secret, keyed digests of its keys (never
values) and whether it is generated credentials; per service, its uses of Secrets, whether it opted in or out, and
the state it was last rolled for. A change to a
Secret enqueues the services that use it after the settling window; the reconcile reads the caches, decides with
the pure ``rules.rollout`` functions, and writes the new state — with the restart annotation when it rolls — in one
PATCH guarded by the object's resourceVersion.
"""

from __future__ import annotations

import datetime
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from controller.frame.logs import outcome, reconcile_logger
from controller.frame.loop import Loop
from controller.frame.metrics import ControllerMetrics
from controller.frame.queue import WorkQueue
from controller.frame.settings import Settings
from kubeio.events import record_event
from kubeio.informer import Informer
from kubeio.rest import MERGE_PATCH, ApiException, json_request
from rules.names import RESTARTED_AT, ROLLOUT_STATE
from rules.references import Use, secret_uses
from rules.rollout import (
    current_state,
    decide,
    describe,
    describe_missing,
    format_state,
    is_generated,
    key_digests,
    missing_needs,
    opted_in,
    opted_out,
    parse_state,
    rolling_uses,
)
from rules.workloads import ROLLED_KINDS, annotations_of, api_version, pod_template, resource_path

log = reconcile_logger(__name__)

ServiceKey = tuple[str, str, str]  # kind, namespace, name
SecretKey = tuple[str, str]  # namespace, name


@dataclass(frozen=True, slots=True)
class Service:
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    opted_in: bool
    opted_out: bool
    uses: tuple[Use, ...]
    stored: str | None

    @property
    def key(self) -> ServiceKey:
        return self.kind, self.namespace, self.name


def service_of(obj: dict[str, Any], kind: str) -> Service:
    metadata = obj.get("metadata") or {}
    found = annotations_of(obj)
    template = annotations_of(pod_template(obj, kind))
    return Service(
        kind=kind,
        namespace=sys.intern(str(metadata.get("namespace", ""))),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        opted_in=opted_in(found, template),
        opted_out=opted_out(found, template),
        # A pull secret is read at image pull only: changing it is no reason to restart anything.
        uses=tuple(use for use in secret_uses(obj, kind) if not use.for_image_pull),
        stored=found.get(ROLLOUT_STATE),
    )


class Caches:
    """Secret digests and services, with the reverse index Secret → services that read it."""

    def __init__(self, hmac_key: bytes, queue: WorkQueue[ServiceKey], settle_seconds: float) -> None:
        self.hmac_key = hmac_key
        self.queue = queue
        self.settle_seconds = settle_seconds
        self.digests: dict[SecretKey, dict[str, str]] = {}
        self.services: dict[ServiceKey, Service] = {}
        self.readers: dict[SecretKey, set[ServiceKey]] = defaultdict(set)
        self.generated: set[SecretKey] = set()  # database and registry credentials: a rotation rolls every reader
        self.secrets_listed = False

    # ---- Secrets ------------------------------------------------------------------------------------------

    def _secret_changed(self, key: SecretKey) -> None:
        for service in self.readers.get(key, ()):
            self.queue.add_after(service, self.settle_seconds)

    def set_digests(self, key: SecretKey, digests: dict[str, str] | None, *, generated: bool = False) -> None:
        before = self.digests.get(key)
        if generated and digests is not None:
            self.generated.add(key)
        else:
            self.generated.discard(key)
        if digests is None:
            self.digests.pop(key, None)
        else:
            self.digests[key] = digests
        if before != digests and self.secrets_listed:
            self._secret_changed(key)

    def secret_handler(self) -> SecretHandler:
        return SecretHandler(self)

    # ---- services -----------------------------------------------------------------------------------------

    def set_service(self, key: ServiceKey, service: Service | None) -> None:
        old = self.services.pop(key, None)
        if old is not None:
            for use in old.uses:
                self.readers[(old.namespace, use.secret)].discard(key)
        if service is not None:
            self.services[key] = service
            for use in service.uses:
                self.readers[(service.namespace, use.secret)].add(key)
            self.queue.add(key)

    def service_handler(self, kind: str) -> ServiceHandler:
        return ServiceHandler(self, kind)

    def secrets_of(self, service: Service) -> dict[str, dict[str, str] | None]:
        """The digests of each Secret the service uses; None for one that does not exist."""
        return {use.secret: self.digests.get((service.namespace, use.secret)) for use in service.uses}

    def rolling_uses(self, service: Service) -> tuple[Use, ...]:
        generated = {use.secret for use in service.uses if (service.namespace, use.secret) in self.generated}
        return rolling_uses(service.uses, opted_in=service.opted_in, opted_out=service.opted_out, generated=generated)


class SecretHandler:
    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def compact(self, obj: dict[str, Any]) -> tuple[SecretKey, dict[str, str], bool]:
        """All that is kept of a Secret: its key, per-key digests and whether it is generated credentials; the
        values go as soon as it is decoded."""
        metadata = obj.get("metadata") or {}
        key = (sys.intern(str(metadata.get("namespace", ""))), str(metadata.get("name", "")))
        labels = metadata.get("labels") or {}
        return key, key_digests(obj.get("data") or {}, self.caches.hmac_key), is_generated(labels)

    def replace(self, objects: list[tuple[SecretKey, dict[str, str], bool]]) -> None:
        fresh = {key: (digests, generated) for key, digests, generated in objects}
        for key in set(self.caches.digests) - set(fresh):
            self.caches.set_digests(key, None)
        for key, (digests, generated) in fresh.items():
            self.caches.set_digests(key, digests, generated=generated)
        self.caches.secrets_listed = True

    def apply(self, event_type: str, obj: tuple[SecretKey, dict[str, str], bool]) -> None:
        key, digests, generated = obj
        self.caches.set_digests(key, None if event_type == "DELETED" else digests, generated=generated)


class ServiceHandler:
    def __init__(self, caches: Caches, kind: str) -> None:
        self.caches = caches
        self.kind = kind

    def compact(self, obj: dict[str, Any]) -> Service:
        return service_of(obj, self.kind)

    def replace(self, objects: list[Service]) -> None:
        fresh = {s.key: s for s in objects}
        for key in [k for k in self.caches.services if k[0] == self.kind and k not in fresh]:
            self.caches.set_service(key, None)
        for key, service in fresh.items():
            self.caches.set_service(key, service)

    def apply(self, event_type: str, service: Service) -> None:
        self.caches.set_service(service.key, None if event_type == "DELETED" else service)


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

    async def reconcile(self, key: ServiceKey) -> None:
        service = self.caches.services.get(key)
        uses = self.caches.rolling_uses(service) if service is not None else ()
        if service is None or not uses:
            self.held.pop(key, None)
            return
        secrets = self.caches.secrets_of(service)
        current = current_state(uses, secrets)
        decision = decide(parse_state(service.stored), current, missing_needs(service.uses, secrets))
        if decision.held:
            await self.hold(service, f"{describe(decision.changed)}, but {describe_missing(decision.held)}")
            return
        self.held.pop(key, None)
        if not decision.record:
            return
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
            await json_request(self.api, "PATCH", path, body=patch, content_type=MERGE_PATCH)
        except ApiException as error:
            if error.status == 404:
                return
            raise
        if decision.roll:
            self.metrics.rollouts.labels(service.kind).inc()
            log.info(
                "rolled out %s/%s/%s: %s",
                service.kind,
                service.namespace,
                service.name,
                describe(decision.changed),
                extra=outcome("rolled-out"),
            )
            await self.event(service, describe(decision.changed))

    async def failed(self, key: ServiceKey, message: str) -> None:
        """A reconcile refused for good (an RBAC rule missing, another admission webhook denying the patch): one
        Warning Event on the service; its next change tries again."""
        service = self.caches.services.get(key)
        if service is None:
            return
        await self._record(
            service, "RolloutFailed", f"Could not roll out or record the Secrets this service reads: {message}", True
        )

    async def hold(self, service: Service, why: str) -> None:
        """A change that would roll the service into pods that cannot start: say so once, roll nothing."""
        if self.held.get(service.key) == why:
            return
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
    caches = Caches(hmac_key, queue, settings.settle_seconds)
    informers = [Informer(api, resource_path("Secret"), caches.secret_handler())] + [
        Informer(api, resource_path(kind), caches.service_handler(kind)) for kind in sorted(ROLLED_KINDS)
    ]
    rollouts = Rollouts(api, caches, metrics)
    return Loop("rollouts", queue, informers, rollouts.reconcile, rollouts.failed)
