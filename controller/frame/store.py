"""A cache an informer keeps: each object reduced at once by a typed ``compact`` to (key, value), kept by key.

A loop names what to keep of an object (often the object itself, sometimes a few fields) and what a change means
(which queue keys it touches, which index it updates); the store does the rest: a relist replaces the whole state
and reports every key present or gone, an event sets or drops one. Write-through (``put``, ``discard``) lets a
reconcile see its own write before the watch event for it arrives, without reporting a change.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

JsonObject = dict[str, Any]


def name_of(obj: JsonObject) -> tuple[str, str]:
    """(namespace, name) of an object; a cluster-scoped one has namespace ""."""
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


class Store(Mapping[K, V], Generic[K, V]):
    def __init__(
        self,
        compact: Callable[[JsonObject], tuple[K, V] | None],
        *,
        changed: Callable[[K, V | None, V | None], None],
    ) -> None:
        """``compact`` returns None for an object the store does not keep. ``changed(key, before, after)`` is
        called for every event and for every key of a relist, present or gone (None: absent); it enqueues what the
        change concerns, or keeps an index."""
        self.compact = compact
        self.changed = changed
        self.synced = False  # set once the first list is in
        self.items_by_key: dict[K, V] = {}

    # ---- what an informer feeds ---------------------------------------------------------------------------

    def replace(self, entries: list[tuple[K, V] | None]) -> None:
        before, self.items_by_key = self.items_by_key, dict(entry for entry in entries if entry is not None)
        for key, value in self.items_by_key.items():
            self.changed(key, before.get(key), value)
        for key in [key for key in before if key not in self.items_by_key]:
            self.changed(key, before[key], None)
        self.synced = True

    def apply(self, event_type: str, entry: tuple[K, V] | None) -> None:
        if entry is None:
            return
        key, value = entry
        if event_type == "DELETED":
            self.changed(key, self.items_by_key.pop(key, None), None)
        else:
            before = self.items_by_key.get(key)
            self.items_by_key[key] = value
            self.changed(key, before, value)

    # ---- write-through ------------------------------------------------------------------------------------

    def put(self, key: K, value: V) -> None:
        self.items_by_key[key] = value

    def discard(self, key: K) -> None:
        self.items_by_key.pop(key, None)

    # ---- reading ------------------------------------------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        return self.items_by_key[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self.items_by_key)

    def __len__(self) -> int:
        return len(self.items_by_key)


def touching(add: Callable[[K], None]) -> Callable[[K, object, object], None]:
    """A ``changed`` that enqueues the key of every change, whatever it was."""
    return lambda key, before, after: add(key)
