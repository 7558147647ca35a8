"""Generated database credentials: names on the server, the credentials Secret, rotation and status.

Plain functions; the controller's edge runs the SQL and the API calls they describe.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.names import CREDENTIALS_SUFFIX, MADE_FOR, MAX_NAME

# The rule that retires the previous login is shared with the registry (its previous password): rules.retirement.
from rules.retirement import Reader as Reader  # the retirement rule is shared with the registry
from rules.retirement import Retirement as Retirement
from rules.retirement import reader_of as reader_of
from rules.retirement import retirement as retirement
from rules.secretdata import encode, generate_password
from rules.text import listed
from rules.times import format_time, parse_duration

KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "DATABASE_URL")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1

# Who a Database is comes from the object (namespace, name, uid), never from its Secret, which its tenant may write:
# the logins are derived names, and which of them exist is read on the server, where each role the controller makes
# carries a marker (COMMENT ON ROLE) naming the Database. The credentials Secret gives only its password, and only to
# this Database's own login. The bookkeeping on it (rules.names: ROTATED_AT, ROTATION_SEEN; PREVIOUS_USER, shown but
# never read) steers only this Database's own rotations. Names only, never a password: its data holds exactly KEYS.

# A login and password on their way in (first provisioning or rotation) wait in a Secret of the controller's own
# namespace until the credentials Secret has them: a password is there before the server accepts it.
ROTATION_PREFIX = "database-rotation."
ROTATION_USER_KEY = "user"
ROTATION_PASSWORD_KEY = "password"
ROTATION_COMPONENT = "database-rotation"


def secret_name(database: str) -> str:
    return database + CREDENTIALS_SUFFIX


def rotation_secret_name(namespace: str, name: str) -> str:
    """The rotation Secret of one Database. A namespace has no '.', so ``<namespace>.<name>`` is unambiguous; a name
    too long for that is replaced by a digest of both."""
    full = f"{ROTATION_PREFIX}{namespace}.{name}"
    if len(full) <= MAX_NAME:
        return full
    return ROTATION_PREFIX + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:40]


DIGEST_CHARS = 26  # base32 of SHA-256: 130 bits, so that no one can choose a name whose cut form is another's


def _fit(base: str, suffix: str = "") -> str:
    """``base + suffix`` within PostgreSQL's 63 bytes. A name that fits is kept as it is (so roles made before stay
    theirs); a longer one is cut and gets ``__`` and a 130-bit digest of the whole of ``base``. No name that fits has
    ``__`` (Kubernetes names have no ``_``, and one joins namespace and name), so a cut name is never a name that
    fits; the suffix (a login's generation) always survives."""
    if len(base) + len(suffix) <= MAX_IDENTIFIER:
        return base + suffix
    digest = base64.b32encode(hashlib.sha256(base.encode()).digest()).decode().lower()[:DIGEST_CHARS]
    return f"{base[: MAX_IDENTIFIER - 2 - DIGEST_CHARS - len(suffix)]}__{digest}{suffix}"


def owner_role(namespace: str, name: str) -> str:
    """The database and its NOLOGIN owner role share this name. Kubernetes names have no '_', so it is unique."""
    return _fit(f"{namespace}_{name}")


def login_role(namespace: str, name: str, generation: int) -> str:
    return _fit(f"{namespace}_{name}", f"_v{generation}")


def legacy_owner_role(namespace: str, name: str) -> str:
    """The owner role's name before markers (``name[:54]_<hash8>`` when too long); equal to owner_role when it fits."""
    full = f"{namespace}_{name}"
    if len(full) <= MAX_IDENTIFIER:
        return full
    return f"{full[: MAX_IDENTIFIER - 9]}_{hashlib.sha256(full.encode()).hexdigest()[:8]}"


def generation_of(login: str) -> int:
    match = re.search(r"_v(\d+)$", login)
    return int(match.group(1)) if match else 0


def is_login_of(role: str, namespace: str, name: str) -> bool:
    """Whether ``role`` is the name of one of this Database's login generations."""
    generation = generation_of(role)
    return generation > 0 and role == login_role(namespace, name, generation)


# ---- what the controller made for which Database, on the server and in the cluster ----------------------------

MARKER_PREFIX = "smll-secrets: made for Database "


def marker(namespace: str, name: str, uid: str) -> str:
    """The comment (COMMENT ON ROLE) on every role the controller makes for a Database. Only a role with
    CREATEROLE can set one, which no login the controller makes has, so a tenant cannot forge it."""
    return f"{MARKER_PREFIX}{namespace}/{name} uid {uid}"


def secret_proof(key: bytes, namespace: str, name: str, uid: str) -> str:
    """The annotation value that says the controller made the credentials Secret for this Database (its uid): a
    keyed digest, so a tenant cannot make one for a Secret of its own; only copy one of the same Database's."""
    message = f"database-credentials\0{namespace}\0{name}\0{uid}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:40]


def secret_made_for(
    secret: Mapping[str, Any] | None, *, proof: str, uid: str, recorded_uid: str = "", legacy: bool = False
) -> bool:
    """Whether the controller made this credentials Secret for this Database: it is the Secret whose uid the
    Database's status records (``recorded_uid``: the status is not the tenant's to write), or it carries the keyed
    proof (a Secret the controller created but had not recorded yet); or, for a Database provisioned before either
    (``legacy``: its status names the Secret and no login), it is controlled by this Database's uid — which a tenant
    could forge, so that is trusted only for what was there before."""
    metadata = (secret or {}).get("metadata") or {}
    if recorded_uid and metadata.get("uid") == recorded_uid:
        return True
    found = str((metadata.get("annotations") or {}).get(MADE_FOR, ""))
    if found and hmac.compare_digest(found, proof):
        return True
    owners = [o for o in metadata.get("ownerReferences") or [] if o.get("controller")]
    return legacy and not found and [(o.get("kind"), o.get("uid")) for o in owners] == [("Database", uid)]


@dataclass(frozen=True)
class Role:
    """A role on the server, as the controller reads it right before it decides."""

    name: str
    login: bool
    privileged: bool  # SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS
    comment: str | None
    member_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerState:
    """This Database's names on the server: its owner role (None: none), the owner of the database of that name
    (None: no database), and the roles that are members of the owner role."""

    owner: Role | None
    database_owner: str | None
    members: tuple[Role, ...] = ()


@dataclass(frozen=True)
class Claim:
    """What is this Database's on the server. ``conflict``: a reason to touch nothing (the message names it).
    ``create``: no owner role yet; ``mark``: roles made before markers, proven this Database's, to mark now.
    ``logins``: its marked login generations, oldest first."""

    conflict: str = ""
    create: bool = False
    mark: tuple[str, ...] = ()
    logins: tuple[str, ...] = ()

    @property
    def current(self) -> str | None:
        return self.logins[-1] if self.logins else None


def _sound_login(role: Role, namespace: str, name: str, owner: str) -> bool:
    return role.login and not role.privileged and is_login_of(role.name, namespace, name) and owner in role.member_of


def claim(
    state: ServerState,
    *,
    namespace: str,
    name: str,
    uid: str,
    server: str,
    admin: str,
    secret_made_before: bool,
    legacy_role: bool = False,
) -> Claim:
    """Which roles on the server are this Database's: those marked for it (namespace, name and uid). A role of its
    name that is not marked for it is never touched — unless it was made by this controller before markers existed,
    which needs all of: the credentials Secret proven made for this Database (``secret_made_before``), an
    unprivileged NOLOGIN owner role in no other role, owning the database of its name, whose every member is an
    unprivileged login of this Database's generations, unmarked, in no other role. ``legacy_role``: a role of the
    name a long name was cut to before (``legacy_owner_role``) exists — the Database's data may be there."""
    owner = owner_role(namespace, name)
    mine = marker(namespace, name, uid)
    where = f"on server {server!r}"
    if state.owner is None:
        if legacy_role:
            legacy = legacy_owner_role(namespace, name)
            return Claim(
                conflict=f"role {legacy} {where} is this Database's name as earlier versions cut it; nothing "
                f"is made until an admin renames its database and it to {owner}, and its login to "
                f"{login_role(namespace, name, 1)} (docs/databases.md, upgrading)"
            )
        if state.database_owner is not None:
            return Claim(conflict=f"database {owner} exists {where} and was not made for this Database")
        return Claim(create=True)
    role = state.owner
    if role.name == admin or role.login or role.privileged:
        return Claim(conflict=f"role {owner} {where} is not an owner role this controller makes; it is left alone")
    if role.comment == mine:
        if state.database_owner not in (None, owner):
            return Claim(conflict=f"database {owner} {where} is owned by another role; it is left alone")
        logins = [
            m
            for m in state.members
            if m.comment == mine and m.name != admin and _sound_login(m, namespace, name, owner)
        ]
        return Claim(logins=tuple(sorted((m.name for m in logins), key=generation_of)))
    if role.comment is not None and role.comment.startswith(f"{MARKER_PREFIX}{namespace}/{name} "):
        return Claim(
            conflict=f"role {owner} {where} was made for an earlier Database {namespace}/{name} ({role.comment}); "
            f"an admin who means to hand it to this one (uid {uid}) sets that comment on it and its logins "
            f"(COMMENT ON ROLE)"
        )
    if role.comment is not None and role.comment.startswith(MARKER_PREFIX):
        return Claim(conflict=f"role {owner} {where} was made for another Database; it is left alone")
    adoptable = (
        secret_made_before
        and role.comment is None
        and not role.member_of
        and state.database_owner == owner
        and all(
            m.comment is None
            and m.name != admin
            and _sound_login(m, namespace, name, owner)
            and m.member_of == (owner,)
            for m in state.members
        )
    )
    if not adoptable:
        return Claim(
            conflict=f"role {owner} exists {where} and was not made for this Database; it is left alone "
            f"(rename or drop it, or give the Database another name)"
        )
    adopted = tuple(sorted((m.name for m in state.members), key=generation_of))
    return Claim(mark=(owner, *adopted), logins=adopted)


def scram_verifier(password: str, *, salt: bytes, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for a password (RFC 5802/7677, as ``\\password`` computes it).

    Sending the verifier instead of the password keeps the password out of the server's logs and
    pg_stat_activity, even when a statement fails and is logged.
    """
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    salt_text, stored_text, server_text = (encode(part) for part in (salt, stored_key, server_key))
    return f"SCRAM-SHA-256${iterations}:{salt_text}${stored_text}:{server_text}"


def quote_ident(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def database_url(*, user: str, password: str, host: str, port: int, database: str, sslmode: str) -> str:
    def quote(part: str) -> str:
        return urllib.parse.quote(part, safe="")

    return f"postgresql://{quote(user)}:{quote(password)}@{host}:{port}/{quote(database)}?sslmode={sslmode}"


@dataclass(frozen=True)
class Server:
    name: str
    host: str
    port: int
    sslmode: str
    admin_secret: str  # in the controller's namespace; keys "username" and "password"
    # In the controller's namespace: a Secret whose key ca.crt holds the CA bundle that verify-ca and verify-full
    # check the server's certificate against ("" for the system's CAs); ca_pem is what it held when last read.
    ca_secret: str = ""
    ca_pem: bytes = field(default=b"", repr=False, compare=False)


def credentials(*, user: str, password: str, server: Server, database: str) -> dict[str, str]:
    """Exactly the product page's six keys."""
    return {
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_HOST": server.host,
        "POSTGRES_PORT": str(server.port),
        "POSTGRES_DB": database,
        "DATABASE_URL": database_url(
            user=user, password=password, host=server.host, port=server.port, database=database, sslmode=server.sslmode
        ),
    }


def rotation_period(rotate_every: str) -> datetime.timedelta:
    """``720h``, ``90m``, ``1h30m``: the rotateEvery format (also enforced by the CRD's schema)."""
    try:
        return parse_duration(rotate_every, units="hms")
    except ValueError as error:
        raise ValueError(f"rotateEvery {error}") from None


@dataclass(frozen=True)
class Rotation:
    due: bool
    reason: str
    next_check: datetime.timedelta | None  # when a schedule will next be due


def rotation(
    *,
    rotate_every: str | None,
    rotate_request: str | None,
    seen_request: str | None,
    rotated_at: datetime.datetime | None,
    now: datetime.datetime,
) -> Rotation:
    """Whether to rotate now: on demand (a new rotate annotation value) or on schedule."""
    if rotate_request and rotate_request != seen_request:
        return Rotation(True, "requested", None)
    if not rotate_every:
        return Rotation(False, "", None)
    period = rotation_period(rotate_every)
    if period <= datetime.timedelta(0):
        return Rotation(False, "", None)
    due_at = (rotated_at or now) + period
    if due_at <= now:
        return Rotation(True, "scheduled", period)
    return Rotation(False, "", due_at - now)


def ready_condition(
    status: str,
    reason: str,
    message: str,
    *,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: datetime.datetime,
) -> dict[str, Any]:
    """A Ready condition; its lastTransitionTime moves only when its status does."""
    kept = previous.get("lastTransitionTime") if previous is not None and previous.get("status") == status else None
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": kept or format_time(now),
    }


# ---- which login and password the Secret should hold ----------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """What a rotation Secret holds: a login and its password on their way in, and the rotate request answered."""

    user: str
    password: str = field(repr=False)
    rotation_seen: str | None = None


@dataclass(frozen=True)
class Target:
    """The login the credentials Secret should hold: always one of this Database's generations, never a name read
    from the Secret.

    ``new``: its password is in no credentials Secret yet, so it is kept in the rotation Secret (``pending``) before
    the server gets it. ``rotation``: this target starts the wait for readers to roll (a new generation while an
    older login is kept). ``rotation_seen``: the rotate request it answers, recorded on the Secret with it.
    """

    user: str
    password: str = field(repr=False)
    new: bool
    rotation: bool = False
    rotation_seen: str | None = None

    @property
    def pending(self) -> Pending:
        return Pending(self.user, self.password, self.rotation_seen)


def target(
    *,
    namespace: str,
    name: str,
    logins: Sequence[str],
    password: str | None,
    pending: Pending | None,
    due: bool,
    request: str | None,
    secret_exists: bool = True,
    new_password: Callable[[], str] = generate_password,
) -> Target:
    """Where the credentials go next, from this Database's marked logins on the server (``logins``, oldest first:
    the last is the current one, the others are kept for readers that have not rolled), the password in its
    credentials Secret (``password``: the only thing read from it) and a rotation Secret (``pending``).

    A login on its way in is always finished, never replaced: the server may accept it already. A rotation waits
    until no older login is kept. A Secret that lost its password gets a rotation (the readers still running keep
    the old login until they roll), or, while an older login is still kept, a new password on the current one.
    """
    current = logins[-1] if logins else None
    generation = generation_of(current) if current else 0
    if (
        pending is not None
        and pending.password
        and is_login_of(pending.user, namespace, name)
        and generation_of(pending.user) >= max(generation, 1)
    ):
        if password == pending.password and pending.user == current:
            return Target(pending.user, pending.password, new=False)  # committed: only the rotation Secret is left
        older = any(generation_of(login) < generation_of(pending.user) for login in logins)
        return Target(pending.user, pending.password, new=True, rotation=older, rotation_seen=pending.rotation_seen)
    if current is None:
        # The first login. A rotate request made before the first password asks for nothing more.
        seen = request if not secret_exists else None
        return Target(login_role(namespace, name, 1), password or new_password(), new=True, rotation_seen=seen)
    kept = len(logins) > 1
    if (due or not password) and not kept:
        return Target(
            login_role(namespace, name, generation + 1),
            new_password(),
            new=True,
            rotation=True,
            rotation_seen=request if due else None,
        )
    if not password:
        return Target(current, new_password(), new=True)
    return Target(current, password, new=False)


DERIVED_KEYS = ("POSTGRES_USER", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "DATABASE_URL")


def edited_keys(found: Mapping[str, str], desired: Mapping[str, str]) -> tuple[str, ...]:
    """The keys of a credentials Secret that differ from what the controller derives (added ones included): names
    only, for the Event that says they were put back."""
    return tuple(sorted(key for key in set(found) | set(desired) if found.get(key) != desired.get(key)))


# ---- retiring the previous login ----------------------------------------------------------------------------


def retirement_message(previous: str, plan: Retirement) -> str:
    """For the Ready condition while the previous login is kept: who is waited for, and who will not roll."""
    message = (
        f"rotation: {previous} kept until {listed(plan.waiting)} have rolled, at the latest {format_time(plan.drop_at)}"
    )
    if plan.opted_out:
        message += (
            f'; not rolled automatically (auto-rollout "false"), they lose {previous} then unless restarted: '
            f"{listed([reader.name for reader in plan.opted_out])}"
        )
    return message


def opted_out_warning(secret: str, previous: str, drop_at: datetime.datetime) -> str:
    """The Warning Event on a reader that opted out of rollouts, before its old login goes."""
    return (
        f'secret {secret!r} was rotated and this service has secrets.smll.io/auto-rollout "false", so it is not '
        f"rolled: its running pods use login {previous}, which is dropped at {format_time(drop_at)}; restart it before "
        f"then (kubectl rollout restart)"
    )
