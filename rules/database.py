"""Generated database credentials: names on the server, the credentials Secret, rotation and status.

Plain functions; the controller's edge runs the SQL and the API calls they describe.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import secrets
import string
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CREDENTIALS_SUFFIX = "-credentials"
FINALIZER = "smll.io/database"
KEYS = ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "DATABASE_URL")
PASSWORD_LENGTH = 40
PASSWORD_ALPHABET = string.ascii_letters + string.digits
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1

# Bookkeeping kept on the credentials Secret itself, so that it survives restarts and failover.
PREVIOUS_USER = "secrets.smll.io/previous-user"  # a login kept until dependents have rolled
ROTATED_AT = "secrets.smll.io/rotated-at"
ROTATION_SEEN = "secrets.smll.io/rotate-seen"  # the Database's rotate annotation value already acted on

DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def secret_name(database: str) -> str:
    return database + CREDENTIALS_SUFFIX


def generate_password() -> str:
    """From the OS CSPRNG: alphanumeric, so it needs no escaping anywhere and stays under bcrypt's 72 bytes."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


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
    salt_text, stored_text, server_text = (base64.b64encode(part).decode() for part in (salt, stored_key, server_key))
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


def parse_duration(text: str) -> datetime.timedelta:
    """``720h``, ``90m``, ``1h30m``: the rotateEvery format (also enforced by the CRD's schema)."""
    match = DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"rotateEvery {text!r} is not a duration like 720h, 90m or 1h30m")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    period = parse_duration(rotate_every)
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
