"""The registry's token endpoint: the grant by table, the JWT as Distribution verifies it, the HTTP edge."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from controller.registry.tokens import Signer, TokenConfig, TokenServer
from rules import registry as r
from rules import registry_token as t
from rules.certs import KeyPair, make_ca, make_leaf

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)


# ---- the grant --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "vpc", "granted"),
    [
        ("repository:main/app:pull,push", "main", ("pull", "push")),
        ("repository:main/app:pull", "main", ("pull",)),
        ("repository:main/team/app:push,pull", "main", ("pull", "push")),
        ("repository:main/app:pull,push,delete,*", "main", ("pull", "push")),
        ("repository:main/app:delete", "main", None),
        ("repository:main/app:*", "main", None),
        ("repository:other/app:pull,push", "main", None),
        ("repository:mainx/app:pull", "main", None),
        ("repository:main:pull", "main", None),
        ("repository:main/:pull", "main", None),
        ("repository:main/../other/app:pull", "main", None),
        ("repository:main/App:pull", "main", None),
        ("repository:app:pull", "main", None),
        ("repository(plugin):main/app:pull", "main", None),
        ("registry:catalog:*", "main", None),
        ("repository:main/app:pull", None, None),
        ("repository:/app:pull", "", None),
        ("repository:main/app:pull", "", None),
        ("repository:a.b/app:pull", "a.b", ("pull",)),
    ],
    ids=lambda value: repr(value),
)
def test_a_vpc_is_granted_pull_and_push_under_its_own_prefix_and_nothing_else(
    scope: str, vpc: str | None, granted: tuple[str, ...] | None
) -> None:
    parsed = t.parse_scope(scope)
    assert parsed is not None
    access = t.grant(parsed, vpc)
    assert (access.actions if access else None) == granted


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("repository:main/app:pull,push", t.Scope("repository", "main/app", ("pull", "push"))),
        ("repository:main/app:", t.Scope("repository", "main/app", ())),
        ("registry:catalog:*", t.Scope("registry", "catalog", ("*",))),
        ("repository:host:5000/app:pull", t.Scope("repository", "host:5000/app", ("pull",))),
        ("repository", None),
        (":main/app:pull", None),
        ("repository::pull", None),
    ],
)
def test_scopes_parse_as_distribution_writes_them(text: str, parsed: t.Scope | None) -> None:
    assert t.parse_scope(text) == parsed


def test_several_scopes_merge_per_repository_and_foreign_ones_drop_out() -> None:
    scopes = t.parse_scopes(["repository:main/a:pull repository:other/b:pull", "repository:main/a:push"])
    assert t.grants(scopes, "main") == [t.Access("repository", "main/a", ("pull", "push"))]


def test_no_more_than_max_scopes_are_considered() -> None:
    scopes = [t.Scope("repository", f"main/r{i}", ("pull",)) for i in range(t.MAX_SCOPES + 5)]
    assert len(t.grants(scopes, "main")) == t.MAX_SCOPES


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("Basic " + base64.b64encode(b"vpc-shop:pw:with:colons").decode(), ("vpc-shop", "pw:with:colons")),
        ("basic " + base64.b64encode(b"u:").decode(), ("u", "")),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b":pw").decode(), None),
        (None, None),
        ("", None),
    ],
)
def test_basic_credentials_parse_or_are_refused(header: str | None, parsed: tuple[str, str] | None) -> None:
    assert t.parse_basic(header) == parsed


SCOPES = [t.Scope("repository", "main/app", ("pull", "push"))]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, t.Granted("vpc-shop", [t.Access("repository", "main/app", ("pull", "push"))])),
        ({"scopes": []}, t.Granted("vpc-shop", [])),  # docker login: a token with no access
        ({"vpc": "other"}, t.Granted("vpc-shop", [])),  # asked for another VPC's repository: nothing of it
        ({"service": "another"}, t.Denied(400, "this endpoint issues tokens for service 'reg:5000', not 'another'")),
        ({"credentials": None}, t.Denied(401, "Basic credentials are required (REGISTRY_USER and REGISTRY_PASSWORD)")),
        ({"verified": False}, t.Denied(401, "unknown user or wrong password")),
        ({"known": False, "verified": False}, t.Denied(401, "unknown user or wrong password")),
        ({"vpc": None}, t.Denied(401, "unknown user or wrong password")),  # left the VPC: refused at once
    ],
    ids=["grant", "login", "foreign", "service", "anonymous", "wrong", "unknown", "left"],
)
def test_the_decision(kwargs: dict[str, Any], expected: t.Denied | t.Granted) -> None:
    arguments: dict[str, Any] = {
        "service": "reg:5000",
        "expected_service": "reg:5000",
        "credentials": ("vpc-shop", "pw"),
        "known": True,
        "verified": True,
        "vpc": "main",
        "scopes": SCOPES,
    }
    assert t.decide(**(arguments | kwargs)) == expected


def test_the_lifetime_is_bounded_at_five_minutes() -> None:
    assert t.lifetime_error(300) is None
    assert t.lifetime_error(5) is None
    assert t.lifetime_error(301) == "the token lifetime must be 5 to 300 seconds, got 301"
    assert t.lifetime_error(0) is not None


def test_failures_throttle_a_user_to_a_slow_drip_after_a_burst() -> None:
    failures = None
    for _ in range(t.FAILURE_BURST):
        assert not t.throttled(failures, 100.0)
        failures = t.failed(failures, 100.0)
    assert t.throttled(failures, 100.0)
    assert t.throttled(failures, 100.0 + 0.9 / t.FAILURES_PER_SECOND)
    later = 100.0 + 1 / t.FAILURES_PER_SECOND
    assert not t.throttled(failures, later)  # one more try per 1 / FAILURES_PER_SECOND seconds
    assert t.throttled(t.failed(failures, later), later)


# ---- the JWT, verified the way Distribution 2.8 verifies it -----------------------------------------------


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_like_distribution(
    token: str, roots: list[x509.Certificate], *, issuer: str, service: str, now: int
) -> dict[str, Any]:
    """The checks of Distribution's token access controller: issuer, audience, nbf <= now <= exp, the x5c leaf
    chains to a trusted root (and is valid now), and the ES256 signature by the leaf's key."""
    head_b64, body_b64, signature_b64 = token.split(".")
    head = json.loads(b64url_decode(head_b64))
    body = json.loads(b64url_decode(body_b64))
    assert body["iss"] == issuer
    assert body["aud"] == service
    assert body["nbf"] <= now <= body["exp"]
    assert head["alg"] == "ES256"
    leaf = x509.load_der_x509_certificate(base64.b64decode(head["x5c"][0]))
    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    assert leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc
    issuer_cert = next(root for root in roots if root.subject == leaf.issuer)
    leaf.verify_directly_issued_by(issuer_cert)
    raw = b64url_decode(signature_b64)
    assert len(raw) == 64
    signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public = leaf.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, f"{head_b64}.{body_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return dict(body)


