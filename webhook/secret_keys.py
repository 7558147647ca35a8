"""What the webhook knows about Secrets: their key names per namespace, kept from a watch. Never their values."""

from __future__ import annotations

import sys
from typing import Any


class SecretKeyIndex:
    """An informer handler: (namespace, name) → frozenset of key names."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], frozenset[str]] = {}

    @staticmethod
    def _entry(obj: dict[str, Any]) -> tuple[tuple[str, str], frozenset[str]]:
        metadata = obj.get("metadata") or {}
        key = (sys.intern(str(metadata.get("namespace", ""))), str(metadata.get("name", "")))
        names = frozenset(sys.intern(k) for k in (obj.get("data") or {}))
        return key, names

    def replace(self, objects: list[dict[str, Any]]) -> None:
        self._keys = dict(self._entry(obj) for obj in objects)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        key, names = self._entry(obj)
        if event_type == "DELETED":
            self._keys.pop(key, None)
        else:
            self._keys[key] = names

    def __call__(self, namespace: str, name: str) -> frozenset[str] | None:
        return self._keys.get((namespace, name))

    def __len__(self) -> int:
        return len(self._keys)
