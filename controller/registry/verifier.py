"""bcrypt checks of live passwords against their htpasswd entries."""

from __future__ import annotations

import asyncio
import hashlib

from rules import registry as registry_rules

MAX_REMEMBERED = 10_000


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
        if len(self.known) > MAX_REMEMBERED:
            self.known.clear()
        self.known[key] = verified
        return verified

    async def prime(self, password: str, hashed: str) -> None:
        key = self._key(password, hashed)
        if key not in self.known:
            self._remember(key, await asyncio.to_thread(registry_rules.verify_password, password, hashed))

    def __call__(self, password: str, hashed: str) -> bool:
        key = self._key(password, hashed)
        if key in self.known:
            return self.known[key]
        return self._remember(key, registry_rules.verify_password(password, hashed))