def rsa_ca() -> tuple[bytes, bytes]:
    """A CA as Helm's genCA makes it: RSA 2048."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "helm-made")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_a_signed_token_verifies_through_its_x5c_chain_to_the_ca(kind: str) -> None:
    if kind == "ec":
        ca = make_ca("ec-ca", valid_for=datetime.timedelta(days=3650), now=NOW)
        cert_pem, key_pem = ca.cert_pem, ca.key_pem
    else:
        cert_pem, key_pem = rsa_ca()
    ca_cert, ca_key = t.load_ca(cert_pem, key_pem)
    signing = t.issue_signing_key(ca_cert, ca_key, now=NOW)
    now = int(NOW.timestamp())
    access = [t.Access("repository", "main/app", ("pull",))]
    body = t.claims(issuer="iss", service="reg", subject="vpc-a", access=access, now=now, lifetime=300, token_id="j")
    token = t.sign(signing.key, t.header(signing.chain), body)

    verified = verify_like_distribution(token, [ca_cert], issuer="iss", service="reg", now=now + 299)
    assert verified["access"] == [{"type": "repository", "name": "main/app", "actions": ["pull"]}]
    assert verified["exp"] - verified["iat"] == 300
    with pytest.raises(AssertionError):
        verify_like_distribution(token, [ca_cert], issuer="iss", service="reg", now=now + 301)
    other = make_ca("other", valid_for=datetime.timedelta(days=1), now=NOW)
    with pytest.raises((StopIteration, ValueError, Exception)):
        verify_like_distribution(token, [other.certificate], issuer="iss", service="reg", now=now)


def test_a_ca_that_cannot_sign_is_refused_with_its_reason() -> None:
    ca = make_ca("ca", valid_for=datetime.timedelta(days=1), now=NOW)
    leaf = make_leaf(ca, "not-a-ca", valid_for=datetime.timedelta(days=1), now=NOW)
    other = make_ca("other", valid_for=datetime.timedelta(days=1), now=NOW)
    with pytest.raises(ValueError, match="not a CA"):
        t.load_ca(leaf.cert_pem, leaf.key_pem)
    with pytest.raises(ValueError, match="does not belong"):
        t.load_ca(ca.cert_pem, other.key_pem)
    with pytest.raises(ValueError, match="not a PEM"):
        t.load_ca(b"nonsense", ca.key_pem)


def test_the_signing_key_never_outlives_its_ca_and_rotates() -> None:
    ca = make_ca("short", valid_for=datetime.timedelta(hours=1), now=NOW)
    cert, key = t.load_ca(ca.cert_pem, ca.key_pem)
    signing = t.issue_signing_key(cert, key, now=NOW)
    assert signing.not_after <= cert.not_valid_after_utc
    later = NOW + datetime.timedelta(seconds=t.SIGNING_KEY_ROTATE_SECONDS)
    long_ca = make_ca("long", valid_for=datetime.timedelta(days=10), now=NOW)
    fresh = t.issue_signing_key(*t.load_ca(long_ca.cert_pem, long_ca.key_pem), now=NOW)
    assert t.needs_new_key(None, now=NOW, ca_fingerprint_changed=False)
    assert not t.needs_new_key(fresh, now=NOW, ca_fingerprint_changed=False)
    assert t.needs_new_key(fresh, now=NOW, ca_fingerprint_changed=True)
    assert t.needs_new_key(fresh, now=later, ca_fingerprint_changed=False)
    assert t.needs_new_key(signing, now=NOW + datetime.timedelta(minutes=56), ca_fingerprint_changed=False)


# ---- the HTTP edge ----------------------------------------------------------------------------------------

PASSWORD = "p" * 40


def ca_secret(ca: KeyPair) -> dict[str, Any]:
    data = {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}
    return {
        "metadata": {"namespace": "smll-system", "name": "tokens-ca"},
        "type": "kubernetes.io/tls",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


CONFIG = TokenConfig(port=0, host="127.0.0.1", ca_secret=("smll-system", "tokens-ca"), service="reg:5000", lifetime=60)


@pytest.fixture
def server() -> TokenServer:
    signer = Signer(CONFIG)
    signer.replace([ca_secret(make_ca("tokens", valid_for=datetime.timedelta(days=30)))])
    server = TokenServer(CONFIG, signer)
    hashed = r.hash_password(PASSWORD, cost=4)
    server.users.entries = {"vpc-a": hashed, "vpc-gone": hashed, "ci": hashed}
    server.namespaces.replace(
        [
            ("a", "main"),
            ("gone", None),
        ]
    )
    server.synced = True
    return server


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_the_endpoint_grants_the_vpcs_own_repositories(server: TokenServer, aiohttp_client: Any) -> None:
    http = await aiohttp_client(server.app())
    query = [("service", "reg:5000"), ("scope", "repository:main/app:pull,push"), ("scope", "repository:x/y:pull")]
    answer = await http.get("/token", params=query, headers=basic("vpc-a", PASSWORD))
    assert answer.status == 200
    body = await answer.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 60
    claims = json.loads(b64url_decode(body["token"].split(".")[1]))
    assert claims["access"] == [{"type": "repository", "name": "main/app", "actions": ["pull", "push"]}]
    assert claims["sub"] == "vpc-a"
    assert claims["aud"] == "reg:5000"


async def test_the_oauth2_password_grant_answers_the_same(server: TokenServer, aiohttp_client: Any) -> None:
    http = await aiohttp_client(server.app())
    form = {
        "grant_type": "password",
        "username": "vpc-a",
        "password": PASSWORD,
        "service": "reg:5000",
        "scope": "repository:main/app:pull",
        "client_id": "containerd-client",
    }
    answer = await http.post("/token", data=form)
    assert answer.status == 200
    claims = json.loads(b64url_decode((await answer.json())["access_token"].split(".")[1]))
    assert claims["access"] == [{"type": "repository", "name": "main/app", "actions": ["pull"]}]
    refresh = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert refresh.status == 400


@pytest.mark.parametrize(
    ("user", "password", "status"),
    [
        ("vpc-a", "wrong", 401),
        ("vpc-gone", PASSWORD, 401),  # its namespace left the VPC: its entry may linger, it gets nothing
        ("ci", PASSWORD, 401),  # an operator's own htpasswd user is no VPC's
        ("vpc-nobody", PASSWORD, 401),
    ],
)
async def test_the_endpoint_refuses(
    server: TokenServer, aiohttp_client: Any, user: str, password: str, status: int
) -> None:
    http = await aiohttp_client(server.app())
    answer = await http.get("/token", params={"service": "reg:5000"}, headers=basic(user, password))
    assert answer.status == status
    assert PASSWORD not in await answer.text()


async def test_a_user_under_attack_is_throttled_but_its_known_password_still_works(
    server: TokenServer, aiohttp_client: Any
) -> None:
    http = await aiohttp_client(server.app())
    good = await http.get("/token", headers=basic("vpc-a", PASSWORD))
    assert good.status == 200
    statuses = [(await http.get("/token", headers=basic("vpc-a", f"wrong{i}"))).status for i in range(12)]
    assert statuses[: t.FAILURE_BURST] == [401] * t.FAILURE_BURST
    assert statuses[-1] == 429
    assert (await http.get("/token", headers=basic("vpc-a", PASSWORD))).status == 200  # remembered: no check


async def test_a_new_ca_makes_a_new_signing_key_and_a_missing_one_keeps_the_last_good(
    server: TokenServer, aiohttp_client: Any
) -> None:
    """A CA Secret deleted or broken by mistake does not stop pulls: the last good CA signs on (and the log says
    so); an endpoint that never had one answers 503 saying which Secret it needs."""
    http = await aiohttp_client(server.app())
    first = server.signer.key()
    server.signer.apply("MODIFIED", ca_secret(make_ca("next", valid_for=datetime.timedelta(days=30))))
    second = server.signer.key()
    assert second is not first
    assert second.chain[0].issuer.rfc4514_string() == "CN=next"
    assert server.signer.key() is second
    server.signer.apply("DELETED", ca_secret(make_ca("gone", valid_for=datetime.timedelta(days=1))))
    assert (await http.get("/token", headers=basic("vpc-a", PASSWORD))).status == 200
    assert server.signer.key() is second

    server.signer = Signer(CONFIG)
    server.signer.replace([])
    answer = await http.get("/token", headers=basic("vpc-a", PASSWORD))
    assert answer.status == 503
    assert "smll-system/tokens-ca" in (await answer.json())["errors"][0]["message"]


def test_a_ca_secret_that_cannot_sign_keeps_the_endpoint_from_signing() -> None:
    signer = Signer(CONFIG)
    leaf = make_leaf(make_ca("ca", valid_for=datetime.timedelta(days=1)), "leaf", valid_for=datetime.timedelta(days=1))
    signer.replace([ca_secret(leaf)])
    with pytest.raises(LookupError, match="not a CA"):
        signer.key()


async def test_the_endpoint_answers_503_until_its_caches_are_synced(server: TokenServer, aiohttp_client: Any) -> None:
    server.synced = False
    http = await aiohttp_client(server.app())
    assert (await http.get("/token", headers=basic("vpc-a", PASSWORD))).status == 503
    assert (await http.get("/healthz")).status == 503
