"""Per-VPC registry credentials: names, formats, and the next write that brings one namespace to its desired state.

Plain functions over plain dicts; the controller's edge reads the objects, asks ``next_step`` what to do, does it,
and asks again until the answer is ``None``.

``registry-credentials`` holds exactly ``REGISTRY_URL``, ``REGISTRY_USER`` and ``REGISTRY_PASSWORD`` from its first
write on. A password on its way in is kept meanwhile in a Secret of the controller's own namespace (one per VPC
namespace, ``registry-rotation-<namespace>``), never in the user's Secret; the registry's htpasswd Secret holds only
its bcrypt hash. Every new password — the first one included — goes through it, in this order, so that a crash
between any two writes never loses a password the registry accepts:

1. the new password is stored in the rotation Secret (a create: an existing one is never overwritten);
2. the htpasswd entry is set to its hash; the entry it replaces, when it is the hash of the published password, is
   kept as a *previous* entry (key ``previous`` of the same Secret) that the token endpoint still accepts;
3. ``registry-pull-secret`` is rewritten for it;
4. ``registry-credentials`` is created with it, or updated to it (the commit);
5. the rotation Secret is deleted.

A previous entry is retired by ``rules.retirement`` — the rule the Database feature follows for its previous login:
once every reader of ``registry-credentials`` has rolled out, completely, to its current data, or the grace period
after the rotation has passed. A namespace that leaves the VPC loses its entry and its previous ones in one write.
"""

from __future__ import annotations

import datetime
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from rules.names import MANAGED_BY_LABEL, PRODUCT, REGISTRY_TYPE, ROTATE, ROTATION_SEEN, VPC_LABEL
from rules.retirement import Reader, retirement
from rules.secretdata import decode_data, encode, generate_password, labels
from rules.times import format_time, parse_time
from rules.workloads import annotations_of, compact_json, is_terminating, labels_of

CREDENTIALS = "registry-credentials"
PULL_SECRET = "registry-pull-secret"
SERVICE_ACCOUNT = "default"
URL_KEY = "REGISTRY_URL"
USER_KEY = "REGISTRY_USER"
PASSWORD_KEY = "REGISTRY_PASSWORD"
CONTRACT_KEYS = (URL_KEY, USER_KEY, PASSWORD_KEY)
# Where earlier versions kept a password on its way in, inside registry-credentials; moved out on upgrade.
LEGACY_PENDING_KEY = "REGISTRY_PASSWORD_PENDING"
# A password on its way in, in the controller's namespace: Secret ROTATION_PREFIX + <namespace>, key ROTATION_KEY.
ROTATION_PREFIX = "registry-rotation-"
ROTATION_KEY = "password"
ROTATION_COMPONENT = "registry-rotation"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
HTPASSWD_KEY = "htpasswd"
# Entries a rotation replaced, still accepted by the token endpoint until retired: ``user:hash:rotated-at`` lines,
# in the same Secret (the controller's namespace: no tenant writes there). Never read by a basic-auth registry.
PREVIOUS_KEY = "previous"
MAX_PREVIOUS = 3  # per user: each costs one more bcrypt check of a wrong password at the token endpoint
DEFAULT_GRACE = datetime.timedelta(hours=1)  # the controller's --rotation-grace-seconds

USER_PREFIX = "vpc-"
BCRYPT_COST = 10  # the registry checks the hash on every request: higher costs slow every pull

LABELS = labels(secret_type=REGISTRY_TYPE)
ROTATION_LABELS = labels(component=ROTATION_COMPONENT)
DEFAULT_PORTS = {"https": "443", "http": "80"}


# ---- names and formats ------------------------------------------------------------------------------------


def username(namespace: str) -> str:
    """The registry user of a VPC namespace: stable, and free of ':' (a namespace name is a DNS label)."""
    return USER_PREFIX + namespace


