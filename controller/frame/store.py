"""A cache an informer keeps: each object reduced at once by a typed ``compact`` to (key, value), kept by key.

A loop names what to keep of an object (often the object itself, sometimes a few fields) and which queue key a
change touches; the store does the rest: a relist replaces the whole state and touches every key present or gone,
an event sets or drops one. Write-through (``put``, ``discard``) lets a reconcile see its own write before the
watch event for it arrives, without touching anything.
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
        touched: Callable[[K], None],
        touch_deleted: bool = True,
    ) -> None:
        """``compact`` returns None for an object the store does not keep; ``touched`` gets the key of every change
        (a relist's every key, present or gone). ``touch_deleted=False``: a delete event touches nothing."""
        self.compact = compact
        self.touched = touched
        self.touch_deleted = touch_deleted
        self.items_by_key: dict[K, V] = {}

    # ---- what an informer feeds ---------------------------------------------------------------------------

    def replace(self, entries: list[tuple[K, V] | None]) -> None:
        fresh = dict(entry for entry in entries if entry is not None)
        gone = [key for key in self.items_by_key if key not in fresh]
        self.items_by_key = fresh
        for key in [*fresh, *gone]:
            self.touched(key)

    def apply(self, event_type: str, entry: tuple[K, V] | None) -> None:
        if entry is None:
            return
        key, value = entry
        if event_type == "DELETED":
            self.items_by_key.pop(key, None)
            if not self.touch_deleted:
                return
        else:
            self.items_by_key[key] = value
        self.touched(key)

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
