"""Per-VPC registry credentials: the edge that reads and writes what ``rules.registry`` decides.

Five informers feed one queue keyed by namespace name: namespaces, the htpasswd Secret, the registry Secrets
(label-selected), the rotation Secrets in the controller's namespace (a password on its way in) and the ``default``
ServiceAccounts. A namespace whose cached state needs no write costs no API
call. One that does is read afresh, then ``next_step`` is asked for one write at a time until it answers None;
every write is guarded (POST for creation, resourceVersion for updates, uid for deletes), so a stale view ends in a
409 and a quiet retry, never in a lost password or a lost htpasswd entry.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes_asyncio import client

from controller.metrics import ControllerMetrics
from controller.queue import WorkQueue
from kubeio.events import record_event
from kubeio.informer import Informer
from kubeio.rest import MERGE_PATCH, ApiException, get_or_none, json_request
from rules import registry as rules
from rules.names import SECRET_TYPE_LABEL

if TYPE_CHECKING:
    from controller.main import Loop, Settings

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
BLOCKED_RETRY_SECONDS = 60.0
MAX_STEPS = 12  # a full rotation takes five writes; more than this is a bug, not progress
HTPASSWD_ATTEMPTS = 5


@dataclass(frozen=True)
class RegistryConfig:
    url: str  # as configured: ``https://host[:port]`` or ``host[:port]``
    htpasswd_namespace: str
    htpasswd_name: str
    rotation_namespace: str  # the controller's own: where a password on its way in is kept

    @property
    def host(self) -> str:
        """What REGISTRY_URL says and what the pull secret is keyed by."""
        return rules.registry_host(self.url)


def parse_secret_ref(value: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name)."""
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"expected namespace/name, got {value!r}")
    return namespace, name


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ---- caches -------------------------------------------------------------------------------------------------


@dataclass
class Caches:
    queue: WorkQueue[str]
    namespaces: dict[str, JsonObject] = field(default_factory=dict)
    secrets: dict[tuple[str, str], JsonObject] = field(default_factory=dict)  # (namespace, name) → Secret
    service_accounts: dict[str, JsonObject] = field(default_factory=dict)  # namespace → default ServiceAccount
    rotations: dict[str, JsonObject] = field(default_factory=dict)  # VPC namespace → its rotation Secret
    htpasswd: JsonObject | None = None

    def entries(self) -> dict[str, str]:
        return htpasswd_entries(self.htpasswd)


def htpasswd_entries(secret: JsonObject | None) -> dict[str, str]:
    data = rules.decode_data((secret or {}).get("data") or {})
    return rules.parse_htpasswd(data.get(rules.HTPASSWD_KEY, ""))


def _name_of(obj: JsonObject) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


class NamespaceHandler:
    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def replace(self, objects: list[JsonObject]) -> None:
        fresh = {_name_of(obj)[1]: obj for obj in objects}
        gone = set(self.caches.namespaces) - set(fresh)
        self.caches.namespaces = fresh
        for name in [*fresh, *gone]:
            self.caches.queue.add(name)

    def apply(self, event_type: str, obj: JsonObject) -> None:
        name = _name_of(obj)[1]
        if event_type == "DELETED":
            self.caches.namespaces.pop(name, None)
        else:
            self.caches.namespaces[name] = obj
        self.caches.queue.add(name)


