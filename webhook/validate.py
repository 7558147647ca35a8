"""Protection as an admission decision: refuse to delete a Secret (or remove a key) that a service still uses.

The index answers from memory. When it says "unused", the answer is confirmed by a consistent read of the
referrer kinds in that namespace before the delete is allowed, so a referrer created an instant before the
DELETE still blocks it (docs/protection.md explains why this is safe and what it costs).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rules.database import secret_name
from rules.protection import (
    Referrer,
    Usage,
    delete_refusal,
    dormant_warnings,
    is_exempt,
    key_removal_refusal,
    keys_subject,
    referrer_of,
    removed_keys,
    secret_subject,
    usage,
)
from webhook.admission import AdmissionRequest, AdmissionResponse, allow, deny
from webhook.referrers import ReferrerIndex, TerminatingNamespaces

# A consistent read of a namespace: for each referrer kind, its LIST answers, undecoded (protobuf or JSON).
Snapshot = list[tuple[str, bytes]]
ConsistentRead = Callable[[str], Awaitable[Snapshot]]
# (namespace, kind) → that kind's LIST as JSON pages, read now: for a kind whose protobuf answer mentions the name.
JsonRead = Callable[[str, str], Awaitable[list[bytes]]]

PROTOBUF_MAGIC = b"k8s\x00"  # how every protobuf answer of the API starts


class CoalescedReads:
    """Share consistent reads between concurrent deletes in one namespace without weakening them.

    A read serves every request that arrived *before it started*, so each request still sees every referrer
    created before it arrived. Per namespace at most one read runs and one waits: a burst of N deletes costs two
    reads, not N.
    """

    def __init__(self, read: ConsistentRead) -> None:
        self.read = read
        self._running: dict[str, asyncio.Future[Snapshot]] = {}
        self._next: dict[str, asyncio.Future[Snapshot]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, namespace: str) -> Snapshot:
        upcoming = self._next.get(namespace)
        if upcoming is None:
            upcoming = self._next[namespace] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._run(namespace, upcoming))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(upcoming)

    async def _run(self, namespace: str, result: asyncio.Future[Snapshot]) -> None:
        previous = self._running.get(namespace)
        if previous is not None:
            await asyncio.wait([previous])
        # From here on, a new arrival gets a read that starts after it.
        del self._next[namespace]
        self._running[namespace] = result
        try:
            result.set_result(await self.read(namespace))
        except Exception as error:  # every waiter sees the failure
            result.set_exception(error)
        finally:
            if self._running.get(namespace) is result:
                del self._running[namespace]


@dataclass
class ProtectionView:
    referrers: ReferrerIndex = field(default_factory=ReferrerIndex)
    terminating: TerminatingNamespaces = field(default_factory=TerminatingNamespaces)
    consistent_read: ConsistentRead | None = None
    json_read: JsonRead | None = None


async def _users(view: ProtectionView, namespace: str, secret: str, keys: frozenset[str] | None) -> Usage:
    """Who uses ``secret`` (needing one of ``keys``, if given): from the index when it finds a user, otherwise
    from a consistent read, so that an allow (and what it warns about) is judged on current objects."""
    found = usage(secret, view.referrers.referrers(namespace, secret), view.referrers.by_uid, keys=keys)
    if found.report or view.consistent_read is None:
        return found
    fresh = await referrers_in(await view.consistent_read(namespace), secret, namespace, view.json_read)
    return usage(secret, fresh, {r.uid: r for r in fresh}, keys=keys)


async def referrers_in(snapshot: Snapshot, secret: str, namespace: str, json_read: JsonRead | None) -> list[Referrer]:
    """The referrers of a snapshot that may use ``secret``. An answer that does not even mention the name is not
    decoded, so a delete of an unused Secret decodes almost nothing. A protobuf answer that mentions it is not
    decoded either: that kind is read again as JSON, now (still a consistent read, started after the request
    arrived), and those pages are."""
    found: list[Referrer] = []
    for kind, body in snapshot:
        if not mentions(body, secret):
            continue
        pages = [body]
        if body.startswith(PROTOBUF_MAGIC):
            if json_read is None:
                raise RuntimeError(f"a protobuf LIST of {kind} mentions {secret!r} and there is no JSON reader")
            pages = await json_read(namespace, kind)
        for page in pages:
            if mentions(page, secret):
                items = json.loads(page).get("items") or []
                found += [referrer_of(item, kind) for item in items]
    return found


def mentions(body: bytes, secret: str) -> bool:
    """Whether an undecoded LIST answer may hold a reference to ``secret`` (a "yes" that is wrong only costs decoding).

    Every reference holds the name as a whole string (``secretKeyRef.name``, ``secretName``, an ``imagePullSecrets``
    entry…) or at the start of a link value (``stripe/KEY``). The name is a DNS subdomain, so no encoding escapes
    it: a whole string is ``"stripe"`` in JSON text, and in protobuf a string field is its length as a varint
    followed by its bytes, ``\\x06stripe``."""
    name = secret.encode()
    if name + b"/" in body:
        return True
    if body.startswith(PROTOBUF_MAGIC):
        return _varint(len(name)) + name in body
    return b'"' + name + b'"' in body


def _varint(number: int) -> bytes:
    """Protobuf's base-128 varint (low seven bits first, the high bit set on every byte but the last)."""
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


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
        users = await _users(view, namespace, name, None)
        refusal = delete_refusal(name, users.report)
        subject = secret_subject(name)
    elif kind == "Secret" and operation == "UPDATE":
        removed = removed_keys(old, new)
        if not removed or is_exempt(new, namespace_terminating=terminating):
            return allow(uid)
        users = await _users(view, namespace, name, removed)
        refusal = key_removal_refusal(name, users.needed, users.report)
        subject = keys_subject(name, removed)
    elif kind == "Database" and operation == "DELETE":
        if is_exempt(old, namespace_terminating=terminating):
            return allow(uid)
        secret = str((old.get("status") or {}).get("secretName") or secret_name(name))
        users = await _users(view, namespace, secret, None)
        refusal = delete_refusal(secret, users.report)
        if refusal:
            refusal = f'database "{name}": its credentials {refusal}'
        subject = f'{secret_subject(secret)} (the credentials of database "{name}")'
    else:
        return allow(uid)
    if refusal:
        return deny(uid, refusal)
    return allow(uid, warnings=dormant_warnings(subject, users.dormant))