def namespace_of(user: str) -> str | None:
    """The namespace a managed htpasswd user belongs to; None for users the operator added by hand."""
    return user[len(USER_PREFIX) :] if user.startswith(USER_PREFIX) and len(user) > len(USER_PREFIX) else None


def hash_password(password: str, *, cost: int = BCRYPT_COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def verify_password(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False


def rotation_secret_name(namespace: str) -> str:
    """The Secret in the controller's namespace that holds a VPC namespace's password on its way in."""
    return ROTATION_PREFIX + namespace


def namespace_of_rotation_secret(name: str) -> str | None:
    return (
        name[len(ROTATION_PREFIX) :] if name.startswith(ROTATION_PREFIX) and len(name) > len(ROTATION_PREFIX) else None
    )


def registry_host(url: str) -> str:
    """What ``docker login`` and image references take, and what a pull secret's ``auths`` is keyed by: the host,
    with its port unless it is the scheme's default. ``https://r.example:5000/x`` → ``r.example:5000``,
    ``https://r.example:443`` → ``r.example``; a bare ``host[:port]`` counts as https."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    host = parsed.hostname or url
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parsed.port
    except ValueError:
        return parsed.netloc or url
    if port is None or str(port) == DEFAULT_PORTS.get(parsed.scheme.lower()):
        return host
    return f"{host}:{port}"


def dockerconfigjson(host: str, user: str, password: str) -> str:
    """The ``.dockerconfigjson`` of a pull secret for one registry user (deterministic, so it compares as text)."""
    auth = encode(f"{user}:{password}")
    body = {"auths": {host: {"username": user, "password": password, "auth": auth}}}
    return compact_json(body)


def parse_htpasswd(text: str) -> dict[str, str]:
    """user → hash. Blank lines, comments and lines without ``:`` are skipped; a later line for a user wins (as in
    the registry)."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        user, hashed = line.split(":", 1)
        if user:
            entries[user] = hashed
    return entries


def format_htpasswd(entries: Mapping[str, str]) -> str:
    """One ``user:hash`` line per user, sorted by user, so equal contents are equal files."""
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))


@dataclass(frozen=True)
class PreviousEntry:
    """An htpasswd entry a rotation replaced, and when."""

    hash: str
    rotated_at: datetime.datetime


Previous = Mapping[str, Sequence[PreviousEntry]]  # user → its previous entries, oldest first


def parse_previous(text: str) -> dict[str, tuple[PreviousEntry, ...]]:
    """user → previous entries, from ``user:hash:rotated-at`` lines (a bcrypt hash holds no ``:``). A line that
    does not parse is skipped: it is not accepted, and the next write drops it."""
    found: dict[str, list[PreviousEntry]] = {}
    for line in text.splitlines():
        user, _, rest = line.strip().partition(":")
        hashed, _, at = rest.partition(":")
        rotated_at = parse_time(at)
        if user and hashed and rotated_at is not None:
            found.setdefault(user, []).append(PreviousEntry(hashed, rotated_at))
    return {user: tuple(entries[-MAX_PREVIOUS:]) for user, entries in found.items()}


def format_previous(previous: Previous) -> str:
    """Sorted by user, each user's entries oldest first."""
    return "".join(
        f"{user}:{entry.hash}:{format_time(entry.rotated_at)}\n"
        for user in sorted(previous)
        for entry in previous[user]
    )


def with_previous(kept: Sequence[PreviousEntry], replaced: str, now: datetime.datetime) -> tuple[PreviousEntry, ...]:
    """A user's previous entries after a rotation replaced ``replaced``: the newest ``MAX_PREVIOUS``."""
    entries = [entry for entry in kept if entry.hash != replaced] + [PreviousEntry(replaced, now)]
    return tuple(entries[-MAX_PREVIOUS:])


