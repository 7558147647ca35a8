"""Generated database credentials: names on the server, the credentials Secret, rotation and status.

Plain functions; the controller's edge runs the SQL and the API calls they describe.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.names import CREDENTIALS_SUFFIX, MAX_NAME
from rules.secretdata import encode, generate_password
from rules.text import listed
from rules.times import format_time, parse_duration

KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "DATABASE_URL")
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1

# Bookkeeping is kept on the credentials Secret itself (rules.names: PREVIOUS_USER, ROTATED_AT, ROTATION_SEEN), so
# that it survives restarts and failover. Names only, never a password: the Secret's data holds exactly KEYS.

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


def _fit(name: str, suffix: str = "") -> str:
    """``name + suffix`` within PostgreSQL's 63 bytes: a long name is cut and made unique by a hash; the suffix
    (a login's generation) always survives."""
    if len(name) + len(suffix) <= MAX_IDENTIFIER:
        return name + suffix
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_IDENTIFIER - 9 - len(suffix)]}_{digest}{suffix}"


def owner_role(namespace: str, name: str) -> str:
    """The database and its NOLOGIN owner role share this name. Kubernetes names have no '_', so it is unique."""
    return _fit(f"{namespace}_{name}")


def login_role(namespace: str, name: str, generation: int) -> str:
    return _fit(f"{namespace}_{name}", f"_v{generation}")


def generation_of(login: str) -> int:
    match = re.search(r"_v(\d+)$", login)
    return int(match.group(1)) if match else 0


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
    """The login the credentials Secret should hold.

    ``new``: its password is in no credentials Secret yet, so it is kept in the rotation Secret (``pending``) before
    the server gets it. ``previous``: the login to keep until readers have rolled; ``rotation``: this target starts
    that wait (a rotation). ``rotation_seen``: the rotate request it answers, recorded on the Secret with it.
    """

    user: str
    password: str = field(repr=False)
    previous: str | None
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
    current: Mapping[str, str] | None,
    previous: str | None,
    pending: Pending | None,
    due: bool,
    request: str | None,
    new_password: Callable[[], str] = generate_password,
) -> Target:
    """From the credentials Secret's data (``current``, None when there is no Secret), the login it keeps for readers
    that have not rolled (``previous``) and a rotation Secret (``pending``): where the Secret should go next.

    A login on its way in is always finished, never replaced: the server may accept it already.
    """
    user = (current or {}).get("POSTGRES_USER") or None
    password = (current or {}).get("POSTGRES_PASSWORD") or None
    if pending is not None and pending.user and pending.password and pending.user != user:
        rotation = current is not None and user is not None
        return Target(
            pending.user,
            pending.password,
            user if rotation else previous,
            new=True,
            rotation=rotation,
            rotation_seen=pending.rotation_seen,
        )
    if user is None or password is None:
        # The first login, or the Secret emptied by hand. A rotate request made before the first password asks for
        # nothing more.
        seen = request if current is None else None
        return Target(user or login_role(namespace, name, 1), new_password(), previous, new=True, rotation_seen=seen)
    if due and previous is None:
        return Target(
            login_role(namespace, name, generation_of(user) + 1),
            new_password(),
            user,
            new=True,
            rotation=True,
            rotation_seen=request,
        )
    return Target(user, password, previous, new=False)


# ---- retiring the previous login ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A Deployment, StatefulSet or DaemonSet that reads the credentials Secret."""

    name: str  # kind/name, e.g. deployment/api
    rolled: bool  # rolled out, completely, to the Secret's current data
    opted_out: bool  # secrets.smll.io/auto-rollout: "false": never rolled by the controller
    uid: str = ""


@dataclass(frozen=True)
class Retirement:
    drop: bool
    why: str  # for the OldLoginDropped Event, when dropping
    waiting: tuple[str, ...]  # readers not yet rolled (opted out ones included)
    opted_out: tuple[Reader, ...]  # readers that will not be rolled by the controller
    drop_at: datetime.datetime


def retirement(
    readers: Sequence[Reader], *, rotated_at: datetime.datetime, grace: datetime.timedelta, now: datetime.datetime
) -> Retirement:
    """Whether to drop the previous login now: once every reader has rolled, or when the grace period has passed,
    rolled or not. A reader that opted out of rollouts is waited for too (its owner may roll it by hand) — until
    the grace period ends."""
    waiting = tuple(sorted(reader.name for reader in readers if not reader.rolled))
    opted_out = tuple(sorted((r for r in readers if not r.rolled and r.opted_out), key=lambda r: r.name))
    drop_at = rotated_at + grace
    if not waiting:
        return Retirement(True, "every service using the credentials has rolled", waiting, opted_out, drop_at)
    if now >= drop_at:
        return Retirement(True, "the grace period after the rotation has passed", waiting, opted_out, drop_at)
    return Retirement(False, "", waiting, opted_out, drop_at)


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