class SecretHandler:
    """The registry Secrets of every namespace (label-selected, so values of no other Secret are kept)."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def replace(self, objects: list[JsonObject]) -> None:
        fresh = {_name_of(obj): obj for obj in objects}
        changed = {key[0] for key in set(self.caches.secrets) ^ set(fresh)}
        self.caches.secrets = fresh
        for namespace in changed | {key[0] for key in fresh}:
            self.caches.queue.add(namespace)

    def apply(self, event_type: str, obj: JsonObject) -> None:
        key = _name_of(obj)
        if event_type == "DELETED":
            self.caches.secrets.pop(key, None)
        else:
            self.caches.secrets[key] = obj
        self.caches.queue.add(key[0])


class RotationHandler:
    """The rotation Secrets in the controller's namespace (label-selected): each names the namespace it is for."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def replace(self, objects: list[JsonObject]) -> None:
        fresh = {}
        for obj in objects:
            namespace = rules.namespace_of_rotation_secret(_name_of(obj)[1])
            if namespace is not None:
                fresh[namespace] = obj
        gone = set(self.caches.rotations) - set(fresh)
        self.caches.rotations = fresh
        for namespace in [*fresh, *gone]:
            self.caches.queue.add(namespace)

    def apply(self, event_type: str, obj: JsonObject) -> None:
        namespace = rules.namespace_of_rotation_secret(_name_of(obj)[1])
        if namespace is None:
            return
        if event_type == "DELETED":
            self.caches.rotations.pop(namespace, None)
        else:
            self.caches.rotations[namespace] = obj
        self.caches.queue.add(namespace)


class ServiceAccountHandler:
    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def replace(self, objects: list[JsonObject]) -> None:
        fresh = {_name_of(obj)[0]: obj for obj in objects}
        gone = set(self.caches.service_accounts) - set(fresh)
        self.caches.service_accounts = fresh
        for namespace in [*fresh, *gone]:
            self.caches.queue.add(namespace)

    def apply(self, event_type: str, obj: JsonObject) -> None:
        namespace = _name_of(obj)[0]
        if event_type == "DELETED":
            self.caches.service_accounts.pop(namespace, None)
        else:
            self.caches.service_accounts[namespace] = obj
        self.caches.queue.add(namespace)


class HtpasswdHandler:
    """The one htpasswd Secret: a change enqueues the namespaces whose entries changed (a stale entry of a deleted
    namespace included, so that it is removed)."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def _set(self, secret: JsonObject | None) -> None:
        before = self.caches.entries()
        self.caches.htpasswd = secret
        after = self.caches.entries()
        for user in {u for u in before.keys() | after.keys() if before.get(u) != after.get(u)}:
            namespace = rules.namespace_of(user)
            if namespace is not None:
                self.caches.queue.add(namespace)

    def replace(self, objects: list[JsonObject]) -> None:
        self._set(objects[0] if objects else None)

    def apply(self, event_type: str, obj: JsonObject) -> None:
        self._set(None if event_type == "DELETED" else obj)


# ---- the reconcile ------------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The objects of one namespace that the decision reads (None: absent)."""

    namespace: str
    namespace_object: JsonObject | None
    credentials: JsonObject | None
    pull_secret: JsonObject | None
    service_account: JsonObject | None
    htpasswd: JsonObject | None
    rotation: JsonObject | None

    def observed(self) -> rules.Observed:
        entry = htpasswd_entries(self.htpasswd).get(rules.username(self.namespace))
        return rules.Observed(
            namespace=self.namespace,
            member=rules.is_member(self.namespace_object),
            writable=rules.is_writable(self.namespace_object),
            rotate=rules.rotate_request(self.namespace_object),
            credentials=rules.secret_state(self.credentials),
            pull_secret=rules.secret_state(self.pull_secret),
            pull_secrets_of_service_account=rules.image_pull_secret_names(self.service_account),
            entry=entry,
            pending=rules.pending_state(self.rotation),
        )


class BlockedError(Exception):
    """Something not ours is in the way (a foreign Secret, a refused delete): reported, retried later."""