def accepted_hashes(
    entry: str | None, previous: Sequence[PreviousEntry], *, now: datetime.datetime, grace: datetime.timedelta
) -> tuple[str, ...]:
    """The hashes a password may match to get a token: the entry, and the previous entries whose grace period has
    not passed (the controller drops them then, or earlier once the readers have rolled; the token endpoint does
    not wait for it). None at all without an entry: a namespace that left has none."""
    if entry is None:
        return ()
    return (entry, *(p.hash for p in reversed(previous) if now < p.rotated_at + grace and p.hash != entry))


# ---- what is observed -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretState:
    managed: bool
    type: str
    data: Mapping[str, str] = field(repr=False)  # decoded values
    rotation_seen: str | None = None


@dataclass(frozen=True)
class Pending:
    """A password on its way in (the rotation Secret), and the rotate request it answers, if any."""

    password: str = field(repr=False)
    rotation_seen: str | None = None


@dataclass(frozen=True)
class Observed:
    """One namespace as the controller sees it. ``entry`` is the user's htpasswd hash, if any."""

    namespace: str
    member: bool  # labeled as a VPC and not being deleted
    writable: bool  # exists and is not being deleted: Secrets can be written and deleted in it
    rotate: str | None
    credentials: SecretState | None
    pull_secret: SecretState | None
    pull_secrets_of_service_account: tuple[str, ...] | None  # None: no default ServiceAccount (yet)
    entry: str | None
    pending: Pending | None = None
    previous: tuple[PreviousEntry, ...] = ()  # entries a rotation replaced, not yet retired
    readers: tuple[Reader, ...] | None = None  # of registry-credentials; None: not looked at


def is_member(namespace: Mapping[str, Any] | None) -> bool:
    return VPC_LABEL in labels_of(namespace) and not is_terminating(namespace or {})


def is_writable(namespace: Mapping[str, Any] | None) -> bool:
    return namespace is not None and not is_terminating(namespace)


def rotate_request(namespace: Mapping[str, Any] | None) -> str | None:
    return annotations_of(namespace).get(ROTATE)


def secret_state(secret: Mapping[str, Any] | None) -> SecretState | None:
    if secret is None:
        return None
    return SecretState(
        managed=labels_of(secret).get(MANAGED_BY_LABEL) == PRODUCT,
        type=str(secret.get("type") or "Opaque"),
        data=decode_data(secret.get("data") or {}),
        rotation_seen=annotations_of(secret).get(ROTATION_SEEN),
    )


def pending_state(secret: Mapping[str, Any] | None) -> Pending | None:
    if secret is None:
        return None
    password = decode_data(secret.get("data") or {}).get(ROTATION_KEY, "")
    return Pending(password, annotations_of(secret).get(ROTATION_SEEN))


