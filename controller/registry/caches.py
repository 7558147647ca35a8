"""What the registry loop keeps from its informers. Every cache is keyed so that a change names the namespace it
concerns, and enqueues it; nothing else of a Secret than the registry's own (label-selected) is kept."""

from __future__ import annotations

from typing import Any

from controller.frame.queue import WorkQueue
from controller.frame.store import JsonObject, Store, name_of, touching
from rules import registry as registry_rules
from rules.secretdata import decode_data


def htpasswd_entries(secret: JsonObject | None) -> dict[str, str]:
    data = decode_data((secret or {}).get("data") or {})
    return registry_rules.parse_htpasswd(data.get(registry_rules.HTPASSWD_KEY, ""))


def htpasswd_previous(secret: JsonObject | None) -> dict[str, tuple[registry_rules.PreviousEntry, ...]]:
    """The entries rotations replaced, kept until retired (key ``previous`` of the same Secret)."""
    data = decode_data((secret or {}).get("data") or {})
    return registry_rules.parse_previous(data.get(registry_rules.PREVIOUS_KEY, ""))


def _namespace_entry(obj: JsonObject) -> tuple[str, JsonObject]:
    return name_of(obj)[1], obj


def _secret_entry(obj: JsonObject) -> tuple[tuple[str, str], JsonObject]:
    return name_of(obj), obj


def _rotation_entry(obj: JsonObject) -> tuple[str, JsonObject] | None:
    """A rotation Secret names the namespace it is for."""
    namespace = registry_rules.namespace_of_rotation_secret(name_of(obj)[1])
    return None if namespace is None else (namespace, obj)


def _service_account_entry(obj: JsonObject) -> tuple[str, JsonObject]:
    return name_of(obj)[0], obj


class Caches:
    def __init__(self, queue: WorkQueue[str]) -> None:
        self.queue = queue
        self.namespaces: Store[str, JsonObject] = Store(_namespace_entry, changed=touching(queue.add))
        # (namespace, name) → one of the registry Secrets of a namespace
        self.secrets: Store[tuple[str, str], JsonObject] = Store(
            _secret_entry, changed=touching(lambda key: queue.add(key[0]))
        )
        # VPC namespace → its rotation Secret
        self.rotations: Store[str, JsonObject] = Store(_rotation_entry, changed=touching(queue.add))
        # namespace → its default ServiceAccount
        self.service_accounts: Store[str, JsonObject] = Store(_service_account_entry, changed=touching(queue.add))
        self.htpasswd: JsonObject | None = None

    def entries(self) -> dict[str, str]:
        return htpasswd_entries(self.htpasswd)

    def users(self) -> dict[str, tuple[str | None, tuple[registry_rules.PreviousEntry, ...]]]:
        """user → (entry, previous entries), for every user with either."""
        entries, previous = self.entries(), htpasswd_previous(self.htpasswd)
        return {user: (entries.get(user), tuple(previous.get(user, ()))) for user in entries.keys() | previous.keys()}


class HtpasswdHandler:
    """The one htpasswd Secret: a change enqueues the namespaces whose entries changed (a stale entry of a deleted
    namespace included, so that it is removed)."""

    def __init__(self, caches: Caches) -> None:
        self.caches = caches

    def _set(self, secret: JsonObject | None) -> None:
        before = self.caches.users()
        self.caches.htpasswd = secret
        after = self.caches.users()
        for user in {u for u in before.keys() | after.keys() if before.get(u) != after.get(u)}:
            namespace = registry_rules.namespace_of(user)
            if namespace is not None:
                self.caches.queue.add(namespace)

    def replace(self, objects: list[JsonObject]) -> None:
        self._set(objects[0] if objects else None)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self._set(None if event_type == "DELETED" else obj)
