"""Distribution's token authentication, decided: which repositories a VPC's registry user may reach, and the JWT
that says so.

A registry configured with ``auth: token`` sends a client without a token to the realm (the product's token
endpoint) with ``service`` and ``scope`` (``repository:<name>:pull,push``); the endpoint checks the client's Basic
credentials, and answers a short-lived JWT whose ``access`` claim lists what it grants. The registry verifies the
JWT's signature through the certificate chain in its ``x5c`` header up to a CA it trusts (``rootcertbundle``), then
its issuer, audience (the service) and lifetime, and allows exactly the actions in ``access``.

The rule: VPC ``X`` (the ``smll.io/vpc`` label of the user's namespace, now) may ``pull`` and ``push``
repositories whose name starts with ``X/``, and nothing else: no other repository, no ``delete`` or ``*``, no
``registry:catalog:*``. Everything here is pure; the edge (``controller.registry.tokens``) reads the caches,
runs bcrypt off the event loop, signs, and answers.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rules.certs import key_usage

# The longest a token lives. A namespace that leaves its VPC (or changes it) gets no new token at once; a token
# already issued stays valid until it expires, so this is the longest an old grant outlives the change.
MAX_TOKEN_SECONDS = 300
MIN_TOKEN_SECONDS = 5
DEFAULT_TOKEN_SECONDS = 60  # with the registry's minute of leeway: a namespace that left is out within two
# Leeway for a registry whose clock runs a little behind ours: the token is valid from this long before issue.
CLOCK_SKEW_SECONDS = 10
# The signing key of a replica: a new one every SIGNING_KEY_ROTATE_SECONDS, each certified for
# SIGNING_KEY_VALID_SECONDS, so a token signed just before a rotation outlives it by far.
SIGNING_KEY_ROTATE_SECONDS = 3600
SIGNING_KEY_VALID_SECONDS = 3 * 3600
DEFAULT_ISSUER = "smll-secrets"

GRANTABLE = ("pull", "push")  # in the order the access claim lists them
REPOSITORY = "repository"
# Distribution's repository name grammar: path components of lowercase alphanumerics separated by one '.', one or
# two '_', or any number of '-', joined by '/'; at most 255 characters.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
MAX_REPOSITORY_NAME = 255
MAX_SCOPES = 16  # a pull or push names one or two repositories (a cross-repository mount); more is not a client


# ---- requests -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """One requested scope: ``type:name:actions`` (``repository:main/app:pull,push``)."""

    type: str
    name: str
    actions: tuple[str, ...]


def parse_scope(text: str) -> Scope | None:
    """A scope as clients send it; None when it is not ``type:name:actions``. The name is what lies between the
    first and the last ``:`` (a name never holds one, but a malformed one must not shift the actions)."""
    kind, _, rest = text.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return Scope(kind, name, tuple(action for action in actions.split(",") if action))


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every ``scope`` parameter; one parameter may also hold several scopes separated by spaces."""
    found: list[Scope] = []
    for value in values:
        for text in value.split():
            scope = parse_scope(text)
            if scope is not None:
                found.append(scope)
    return found


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic …`` header; None when there is none or it is malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        return None
    return user, password


