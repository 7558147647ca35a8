"""The reconcile of one namespace's registry credentials.

A namespace whose cached state needs no write costs no API call. One that does is read afresh, then ``next_step``
is asked for one write at a time until it answers None; every write is guarded (POST for creation,
resourceVersion for updates, uid for deletes), so a stale view ends in a 409 and a quiet retry, never in a lost
password or a lost htpasswd entry.

While a rotation's previous entry is kept (in the htpasswd Secret, key ``previous``), the namespace's readers of
``registry-credentials`` are listed at each reconcile and the namespace is looked at again every
``RECHECK_SECONDS``, until ``rules.retirement`` says the entry goes (the readers rolled, or the grace period passed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kubernetes_asyncio import client

from controller.frame.logs import outcome, reconcile_logger
from controller.frame.secrets import secret_body
from controller.frame.store import JsonObject, name_of
from controller.registry.caches import Caches, htpasswd_entries, htpasswd_previous
from controller.registry.config import RegistryConfig
from controller.registry.verifier import Verifier
from kubeio.errors import status_message
from kubeio.events import record_event
from kubeio.rest import MERGE_PATCH, ApiException, get_or_none, json_request
from rules import registry as registry_rules
from rules.names import ROTATION_SEEN
from rules.retirement import Reader, reader_of
from rules.rollout import key_digests
from rules.secretdata import encode, generate_password, labels
from rules.workloads import ROLLED_KINDS, resource_path

log = reconcile_logger(__name__)

BLOCKED_RETRY_SECONDS = 60.0
MAX_STEPS = 12  # a full rotation takes five writes; more than this is a bug, not progress
HTPASSWD_ATTEMPTS = 5
RECHECK_SECONDS = 5.0  # while a previous entry is kept: how often its readers are looked at


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
    readers: tuple[Reader, ...] | None = None  # of registry-credentials, listed only while a previous entry is kept

    def observed(self) -> registry_rules.Observed:
        user = registry_rules.username(self.namespace)
        entry = htpasswd_entries(self.htpasswd).get(user)
        return registry_rules.Observed(
            namespace=self.namespace,
            member=registry_rules.is_member(self.namespace_object),
            writable=registry_rules.is_writable(self.namespace_object),
            rotate=registry_rules.rotate_request(self.namespace_object),
            credentials=registry_rules.secret_state(self.credentials),
            pull_secret=registry_rules.secret_state(self.pull_secret),
            pull_secrets_of_service_account=registry_rules.image_pull_secret_names(self.service_account),
            entry=entry,
            pending=registry_rules.pending_state(self.rotation),
            previous=tuple(htpasswd_previous(self.htpasswd).get(user, ())),
            readers=self.readers,
        )


class BlockedError(Exception):
    """Something not ours is in the way (a foreign Secret, a refused delete): reported, retried later."""


class Registry:
    def __init__(
        self,
        api: client.ApiClient,
        config: RegistryConfig,
        caches: Caches,
        *,
        hmac_key: bytes = b"",
        grace: datetime.timedelta = registry_rules.DEFAULT_GRACE,
        new_password: Callable[[], str] = generate_password,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.config = config
        self.caches = caches
        self.hmac_key = hmac_key  # the rollout feature's: how a reader's rolled-for state is compared
        self.grace = grace
        self.new_password = new_password
        self.now = now
        self.verify = Verifier()
        self.htpasswd_lock = asyncio.Lock()
        self.blocked: dict[str, str] = {}  # namespace → the message last reported

    # ---- reading ----------------------------------------------------------------------------------------

    def cached(self, namespace: str) -> Snapshot:
        secrets = self.caches.secrets
        return Snapshot(
            namespace,
            self.caches.namespaces.get(namespace),
            secrets.get((namespace, registry_rules.CREDENTIALS)),
            secrets.get((namespace, registry_rules.PULL_SECRET)),
            self.caches.service_accounts.get(namespace),
            self.caches.htpasswd,
            self.caches.rotations.get(namespace),
        )

    async def get(self, path: str) -> JsonObject | None:
        return await get_or_none(self.api, path)

    async def read(self, namespace: str) -> Snapshot:
        htpasswd_path = self.config.htpasswd_path
        namespace_object = await self.get(resource_path("Namespace", name=namespace))
        rotation = await self.get(f"{self.config.rotations_path}/{registry_rules.rotation_secret_name(namespace)}")
        if namespace_object is None:
            return Snapshot(namespace, None, None, None, None, await self.get(htpasswd_path), rotation)
        return Snapshot(
            namespace,
            namespace_object,
            await self.get(resource_path("Secret", namespace, registry_rules.CREDENTIALS)),
            await self.get(resource_path("Secret", namespace, registry_rules.PULL_SECRET)),
            await self.get(resource_path("ServiceAccount", namespace, registry_rules.SERVICE_ACCOUNT)),
            await self.get(htpasswd_path),
            rotation,
        )

    async def readers(self, credentials: JsonObject) -> tuple[Reader, ...]:
        """The Deployments, StatefulSets and DaemonSets reading ``registry-credentials``, each rolled out (or not),
        completely, to its current data: what ``rules.retirement`` waits for (as for a Database's old login)."""
        namespace = name_of(credentials)[0]
        digests = key_digests(
            credentials.get("data") or {}, self.hmac_key, namespace=namespace, secret=registry_rules.CREDENTIALS
        )
        found = []
        for kind in sorted(ROLLED_KINDS):
            listing = await json_request(self.api, "GET", resource_path(kind, namespace))
            for item in listing.get("items") or []:
                reader = reader_of(item, kind, registry_rules.CREDENTIALS, digests)
                if reader is not None:
                    found.append(reader)
        return tuple(found)

    async def step(self, snapshot: Snapshot) -> registry_rules.Step | None:
        observed = snapshot.observed()
        password = registry_rules.live_password(observed)
        if observed.member and password is not None and observed.entry is not None:
            await self.verify.prime(password, observed.entry)
            committed = (observed.credentials.data if observed.credentials else {}).get(registry_rules.PASSWORD_KEY)
            if observed.pending is not None and committed:  # whether the entry replaced is the readers' password
                await self.verify.prime(committed, observed.entry)
        if observed.member and observed.previous and observed.pending is None and snapshot.credentials is not None:
            snapshot.readers = await self.readers(snapshot.credentials)
            observed = dataclasses.replace(observed, readers=snapshot.readers)
        return registry_rules.next_step(
            observed,
            registry_host=self.config.host,
            verify=self.verify,
            new_password=self.new_password,
            now=self.now(),
            grace=self.grace,
        )

    def settled(self, snapshot: Snapshot) -> None:
        self.blocked.pop(snapshot.namespace, None)
        if snapshot.observed().previous:  # kept for readers: look again until it is retired
            self.caches.queue.add_after(snapshot.namespace, RECHECK_SECONDS)

    # ---- the reconcile of one namespace -----------------------------------------------------------------

    async def reconcile(self, namespace: str) -> None:
        cached = self.cached(namespace)
        if await self.step(cached) is None:
            self.settled(cached)
            return
        snapshot = await self.read(namespace)
        try:
            for _ in range(MAX_STEPS):
                step = await self.step(snapshot)
                if step is None:
                    self.settled(snapshot)
                    return
                if isinstance(step, registry_rules.Blocked):
                    raise BlockedError(step.message)
                snapshot = await self.perform(step, snapshot)
        except BlockedError as blocked:
            await self.report_blocked(snapshot, str(blocked))
            return
        raise RuntimeError(f"registry credentials of {namespace} did not settle after {MAX_STEPS} writes")

    async def perform(self, step: registry_rules.Step, snapshot: Snapshot) -> Snapshot:
        namespace = snapshot.namespace
        secrets = resource_path("Secret", namespace)
        user = registry_rules.username(namespace)
        match step:
            case registry_rules.StorePending(password=password, rotation_seen=seen):
                body = secret_body(
                    self.config.rotation_namespace,
                    registry_rules.rotation_secret_name(namespace),
                    {registry_rules.ROTATION_KEY: password},
                    labels=registry_rules.ROTATION_LABELS,
                    annotations=_rotation_seen(seen),
                )
                snapshot.rotation = await self.create(self.config.rotations_path, body)
                log.info(
                    "registry: a new password for %s (namespace %s) is on its way in",
                    user,
                    namespace,
                    extra=outcome("password-pending"),
                )
            case registry_rules.DeletePending():
                if snapshot.rotation is not None:
                    await self.delete(snapshot.rotation)
                snapshot.rotation = None
                log.info("registry: the new password of %s is in place", user, extra=outcome("password-in-place"))
            case registry_rules.CreateCredentials(data=data, rotation_seen=seen):
                body = secret_body(
                    namespace,
                    registry_rules.CREDENTIALS,
                    data,
                    labels=registry_rules.LABELS,
                    annotations=_rotation_seen(seen),
                )
                snapshot.credentials = await self.create(secrets, body)
                log.info(
                    "registry: created %s/%s for user %s",
                    namespace,
                    registry_rules.CREDENTIALS,
                    user,
                    extra=outcome("credentials-created"),
                )
            case registry_rules.SetEntry(user=entry_user, password=password, keep=keep):
                hashed = await asyncio.to_thread(registry_rules.hash_password, password)
                snapshot.htpasswd = await self.update_htpasswd(
                    snapshot.htpasswd, entry_user, hashed, keep=keep, now=self.now()
                )
                kept = "; the one it replaces is kept until the readers have rolled" if keep else ""
                log.info("registry: htpasswd entry of %s set%s", entry_user, kept, extra=outcome("entry-set"))
            case registry_rules.RemoveEntry(user=entry_user):
                snapshot.htpasswd = await self.update_htpasswd(snapshot.htpasswd, entry_user, None, previous=())
                log.info("registry: htpasswd entry of %s removed", entry_user, extra=outcome("entry-removed"))
            case registry_rules.RetirePrevious(user=entry_user, keep=kept_entries, why=why):
                entries = htpasswd_entries(snapshot.htpasswd)
                snapshot.htpasswd = await self.update_htpasswd(
                    snapshot.htpasswd, entry_user, entries.get(entry_user), previous=kept_entries
                )
                log.info(
                    "registry: the previous password of %s no longer gets a token: %s",
                    entry_user,
                    why,
                    extra=outcome("previous-retired"),
                )
            case registry_rules.WritePullSecret(dockerconfigjson=config, replace=replace):
                snapshot.pull_secret = await self.write_pull_secret(snapshot.pull_secret, namespace, config, replace)
                log.info(
                    "registry: wrote %s/%s for user %s",
                    namespace,
                    registry_rules.PULL_SECRET,
                    user,
                    extra=outcome("pull-secret-written"),
                )
            case registry_rules.UpdateCredentials(changes=changes, rotation_seen=seen):
                snapshot.credentials = await self.patch_secret(snapshot.credentials, changes, rotation_seen=seen)
                log.info(
                    "registry: updated %s/%s (%s)",
                    namespace,
                    registry_rules.CREDENTIALS,
                    ", ".join(sorted(changes)),
                    extra=outcome("credentials-updated"),
                )
            case registry_rules.AddToServiceAccount() | registry_rules.RemoveFromServiceAccount():
                add = isinstance(step, registry_rules.AddToServiceAccount)
                snapshot.service_account = await self.patch_service_account(snapshot.service_account, add=add)
                log.info(
                    "registry: %s %s in %s/default",
                    "added" if add else "removed",
                    registry_rules.PULL_SECRET,
                    namespace,
                    extra=outcome("service-account-added" if add else "service-account-removed"),
                )
            case registry_rules.DeleteSecret(name=name):
                target = snapshot.credentials if name == registry_rules.CREDENTIALS else snapshot.pull_secret
                if target is not None:
                    await self.delete(target)
                if name == registry_rules.CREDENTIALS:
                    snapshot.credentials = None
                else:
                    snapshot.pull_secret = None
                log.info("registry: deleted %s/%s", namespace, name, extra=outcome("secret-deleted"))
            case _:
                raise AssertionError(f"unexpected step {step!r}")
        return snapshot

    # ---- writes -----------------------------------------------------------------------------------------

    def remember(self, secret: JsonObject | None, key: tuple[str, str], *, deleted: bool = False) -> None:
        """Write-through: the next reconcile's cheap check sees our own write before its watch event arrives."""
        namespace, name = key
        for_namespace = registry_rules.namespace_of_rotation_secret(name)
        if namespace == self.config.rotation_namespace and for_namespace is not None:
            if deleted:
                self.caches.rotations.discard(for_namespace)
            elif secret is not None:
                self.caches.rotations.put(for_namespace, secret)
        elif deleted:
            self.caches.secrets.discard(key)
        elif secret is not None:
            self.caches.secrets.put(key, secret)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        """POST, so that an existing Secret (and its password) is never overwritten: a 409 is a stale cache."""
        created = await json_request(self.api, "POST", path, body=body)
        self.remember(created, name_of(created))
        return created

    async def patch_secret(
        self, secret: JsonObject | None, changes: Mapping[str, str | None], *, rotation_seen: str | None = None
    ) -> JsonObject:
        if secret is None:
            raise ValueError("a Secret to patch was expected")
        namespace, name = name_of(secret)
        metadata: JsonObject = {
            "resourceVersion": secret["metadata"]["resourceVersion"],
            "labels": registry_rules.LABELS,
        }
        if rotation_seen is not None:
            metadata["annotations"] = _rotation_seen(rotation_seen)
        patch = {
            "metadata": metadata,
            "data": {key: None if value is None else encode(value) for key, value in changes.items()},
        }
        path = resource_path("Secret", namespace, name)
        patched = await json_request(self.api, "PATCH", path, body=patch, content_type=MERGE_PATCH)
        self.remember(patched, (namespace, name))
        return patched

    async def write_pull_secret(
        self, current: JsonObject | None, namespace: str, config: str, replace: bool
    ) -> JsonObject:
        if current is not None and not replace:
            return await self.patch_secret(current, {registry_rules.DOCKERCONFIGJSON_KEY: config})
        if current is not None:  # the type of a Secret is immutable
            await self.delete(current)
        body = secret_body(
            namespace,
            registry_rules.PULL_SECRET,
            {registry_rules.DOCKERCONFIGJSON_KEY: config},
            labels=registry_rules.LABELS,
            secret_type=registry_rules.DOCKERCONFIGJSON,
        )
        return await self.create(resource_path("Secret", namespace), body)

    async def delete(self, secret: JsonObject) -> None:
        """Delete exactly the Secret we looked at (uid and resourceVersion preconditions)."""
        namespace, name = name_of(secret)
        metadata = secret["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": metadata["uid"], "resourceVersion": metadata["resourceVersion"]},
        }
        try:
            await json_request(self.api, "DELETE", resource_path("Secret", namespace, name), body=body)
        except ApiException as error:
            if error.status == 404:
                pass
            elif error.status == 403:  # the protection webhook: a service still uses it
                message = status_message(error) or str(error.reason)
                raise BlockedError(f'could not delete Secret "{name}": {message}') from None
            else:
                raise
        self.remember(None, (namespace, name), deleted=True)

    async def update_htpasswd(
        self,
        current: JsonObject | None,
        user: str,
        hashed: str | None,
        *,
        keep: str | None = None,
        now: datetime.datetime | None = None,
        previous: tuple[registry_rules.PreviousEntry, ...] | None = None,
    ) -> JsonObject | None:
        """Set or remove one user's entry, and with it (in the same write) its previous entries: ``keep`` adds the
        entry replaced (at ``now``), ``previous`` replaces them all. Every write is guarded by the Secret's
        resourceVersion (or is a POST), so an entry that someone else wrote meanwhile is never lost: a conflict
        re-reads and tries again."""
        async with self.htpasswd_lock:
            for _ in range(HTPASSWD_ATTEMPTS):
                entries, before = htpasswd_entries(current), htpasswd_previous(current)
                olds = dict(before)
                if previous is not None:
                    olds[user] = previous
                elif keep is not None and entries.get(user) == keep:  # only the entry that is being replaced
                    olds[user] = registry_rules.with_previous(olds.get(user, ()), keep, now or self.now())
                if not olds.get(user):
                    olds.pop(user, None)
                if hashed is None:
                    entries.pop(user, None)
                else:
                    entries[user] = hashed
                if current is not None and entries == htpasswd_entries(current) and olds == before:
                    return current
                try:
                    current = await self.write_htpasswd(
                        current, registry_rules.format_htpasswd(entries), registry_rules.format_previous(olds)
                    )
                except ApiException as error:
                    if error.status != 409:
                        raise
                    current = await self.get(self.config.htpasswd_path)
                    continue
                self.caches.htpasswd = current
                return current
        raise ApiException(status=409, reason=f"htpasswd kept changing under {HTPASSWD_ATTEMPTS} attempts")

    async def write_htpasswd(self, current: JsonObject | None, text: str, previous: str) -> JsonObject:
        """The ``htpasswd`` key, and ``previous`` (removed when empty, so a Secret with none looks as before)."""
        if current is None:
            body = secret_body(
                self.config.htpasswd_namespace,
                self.config.htpasswd_name,
                {registry_rules.HTPASSWD_KEY: text, **({registry_rules.PREVIOUS_KEY: previous} if previous else {})},
                labels=labels(),
            )
            return await json_request(
                self.api, "POST", resource_path("Secret", self.config.htpasswd_namespace), body=body
            )
        patch = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "data": {
                registry_rules.HTPASSWD_KEY: encode(text),
                registry_rules.PREVIOUS_KEY: encode(previous) if previous else None,
            },
        }
        return await json_request(self.api, "PATCH", self.config.htpasswd_path, body=patch, content_type=MERGE_PATCH)

    async def patch_service_account(self, account: JsonObject | None, *, add: bool) -> JsonObject | None:
        """imagePullSecrets of a ServiceAccount is replaced whole by any patch: read-modify-write under its
        resourceVersion, keeping the user's entries."""
        names = registry_rules.image_pull_secret_names(account)
        if account is None or names is None:
            return account
        namespace = name_of(account)[0]
        pull_secrets = registry_rules.with_pull_secret(names) if add else registry_rules.without_pull_secret(names)
        patch = {
            "metadata": {"resourceVersion": account["metadata"]["resourceVersion"]},
            "imagePullSecrets": pull_secrets,
        }
        path = resource_path("ServiceAccount", namespace, registry_rules.SERVICE_ACCOUNT)
        patched = await json_request(self.api, "PATCH", path, body=patch, content_type=MERGE_PATCH)
        self.caches.service_accounts.put(namespace, patched)
        return patched

    # ---- telling the user -------------------------------------------------------------------------------

    async def report_blocked(self, snapshot: Snapshot, message: str) -> None:
        namespace = snapshot.namespace
        self.caches.queue.add_after(namespace, BLOCKED_RETRY_SECONDS)
        if self.blocked.get(namespace) == message:
            return
        self.blocked[namespace] = message
        log.warning("registry: namespace %s is blocked: %s", namespace, message, extra=outcome("blocked"))
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


def _rotation_seen(seen: str | None) -> dict[str, str] | None:
    return None if seen is None else {ROTATION_SEEN: seen}
