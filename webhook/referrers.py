"""The reverse index Secret → referrers, kept from watches of the referrer kinds, and the namespaces being deleted.

Each watched object is reduced at once to a Referrer (kind, name, owner, and its uses of Secrets, found by the
core's reference finder); nothing else of it is kept.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rules.protection import Referrer, referrer_of
from rules.workloads import is_terminating


class ReferrerIndex:
    def __init__(self) -> None:
        self.by_uid: dict[str, Referrer] = {}
        self._by_secret: dict[tuple[str, str], set[str]] = defaultdict(set)

    def add(self, referrer: Referrer) -> None:
        self.remove(referrer.uid)
        self.by_uid[referrer.uid] = referrer
        for use in referrer.uses:
            self._by_secret[(referrer.namespace, use.secret)].add(referrer.uid)

    def remove(self, uid: str) -> None:
        old = self.by_uid.pop(uid, None)
        if old is None:
            return
        for use in old.uses:
            key = (old.namespace, use.secret)
            users = self._by_secret.get(key)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self._by_secret[key]

    def handler(self, kind: str) -> KindHandler:
        return KindHandler(self, kind)

    def referrers(self, namespace: str, secret: str) -> list[Referrer]:
        return [self.by_uid[uid] for uid in self._by_secret.get((namespace, secret), ())]

    def __len__(self) -> int:
        return len(self.by_uid)


class KindHandler:
    """Feeds one kind's informer into the shared index; a relist replaces that kind's entries only."""

    def __init__(self, index: ReferrerIndex, kind: str) -> None:
        self.index = index
        self.kind = kind

    def replace(self, objects: list[dict[str, Any]]) -> None:
        for uid in [uid for uid, r in self.index.by_uid.items() if r.kind == self.kind]:
            self.index.remove(uid)
        for obj in objects:
            self.index.add(referrer_of(obj, self.kind))

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.index.remove(str((obj.get("metadata") or {}).get("uid", "")))
        else:
            self.index.add(referrer_of(obj, self.kind))


class TerminatingNamespaces:
    """Names of the namespaces being deleted: nothing in them is protected."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self.names = {str(o["metadata"]["name"]) for o in objects if is_terminating(o)}

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if event_type != "DELETED" and is_terminating(obj):
            self.names.add(name)
        else:
            self.names.discard(name)

    def __contains__(self, name: object) -> bool:
        return name in self.names