# ---- the grant ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One entry of a token's ``access`` claim."""

    type: str
    name: str
    actions: tuple[str, ...]

    def claim(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def valid_repository(name: str) -> bool:
    return len(name) <= MAX_REPOSITORY_NAME and REPOSITORY_NAME.fullmatch(name) is not None


def repository_prefix(vpc: str) -> str:
    """What the names of a VPC's repositories start with."""
    return f"{vpc}/"


def grant(scope: Scope, vpc: str | None) -> Access | None:
    """What of one requested scope a user of VPC ``vpc`` gets (None: nothing). Only ``repository`` scopes whose
    name is a valid repository name under ``<vpc>/``, and only ``pull`` and ``push`` of what was asked."""
    if vpc is None or scope.type != REPOSITORY or not valid_repository(scope.name):
        return None
    if not scope.name.startswith(repository_prefix(vpc)):
        return None  # an empty or invalid VPC value starts no valid name: it owns nothing
    actions = tuple(action for action in GRANTABLE if action in scope.actions)
    return Access(REPOSITORY, scope.name, actions) if actions else None


def grants(scopes: Sequence[Scope], vpc: str | None) -> list[Access]:
    """The access claim for these requested scopes: one entry per repository, its actions merged."""
    merged: dict[str, set[str]] = {}
    for scope in scopes[:MAX_SCOPES]:
        access = grant(scope, vpc)
        if access is not None:
            merged.setdefault(access.name, set()).update(access.actions)
    return [
        Access(REPOSITORY, name, tuple(action for action in GRANTABLE if action in actions))
        for name, actions in merged.items()
    ]


# ---- who asks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Denied:
    """No token: ``status`` is the HTTP answer, ``reason`` what the client (and the log) are told."""

    status: int
    reason: str


@dataclass(frozen=True)
class Granted:
    subject: str
    access: list[Access] = field(default_factory=list)


def decide(
    *,
    service: str | None,
    expected_service: str,
    credentials: tuple[str, str] | None,
    known: bool,
    verified: bool,
    vpc: str | None,
    scopes: Sequence[Scope],
) -> Denied | Granted:
    """The answer to one token request. ``known``: the user has an entry the endpoint checks against; ``verified``:
    the password matches it; ``vpc``: the label of the user's namespace now, None when it is not a VPC.

    A request with good credentials always gets a token (``docker login`` asks for one with no scope at all); what
    it may do is in its access list, so asking for another VPC's repository gets a token that the registry refuses
    for that repository."""
    if service is not None and service != expected_service:
        return Denied(400, f"this endpoint issues tokens for service {expected_service!r}, not {service!r}")
    if credentials is None:
        return Denied(401, "Basic credentials are required (REGISTRY_USER and REGISTRY_PASSWORD)")
    user = credentials[0]
    if not known or not verified or vpc is None:
        return Denied(401, "unknown user or wrong password")
    return Granted(user, grants(scopes, vpc))


# ---- the token ----------------------------------------------------------------------------------------------


def claims(
    *,
    issuer: str,
    service: str,
    subject: str,
    access: Sequence[Access],
    now: int,
    lifetime: int,
    token_id: str,
) -> dict[str, Any]:
    """The claim set Distribution reads: ``aud`` is one string (the service), times in whole seconds."""
    return {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + lifetime,
        "nbf": now - CLOCK_SKEW_SECONDS,
        "iat": now,
        "jti": token_id,
        "access": [entry.claim() for entry in access],
    }


def header(chain: Sequence[x509.Certificate]) -> dict[str, Any]:
    """ES256, with the signing certificate (and any intermediates) in ``x5c``: standard base64 DER, leaf first."""
    return {
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode() for cert in chain],
    }


def sign(key: ec.EllipticCurvePrivateKey, head: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """A compact JWS, made by PyJWT (ES256's signature as JOSE wants it: r and s, 32 bytes each)."""
    fields = {name: value for name, value in head.items() if name != "alg"}
    return jwt.encode(dict(body), key, algorithm=str(head["alg"]), headers=fields)


def response(token: str, *, lifetime: int, now: int) -> dict[str, Any]:
    """The endpoint's answer: ``token`` for Docker's clients, ``access_token`` for OAuth2 ones, both the same."""
    issued = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"token": token, "access_token": token, "expires_in": lifetime, "issued_at": issued}


def lifetime_error(seconds: int) -> str | None:
    if MIN_TOKEN_SECONDS <= seconds <= MAX_TOKEN_SECONDS:
        return None
    return f"the token lifetime must be {MIN_TOKEN_SECONDS} to {MAX_TOKEN_SECONDS} seconds, got {seconds}"


# ---- the signing key ----------------------------------------------------------------------------------------

CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class SigningKey:
    """A replica's signing key and its certificate, issued by the CA the registry trusts."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...]
    issued: datetime.datetime

    @property
    def not_after(self) -> datetime.datetime:
        return self.chain[0].not_valid_after_utc


def load_ca(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, CaKey]:
    """The CA of a ``kubernetes.io/tls`` Secret (what Helm's ``genCA`` makes: RSA; or an EC one), with a clear error
    when it cannot issue the signing certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as error:
        raise ValueError(f"the token signing CA is not a PEM certificate and private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the token signing CA's key must be an RSA or EC key")
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise ValueError("the token signing CA's key does not belong to its certificate")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError("the token signing certificate is not a CA (basicConstraints CA:TRUE)")
    return cert, key


def issue_signing_key(
    ca_cert: x509.Certificate,
    ca_key: CaKey,
    *,
    now: datetime.datetime,
    valid_seconds: int = SIGNING_KEY_VALID_SECONDS,
    name: str = "smll-secrets registry token signer",
) -> SigningKey:
    """A new P-256 key and its certificate from the CA, valid from a minute before ``now`` (never before the CA
    itself) until ``valid_seconds`` after it (never after the CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = max(now - datetime.timedelta(minutes=1), ca_cert.not_valid_before_utc)
    end = min(now + datetime.timedelta(seconds=valid_seconds), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return SigningKey(key, (cert,), now)


def needs_new_key(
    current: SigningKey | None,
    *,
    now: datetime.datetime,
    ca_fingerprint_changed: bool,
    rotate_seconds: int = SIGNING_KEY_ROTATE_SECONDS,
    lifetime: int = MAX_TOKEN_SECONDS,
) -> bool:
    """A new signing key is due at start, every ``rotate_seconds``, when the CA changed, and whenever the current
    certificate would expire before a token signed now."""
    if current is None or ca_fingerprint_changed:
        return True
    if now - current.issued >= datetime.timedelta(seconds=rotate_seconds):
        return True
    return current.not_after <= now + datetime.timedelta(seconds=lifetime + CLOCK_SKEW_SECONDS)


# ---- brute force --------------------------------------------------------------------------------------------


@dataclass
class Failures:
    """Failed logins counted against one key, as a leaky bucket: each failure adds one, ``per_second`` drain away;
    at ``burst`` the key is refused without a password check until one more failure fits again. Good passwords are
    never counted."""

    level: float = 0.0
    at: float = 0.0

    def drained(self, now: float, per_second: float) -> float:
        return max(0.0, self.level - max(0.0, now - self.at) * per_second)


FAILURE_BURST = 10  # a (source, user): 10 guesses, then one per 2 s
FAILURES_PER_SECOND = 0.5
SOURCE_FAILURE_BURST = 30  # a source, whatever users it guesses: 30, then one a second
SOURCE_FAILURES_PER_SECOND = 1.0
SOURCE_CLEAN_CHECKS = 4  # checks one source may have in the clean lane at once (a CI pulling in parallel)
MAX_TRACKED = 10_000


def throttled(
    failures: Failures | None, now: float, *, burst: float = FAILURE_BURST, per_second: float = FAILURES_PER_SECOND
) -> bool:
    """Whether one more failure would overflow the bucket: refused without a check."""
    return failures is not None and failures.drained(now, per_second) + 1 > burst


def failed(failures: Failures | None, now: float, *, per_second: float = FAILURES_PER_SECOND) -> Failures:
    level = (failures.drained(now, per_second) if failures is not None else 0.0) + 1.0
    return Failures(level, now)


Lane = Literal["clean", "failing"]


@dataclass
class Throttle:
    """Brute-force bounds by client, never by user alone: the failures of each (source, user) and of each source
    (the client's address), as leaky buckets. A source over either bucket is refused without a check; everybody
    else is checked, so guesses against a user from one address never lock its owner out from another. Checks
    run in two lanes: a source with no recent failure and fewer than ``SOURCE_CLEAN_CHECKS`` checks under way is
    "clean"; any other is "failing", and the edge gives that lane at most a share of the bcrypt threads and its
    own bound on waiting, so a flood of wrong guesses cannot make a rightful login wait into a refusal. Memory is
    bounded by ``MAX_TRACKED`` keys a map: drained buckets go first, then everything (a reset, never a lockout)."""

    pairs: dict[tuple[str, str], Failures] = field(default_factory=dict)
    sources: dict[str, Failures] = field(default_factory=dict)

    def refused(self, source: str, user: str, now: float) -> bool:
        return throttled(self.pairs.get((source, user)), now) or throttled(
            self.sources.get(source), now, burst=SOURCE_FAILURE_BURST, per_second=SOURCE_FAILURES_PER_SECOND
        )

    def lane(self, source: str, under_way: int, now: float) -> Lane:
        """``under_way``: the checks of this source admitted and not yet done."""
        recent = self.sources.get(source)
        if under_way >= SOURCE_CLEAN_CHECKS or (
            recent is not None and recent.drained(now, SOURCE_FAILURES_PER_SECOND) > 0
        ):
            return "failing"
        return "clean"

    def failed(self, source: str, user: str, now: float) -> None:
        _bounded(self.pairs, now, FAILURES_PER_SECOND)
        _bounded(self.sources, now, SOURCE_FAILURES_PER_SECOND)
        self.pairs[source, user] = failed(self.pairs.get((source, user)), now)
        self.sources[source] = failed(self.sources.get(source), now, per_second=SOURCE_FAILURES_PER_SECOND)

    def succeeded(self, source: str, user: str) -> None:
        """A right password clears its (source, user) bucket; the source's own keeps what else it guessed."""
        self.pairs.pop((source, user), None)


def _bounded(buckets: dict[Any, Failures], now: float, per_second: float) -> None:
    if len(buckets) < MAX_TRACKED:
        return
    for key in [key for key, bucket in buckets.items() if bucket.drained(now, per_second) == 0]:
        del buckets[key]
    if len(buckets) >= MAX_TRACKED:
        buckets.clear()
