"""Protection as an admission decision: refuse to delete a Secret (or remove a key) that a service still uses.

The index answers from memory. When it says "unused", the answer is confirmed by a consistent read of the
referrer kinds in that namespace before the delete is allowed, so a referrer created an instant before the
DELETE still blocks it (docs/protection.md explains why this is safe and what it costs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from rules.protection import (
    Referrer,
    delete_refusal,
    is_exempt,
    key_removal_refusal,
    removed_keys,
    usage,
)
from webhook.admission import AdmissionRequest, AdmissionResponse, allow, deny
from webhook.referrers import ReferrerIndex, TerminatingNamespaces

# (namespace) → every referrer in it, read consistently from the API
ConsistentRead = Callable[[str], Awaitable[list[Referrer]]]
CREDENTIALS_SUFFIX = "-credentials"


@dataclass
class ProtectionView:
    referrers: ReferrerIndex = field(default_factory=ReferrerIndex)
    terminating: TerminatingNamespaces = field(default_factory=TerminatingNamespaces)
    consistent_read: ConsistentRead | None = None


async def _referrers(
    view: ProtectionView, namespace: str, secret: str, keys: frozenset[str] | None
) -> tuple[list[Referrer], Mapping[str, Referrer]]:
    """The referrers that use ``secret`` (needing one of ``keys``, if given): from the index, or, when it finds
    none, from a consistent read."""
    found = view.referrers.referrers(namespace, secret)
    if usage(secret, found, view.referrers.by_uid, keys=keys) or view.consistent_read is None:
        return found, view.referrers.by_uid
    fresh = await view.consistent_read(namespace)
    return fresh, {r.uid: r for r in fresh}


async def validate(request: AdmissionRequest, view: ProtectionView) -> AdmissionResponse:
    uid = request["uid"]
    kind = request["kind"]["kind"]
    operation = request["operation"]
    namespace = request.get("namespace", "")
    name = request.get("name", "")
    old = request.get("oldObject") or {}
    new = request.get("object") or {}
    terminating = namespace in view.terminating

    if kind == "Secret" and operation == "DELETE":
        if is_exempt(old, namespace_terminating=terminating):
            return allow(uid)
        refusal = delete_refusal(name, usage(name, *await _referrers(view, namespace, name, None)))
    elif kind == "Secret" and operation == "UPDATE":
        removed = removed_keys(old, new)
        if not removed or is_exempt(new, namespace_terminating=terminating):
            return allow(uid)
        referrers, by_uid = await _referrers(view, namespace, name, removed)
        report = usage(name, referrers, by_uid, keys=removed)
        in_use = frozenset(
            key for r in referrers for use in r.uses if use.secret == name for key in use.required_keys & removed
        )
        refusal = key_removal_refusal(name, in_use, report)
    elif kind == "Database" and operation == "DELETE":
        if is_exempt(old, namespace_terminating=terminating):
            return allow(uid)
        secret = str((old.get("status") or {}).get("secretName") or f"{name}{CREDENTIALS_SUFFIX}")
        refusal = delete_refusal(secret, usage(secret, *await _referrers(view, namespace, secret, None)))
        if refusal:
            refusal = f'database "{name}": its credentials {refusal}'
    else:
        return allow(uid)
    return deny(uid, refusal) if refusal else allow(uid)