class Verifier:
    """bcrypt checks remembered by (hash, digest of password): a resync checks each entry once per process, not once
    per reconcile, and ``prime`` runs the check in a thread, off the event loop (that also renews the Lease). The
    password itself is not kept."""

    def __init__(self) -> None:
        self.known: dict[tuple[str, str], bool] = {}

    @staticmethod
    def _key(password: str, hashed: str) -> tuple[str, str]:
        return hashed, hashlib.sha256(password.encode()).hexdigest()

    def _remember(self, key: tuple[str, str], verified: bool) -> bool:
        if len(self.known) > 10_000:
            self.known.clear()
        self.known[key] = verified
        return verified

    async def prime(self, password: str, hashed: str) -> None:
        key = self._key(password, hashed)
        if key not in self.known:
            self._remember(key, await asyncio.to_thread(rules.verify_password, password, hashed))

    def __call__(self, password: str, hashed: str) -> bool:
        key = self._key(password, hashed)
        if key in self.known:
            return self.known[key]
        return self._remember(key, rules.verify_password(password, hashed))


class Registry:
    def __init__(
        self,
        api: client.ApiClient,
        config: RegistryConfig,
        caches: Caches,
        *,
        new_password: Callable[[], str] = rules.generate_password,
    ) -> None:
        self.api = api
        self.config = config
        self.caches = caches
        self.new_password = new_password
        self.verify = Verifier()
        self.htpasswd_lock = asyncio.Lock()
        self.blocked: dict[str, str] = {}  # namespace → the message last reported

    # ---- reading ----------------------------------------------------------------------------------------

    @property
    def htpasswd_path(self) -> str:
        return f"/api/v1/namespaces/{self.config.htpasswd_namespace}/secrets/{self.config.htpasswd_name}"

    def cached(self, namespace: str) -> Snapshot:
        secrets = self.caches.secrets
        return Snapshot(
            namespace,
            self.caches.namespaces.get(namespace),
            secrets.get((namespace, rules.CREDENTIALS)),
            secrets.get((namespace, rules.PULL_SECRET)),
            self.caches.service_accounts.get(namespace),
            self.caches.htpasswd,
            self.caches.rotations.get(namespace),
        )

    async def get(self, path: str) -> JsonObject | None:
        return await get_or_none(self.api, path)

    @property
    def rotations_path(self) -> str:
        return f"/api/v1/namespaces/{self.config.rotation_namespace}/secrets"

    async def read(self, namespace: str) -> Snapshot:
        base = f"/api/v1/namespaces/{namespace}"
        namespace_object = await self.get(base)
        rotation = await self.get(f"{self.rotations_path}/{rules.rotation_secret_name(namespace)}")
        if namespace_object is None:
            return Snapshot(namespace, None, None, None, None, await self.get(self.htpasswd_path), rotation)
        return Snapshot(
            namespace,
            namespace_object,
            await self.get(f"{base}/secrets/{rules.CREDENTIALS}"),
            await self.get(f"{base}/secrets/{rules.PULL_SECRET}"),
            await self.get(f"{base}/serviceaccounts/{rules.SERVICE_ACCOUNT}"),
            await self.get(self.htpasswd_path),
            rotation,
        )

    async def step(self, snapshot: Snapshot) -> rules.Step | None:
        observed = snapshot.observed()
        password = rules.live_password(observed)
        if observed.member and password is not None and observed.entry is not None:
            await self.verify.prime(password, observed.entry)
        return rules.next_step(
            observed, registry_host=self.config.host, verify=self.verify, new_password=self.new_password
        )

    # ---- the reconcile of one namespace -----------------------------------------------------------------

    async def reconcile(self, namespace: str) -> None:
        if await self.step(self.cached(namespace)) is None:
            self.blocked.pop(namespace, None)
            return
        snapshot = await self.read(namespace)
        try:
            for _ in range(MAX_STEPS):
                step = await self.step(snapshot)
                if step is None:
                    self.blocked.pop(namespace, None)
                    return
                if isinstance(step, rules.Blocked):
                    raise BlockedError(step.message)
                snapshot = await self.perform(step, snapshot)
        except BlockedError as blocked:
            await self.report_blocked(snapshot, str(blocked))
            return
        raise RuntimeError(f"registry credentials of {namespace} did not settle after {MAX_STEPS} writes")

    async def perform(self, step: rules.Step, snapshot: Snapshot) -> Snapshot:
        namespace = snapshot.namespace
        secrets = f"/api/v1/namespaces/{namespace}/secrets"
        user = rules.username(namespace)
        match step:
            case rules.StorePending(password=password, rotation_seen=seen):
                body = self.secret_body(
                    self.config.rotation_namespace,
                    rules.rotation_secret_name(namespace),
                    {rules.ROTATION_KEY: password},
                    rotation_seen=seen,
                    labels=rules.ROTATION_LABELS,
                )
                snapshot.rotation = await self.create(self.rotations_path, body)
                log.info("registry: a new password for %s (namespace %s) is on its way in", user, namespace)
            case rules.DeletePending():
                if snapshot.rotation is not None:
                    await self.delete(snapshot.rotation)
                snapshot.rotation = None
                log.info("registry: the new password of %s is in place", user)
            case rules.CreateCredentials(data=data, rotation_seen=seen):
                body = self.secret_body(namespace, rules.CREDENTIALS, data, rotation_seen=seen)
                snapshot.credentials = await self.create(secrets, body)
                log.info("registry: created %s/%s for user %s", namespace, rules.CREDENTIALS, user)
            case rules.SetEntry(user=entry_user, password=password):
                hashed = await asyncio.to_thread(rules.hash_password, password)
                snapshot.htpasswd = await self.update_htpasswd(snapshot.htpasswd, entry_user, hashed)
                log.info("registry: htpasswd entry of %s set", entry_user)
            case rules.RemoveEntry(user=entry_user):
                snapshot.htpasswd = await self.update_htpasswd(snapshot.htpasswd, entry_user, None)
                log.info("registry: htpasswd entry of %s removed", entry_user)
            case rules.WritePullSecret(dockerconfigjson=config, replace=replace):
                snapshot.pull_secret = await self.write_pull_secret(snapshot.pull_secret, namespace, config, replace)
                log.info("registry: wrote %s/%s for user %s", namespace, rules.PULL_SECRET, user)
            case rules.UpdateCredentials(changes=changes, rotation_seen=seen):
                snapshot.credentials = await self.patch_secret(snapshot.credentials, changes, rotation_seen=seen)
                log.info("registry: updated %s/%s (%s)", namespace, rules.CREDENTIALS, ", ".join(sorted(changes)))
            case rules.AddToServiceAccount() | rules.RemoveFromServiceAccount():
                add = isinstance(step, rules.AddToServiceAccount)
                snapshot.service_account = await self.patch_service_account(snapshot.service_account, add=add)
                log.info("registry: %s %s in %s/default", "added" if add else "removed", rules.PULL_SECRET, namespace)
            case rules.DeleteSecret(name=name):
                target = snapshot.credentials if name == rules.CREDENTIALS else snapshot.pull_secret
                if target is not None:
                    await self.delete(target)
                if name == rules.CREDENTIALS:
                    snapshot.credentials = None
                else:
                    snapshot.pull_secret = None
                log.info("registry: deleted %s/%s", namespace, name)
            case _:
                raise AssertionError(f"unexpected step {step!r}")
        return snapshot

    # ---- writes -----------------------------------------------------------------------------------------

    def remember(self, secret: JsonObject | None, key: tuple[str, str], *, deleted: bool = False) -> None:
        """Write-through: the next reconcile's cheap check sees our own write before its watch event arrives."""
        namespace, name = key
        for_namespace = rules.namespace_of_rotation_secret(name)
        if namespace == self.config.rotation_namespace and for_namespace is not None:
            cache: dict[Any, JsonObject] = self.caches.rotations
            cache_key: Any = for_namespace
        else:
            cache, cache_key = self.caches.secrets, key
        if deleted:
            cache.pop(cache_key, None)
        elif secret is not None:
            cache[cache_key] = secret

    def secret_body(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        *,
        rotation_seen: str | None = None,
        secret_type: str = "Opaque",
        labels: Mapping[str, str] = rules.LABELS,
    ) -> JsonObject:
        metadata: JsonObject = {"name": name, "namespace": namespace, "labels": dict(labels)}
        if rotation_seen is not None:
            metadata["annotations"] = {rules.ROTATION_SEEN: rotation_seen}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": secret_type,
            "data": {key: b64(value) for key, value in data.items()},
        }

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        """POST, so that an existing Secret (and its password) is never overwritten: a 409 is a stale cache."""
        created = await json_request(self.api, "POST", path, body=body)
        self.remember(created, _name_of(created))
        return created

    async def patch_secret(
        self, secret: JsonObject | None, changes: Mapping[str, str | None], *, rotation_seen: str | None = None
    ) -> JsonObject:
        if secret is None:
            raise ValueError("a Secret to patch was expected")
        namespace, name = _name_of(secret)
        metadata: JsonObject = {"resourceVersion": secret["metadata"]["resourceVersion"], "labels": rules.LABELS}
        if rotation_seen is not None:
            metadata["annotations"] = {rules.ROTATION_SEEN: rotation_seen}
        patch = {
            "metadata": metadata,
            "data": {key: None if value is None else b64(value) for key, value in changes.items()},
        }
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        patched = await json_request(self.api, "PATCH", path, body=patch, content_type=MERGE_PATCH)
        self.remember(patched, (namespace, name))
        return patched

    async def write_pull_secret(
        self, current: JsonObject | None, namespace: str, config: str, replace: bool
    ) -> JsonObject:
        if current is not None and not replace:
            return await self.patch_secret(current, {rules.DOCKERCONFIGJSON_KEY: config})
        if current is not None:  # the type of a Secret is immutable
            await self.delete(current)
        body = self.secret_body(
            namespace, rules.PULL_SECRET, {rules.DOCKERCONFIGJSON_KEY: config}, secret_type=rules.DOCKERCONFIGJSON
        )
        return await self.create(f"/api/v1/namespaces/{namespace}/secrets", body)

    async def delete(self, secret: JsonObject) -> None:
        """Delete exactly the Secret we looked at (uid and resourceVersion preconditions)."""
        namespace, name = _name_of(secret)
        metadata = secret["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]},
        }
        try:
            await json_request(self.api, "DELETE", f"/api/v1/namespaces/{namespace}/secrets/{name}", body=body)
        except ApiException as error:
            if error.status == 404:
                pass
            elif error.status == 403:  # the protection webhook: a service still uses it
                raise BlockedError(f'could not delete Secret "{name}": {status_message(error)}') from None
            else:
                raise
        self.remember(None, (namespace, name), deleted=True)

    async def update_htpasswd(self, current: JsonObject | None, user: str, hashed: str | None) -> JsonObject | None:
        """Set or remove one entry. Every write is guarded by the Secret's resourceVersion (or is a POST), so an
        entry that someone else wrote meanwhile is never lost: a conflict re-reads and tries again."""
        async with self.htpasswd_lock:
            for _ in range(HTPASSWD_ATTEMPTS):
                entries = htpasswd_entries(current)
                if hashed is None:
                    entries.pop(user, None)
                else:
                    entries[user] = hashed
                if current is not None and entries == htpasswd_entries(current):
                    return current
                try:
                    current = await self.write_htpasswd(current, rules.format_htpasswd(entries))
                except ApiException as error:
                    if error.status != 409:
                        raise
                    current = await self.get(self.htpasswd_path)
                    continue
                self.caches.htpasswd = current
                return current
        raise ApiException(status=409, reason=f"htpasswd kept changing under {HTPASSWD_ATTEMPTS} attempts")

    async def write_htpasswd(self, current: JsonObject | None, text: str) -> JsonObject:
        data = {rules.HTPASSWD_KEY: b64(text)}
        if current is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": self.config.htpasswd_name,
                    "namespace": self.config.htpasswd_namespace,
                    "labels": {rules.MANAGED_BY_LABEL: rules.MANAGED_BY},
                },
                "type": "Opaque",
                "data": data,
            }
            return await json_request(
                self.api, "POST", f"/api/v1/namespaces/{self.config.htpasswd_namespace}/secrets", body=body
            )
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "data": data}
        return await json_request(self.api, "PATCH", self.htpasswd_path, body=patch, content_type=MERGE_PATCH)

    async def patch_service_account(self, account: JsonObject | None, *, add: bool) -> JsonObject | None:
        """imagePullSecrets of a ServiceAccount is replaced whole by any patch: read-modify-write under its
        resourceVersion, keeping the user's entries."""
        names = rules.image_pull_secret_names(account)
        if account is None or names is None:
            return account
        namespace = _name_of(account)[0]
        pull_secrets = rules.with_pull_secret(names) if add else rules.without_pull_secret(names)
        patch = {
            "metadata": {"resourceVersion": account["metadata"]["resourceVersion"]},
            "imagePullSecrets": pull_secrets,
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{rules.SERVICE_ACCOUNT}"
        patched = await json_request(self.api, "PATCH", path, body=patch, content_type=MERGE_PATCH)
        self.caches.service_accounts[namespace] = patched
        return patched

    # ---- telling the user -------------------------------------------------------------------------------

    async def report_blocked(self, snapshot: Snapshot, message: str) -> None:
        namespace = snapshot.namespace
        self.caches.queue.add_after(namespace, BLOCKED_RETRY_SECONDS)
        if self.blocked.get(namespace) == message:
            return
        self.blocked[namespace] = message
        log.warning("registry: namespace %s is blocked: %s", namespace, message)
        uid = ((snapshot.namespace_object or {}).get("metadata") or {}).get("uid", "")
        await record_event(
            self.api,
            api_version="v1",
            kind="Namespace",
            name=namespace,
            namespace=namespace,
            uid=str(uid),
            reason="RegistryCredentialsBlocked",
            message=message,
            warning=True,
        )


def status_message(error: ApiException) -> str:
    """The apiserver's (or the admission webhook's) message in an error answer."""
    try:
        return str(json.loads(error.body or b"{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


def registry_informers(api: client.ApiClient, config: RegistryConfig, caches: Caches) -> list[Informer]:
    return [
        Informer(api, "/api/v1/namespaces", NamespaceHandler(caches)),
        Informer(
            api,
            f"/api/v1/namespaces/{config.htpasswd_namespace}/secrets",
            HtpasswdHandler(caches),
            query={"fieldSelector": f"metadata.name={config.htpasswd_name}"},
        ),
        Informer(
            api,
            "/api/v1/secrets",
            SecretHandler(caches),
            query={"labelSelector": f"{SECRET_TYPE_LABEL}={rules.SECRET_TYPE}"},
        ),
        Informer(
            api,
            f"/api/v1/namespaces/{config.rotation_namespace}/secrets",
            RotationHandler(caches),
            query={"labelSelector": f"{rules.COMPONENT_LABEL}={rules.ROTATION_COMPONENT}"},
        ),
        Informer(
            api,
            "/api/v1/serviceaccounts",
            ServiceAccountHandler(caches),
            query={"fieldSelector": f"metadata.name={rules.SERVICE_ACCOUNT}"},
        ),
    ]


def registry_loop(api: client.ApiClient, settings: Settings, metrics: ControllerMetrics) -> Loop:
    """Per-VPC registry credentials: one key per namespace. Needs ``registry_url`` and ``htpasswd_secret``."""
    from controller.main import Loop  # main imports this module to build its list of loops

    if settings.registry_url is None or settings.htpasswd_secret is None:
        raise ValueError("the registry loop needs registry_url and htpasswd_secret")
    namespace, name = parse_secret_ref(settings.htpasswd_secret)
    config = RegistryConfig(settings.registry_url, namespace, name, settings.namespace)
    queue: WorkQueue[str] = WorkQueue()
    caches = Caches(queue)
    return Loop("registry", queue, registry_informers(api, config, caches), Registry(api, config, caches).reconcile)