def image_pull_secret_names(service_account: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    if service_account is None:
        return None
    return tuple(str(ref.get("name", "")) for ref in service_account.get("imagePullSecrets") or [])


# ---- what to do next --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StorePending:
    """Keep a new password in the rotation Secret before anything depends on it."""

    password: str = field(repr=False)
    rotation_seen: str | None


@dataclass(frozen=True)
class DeletePending:
    pass


@dataclass(frozen=True)
class CreateCredentials:
    """A new ``registry-credentials``, with exactly its contract keys."""

    data: Mapping[str, str] = field(repr=False)
    rotation_seen: str | None


@dataclass(frozen=True)
class SetEntry:
    """Set the user's entry to the hash of ``password``; ``keep``: the entry it replaces, kept as a previous one."""

    user: str
    password: str = field(repr=False)
    keep: str | None = None


@dataclass(frozen=True)
class RemoveEntry:
    """Remove the user's entry and its previous ones, in one write."""

    user: str


@dataclass(frozen=True)
class RetirePrevious:
    """Keep only these previous entries of the user (the others are retired)."""

    user: str
    keep: tuple[PreviousEntry, ...]
    why: str


@dataclass(frozen=True)
class WritePullSecret:
    dockerconfigjson: str = field(repr=False)
    replace: bool  # the existing one has another type, which is immutable: delete it first


@dataclass(frozen=True)
class UpdateCredentials:
    """Set the given keys; a None value removes the key. ``rotation_seen``: the rotate request this answers."""

    changes: Mapping[str, str | None] = field(repr=False)
    rotation_seen: str | None = None


@dataclass(frozen=True)
class AddToServiceAccount:
    pass


@dataclass(frozen=True)
class RemoveFromServiceAccount:
    pass


@dataclass(frozen=True)
class DeleteSecret:
    name: str


@dataclass(frozen=True)
class Blocked:
    """Something not ours is in the way: tell the user, and try again later."""

    message: str


Step = (
    StorePending
    | DeletePending
    | CreateCredentials
    | SetEntry
    | RemoveEntry
    | RetirePrevious
    | WritePullSecret
    | UpdateCredentials
    | AddToServiceAccount
    | RemoveFromServiceAccount
    | DeleteSecret
    | Blocked
)


def live_password(observed: Observed) -> str | None:
    """The password the registry should accept: the one on its way in while there is one."""
    if observed.pending is not None and observed.pending.password:
        return observed.pending.password
    if observed.credentials is None:
        return None
    return observed.credentials.data.get(PASSWORD_KEY) or None


def credentials_data(host: str, user: str, password: str) -> dict[str, str]:
    """Exactly the contract keys of ``registry-credentials``."""
    return {URL_KEY: host, USER_KEY: user, PASSWORD_KEY: password}


def not_ours(name: str, namespace: str) -> str:
    return (
        f'Secret "{name}" in namespace "{namespace}" is not managed by smll-secrets, so its registry credentials '
        f"cannot be written; rename or delete that Secret"
    )


def next_step(
    observed: Observed,
    *,
    registry_host: str,
    verify: Callable[[str, str], bool] = verify_password,
    new_password: Callable[[], str] = generate_password,
    now: datetime.datetime | None = None,
    grace: datetime.timedelta = DEFAULT_GRACE,
) -> Step | None:
    """The one write that brings the namespace closer to its desired state; None when it is there."""
    if observed.member:
        step = _member_step(observed, registry_host, verify, new_password)
        return step if step is not None else _retire_step(observed, now, grace)
    return _leaver_step(observed)


def kept_previous(
    observed: Observed, *, now: datetime.datetime, grace: datetime.timedelta
) -> tuple[tuple[PreviousEntry, ...], str]:
    """The previous entries still kept, each by ``rules.retirement`` (the readers' rollout, or its grace period),
    and why the others go. Without the readers looked at, all are kept (until their grace period passes)."""
    kept, why = [], ""
    for entry in observed.previous:
        if observed.readers is None:
            drop = now >= entry.rotated_at + grace
            reason = "the grace period after the rotation has passed"
        else:
            plan = retirement(observed.readers, rotated_at=entry.rotated_at, grace=grace, now=now)
            drop, reason = plan.drop, plan.why
        if drop:
            why = why or reason
        else:
            kept.append(entry)
    return tuple(kept), why


def _retire_step(observed: Observed, now: datetime.datetime | None, grace: datetime.timedelta) -> Step | None:
    """Once the namespace is settled (the new password committed): retire what the readers no longer need."""
    if not observed.previous or now is None:
        return None
    kept, why = kept_previous(observed, now=now, grace=grace)
    if kept == observed.previous:
        return None
    return RetirePrevious(username(observed.namespace), kept, why)


def _start(observed: Observed, new_password: Callable[[], str]) -> StorePending | None:
    """Whether a new password is due, with no other one on its way in."""
    credentials = observed.credentials
    if credentials is None:  # a rotate request made before the first password asks for nothing more
        return StorePending(new_password(), observed.rotate)
    legacy = credentials.data.get(LEGACY_PENDING_KEY)
    if legacy:  # an earlier version's password on its way in: it may be live already, so it is finished, not lost
        return StorePending(legacy, credentials.rotation_seen)
    if not credentials.data.get(PASSWORD_KEY):  # removed by hand: nothing to keep
        return StorePending(new_password(), credentials.rotation_seen)
    if observed.rotate is not None and observed.rotate != credentials.rotation_seen:
        return StorePending(new_password(), observed.rotate)
    return None


def _replaced(observed: Observed, verify: Callable[[str, str], bool]) -> str | None:
    """The entry a new one replaces, to keep as a previous entry: only while a new password is on its way in, and
    only when it is the hash of the password the readers hold (``registry-credentials``'s, tenant-writable: it is
    only checked against our hash, never taken)."""
    committed = observed.credentials.data.get(PASSWORD_KEY) if observed.credentials is not None else None
    entry = observed.entry
    if observed.pending is None or entry is None or not committed or not verify(committed, entry):
        return None
    return entry


def _member_step(
    observed: Observed, host: str, verify: Callable[[str, str], bool], new_password: Callable[[], str]
) -> Step | None:
    namespace = observed.namespace
    user = username(namespace)
    credentials, pull, pending = observed.credentials, observed.pull_secret, observed.pending
    for name, secret in ((CREDENTIALS, credentials), (PULL_SECRET, pull)):
        if secret is not None and not secret.managed:
            return Blocked(not_ours(name, namespace))
    if pending is not None and not pending.password:  # holds nothing the registry could accept
        return DeletePending()
    if pending is None and (start := _start(observed, new_password)) is not None:
        return start
    password = live_password(observed)
    assert password is not None  # a pending password, or credentials with one (else _start answered)
    if observed.entry is None or not verify(password, observed.entry):
        return SetEntry(user, password, keep=_replaced(observed, verify))
    wanted = dockerconfigjson(host, user, password)
    if pull is None or pull.type != DOCKERCONFIGJSON or pull.data.get(DOCKERCONFIGJSON_KEY) != wanted:
        return WritePullSecret(wanted, replace=pull is not None and pull.type != DOCKERCONFIGJSON)
    desired = credentials_data(host, user, password)
    seen = pending.rotation_seen if pending is not None else None
    if credentials is None:
        return CreateCredentials(desired, seen)
    changes: dict[str, str | None] = {
        key: value for key, value in desired.items() if credentials.data.get(key) != value
    }
    changes |= {key: None for key in credentials.data if key not in CONTRACT_KEYS}  # exactly the contract keys
    if changes or (seen is not None and seen != credentials.rotation_seen):
        return UpdateCredentials(changes, seen)
    if pending is not None:
        return DeletePending()
    names = observed.pull_secrets_of_service_account
    if names is not None and PULL_SECRET not in names:
        return AddToServiceAccount()
    return None


def _leaver_step(observed: Observed) -> Step | None:
    if observed.entry is not None or observed.previous:  # revoke first, every entry at once: the rest is tidying up
        return RemoveEntry(username(observed.namespace))
    if observed.pending is not None:  # a rotation that will not finish; it lives in our namespace, always writable
        return DeletePending()
    if not observed.writable:
        return None
    pull, credentials = observed.pull_secret, observed.credentials
    if pull is not None and pull.managed:
        # The reference goes before the Secret it names; a reference to a Secret that is not ours is the user's.
        if PULL_SECRET in (observed.pull_secrets_of_service_account or ()):
            return RemoveFromServiceAccount()
        return DeleteSecret(PULL_SECRET)
    if credentials is not None and credentials.managed:
        return DeleteSecret(CREDENTIALS)
    return None


def with_pull_secret(names: tuple[str, ...]) -> list[dict[str, str]]:
    """The ServiceAccount's ``imagePullSecrets`` with ours added, the user's entries kept in their order."""
    return [{"name": name} for name in names] + ([] if PULL_SECRET in names else [{"name": PULL_SECRET}])


def without_pull_secret(names: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"name": name} for name in names if name != PULL_SECRET]
