"""The registry's token endpoint (Distribution's ``auth: token`` realm), served by every controller replica.

``GET /token?service=…&scope=repository:X/app:pull,push`` with Basic credentials (what docker, buildah and the
kubelet's containerd send), or ``POST /token`` with an OAuth2 password grant (what containerd tries first). The
user is checked against the htpasswd Secret the controller keeps (bcrypt, as a basic-auth registry would check
it), the namespace's current ``smll.io/vpc`` label read from an informer, and the grant decided by
``rules.registry_token``. Every replica serves it, the leader or not: the informers here are its own.

Cost is bounded: a password that verified once is remembered (by a digest, never itself) for its hash, so a
kubelet pulling all day costs one bcrypt check per process; other checks run two at a time in threads, in two lanes with
their own bounds (``MAX_WAITING``): sources with recent failures get one thread at most, so they never make anybody
else wait into a 429. Guessing is throttled per client address, per (address, user) and per address overall
(``rules.registry_token.Throttle``), never per user alone: an attacker cannot lock the VPC's own clients out.

After a rotation the user's previous entries (key ``previous`` of the same Secret) are accepted too, until the
controller retires them (its readers rolled) and never past their grace period, whatever the controller does.

The signing CA is a ``kubernetes.io/tls`` Secret read through the API (watched by name, so a new CA is used at once),
never a mounted file: the process needs no volume of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from kubernetes_asyncio import client

from controller.frame.store import JsonObject, Store, name_of
from controller.registry.caches import htpasswd_entries, htpasswd_previous
from controller.registry.config import parse_secret_ref
from kubeio.informer import Informer
from rules import registry as rules
from rules import registry_token as tokens
from rules.names import VPC_LABEL
from rules.secretdata import decode_data
from rules.workloads import is_terminating, labels_of, resource_path

log = logging.getLogger(__name__)

CA_CERT_KEY = "tls.crt"
CA_KEY_KEY = "tls.key"
BCRYPT_THREADS = 2
FAILING_THREADS = 1  # of BCRYPT_THREADS, what sources with recent failures may use at once
MAX_WAITING: dict[tokens.Lane, int] = {"clean": 32, "failing": 8}  # checks admitted (waiting or running) a lane
MAX_REMEMBERED = 10_000
MAX_BODY_BYTES = 16 * 1024


@dataclass(frozen=True)
class TokenConfig:
    port: int
    host: str
    ca_secret: tuple[str, str]  # (namespace, name) of a kubernetes.io/tls Secret: tls.crt, tls.key
    service: str
    issuer: str = tokens.DEFAULT_ISSUER
    lifetime: int = tokens.DEFAULT_TOKEN_SECONDS
    rotate_seconds: int = tokens.SIGNING_KEY_ROTATE_SECONDS
    previous_grace_seconds: float = rules.DEFAULT_GRACE.total_seconds()  # the controller's --rotation-grace-seconds


# ---- what the endpoint knows ------------------------------------------------------------------------------


def _vpc_entry(obj: JsonObject) -> tuple[str, str | None]:
    """namespace → its VPC (the label's value) now; None when it is not one or is being deleted."""
    labels = labels_of(obj)
    member = VPC_LABEL in labels and not is_terminating(obj)
    return name_of(obj)[1], labels.get(VPC_LABEL) if member else None


class Users:
    """The htpasswd Secret's entries, and the previous entries rotations replaced, as its informer last saw them."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.previous: dict[str, tuple[rules.PreviousEntry, ...]] = {}

    def _set(self, secret: JsonObject | None) -> None:
        self.entries, self.previous = htpasswd_entries(secret), htpasswd_previous(secret)

    def replace(self, objects: list[JsonObject]) -> None:
        self._set(objects[0] if objects else None)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self._set(None if event_type == "DELETED" else obj)

    def hashes(self, user: str, grace: datetime.timedelta) -> tuple[str, ...]:
        """What a password of ``user`` may match now: its entry first, then its previous ones still in grace."""
        now = datetime.datetime.now(datetime.UTC)
        return rules.accepted_hashes(self.entries.get(user), self.previous.get(user, ()), now=now, grace=grace)


class Known:
    """Passwords that verified, remembered as (user, hash, digest): a hash that changes forgets them."""

    def __init__(self) -> None:
        self.good: set[tuple[str, str, bytes]] = set()

    @staticmethod
    def key(user: str, hashed: str, password: str) -> tuple[str, str, bytes]:
        return user, hashed, hashlib.sha256(password.encode()).digest()

    def __contains__(self, key: tuple[str, str, bytes]) -> bool:
        return key in self.good

    def add(self, key: tuple[str, str, bytes]) -> None:
        if len(self.good) >= MAX_REMEMBERED:
            self.good.clear()
        self.good.add(key)


# ---- the signing key --------------------------------------------------------------------------------------


class Signer:
    """The CA from its Secret (kept current by an informer: a new CA is used from its watch event on), and this
    replica's signing key under it, renewed as ``rules.registry_token.needs_new_key`` says. A Secret deleted or
    broken after a good one keeps the last good CA (logged): a mistake does not stop every pull."""

    def __init__(self, config: TokenConfig) -> None:
        self.config = config
        self.ca: tuple[x509.Certificate, tokens.CaKey] | None = None
        self.ca_changed = False
        self.problem: str | None = "the signing CA Secret has not been read yet"
        self.current: tokens.SigningKey | None = None

    def replace(self, objects: list[JsonObject]) -> None:
        self._set(objects[0] if objects else None)

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        self._set(None if event_type == "DELETED" else obj)

    def _set(self, secret: JsonObject | None) -> None:
        namespace, name = self.config.ca_secret
        data = decode_data((secret or {}).get("data") or {})
        if secret is None or CA_CERT_KEY not in data or CA_KEY_KEY not in data:
            self.problem = f"Secret {namespace}/{name} with {CA_CERT_KEY} and {CA_KEY_KEY} is missing"
        else:
            try:
                ca = tokens.load_ca(data[CA_CERT_KEY].encode(), data[CA_KEY_KEY].encode())
            except ValueError as error:
                self.problem = f"Secret {namespace}/{name}: {error}"
            else:
                changed = self.ca is None or ca[0] != self.ca[0]
                self.ca, self.problem = ca, None
                self.ca_changed = self.ca_changed or changed
                return
        log.error("registry tokens: no token can be signed: %s", self.problem)

    def key(self) -> tokens.SigningKey:
        if self.ca is None:
            raise LookupError(self.problem)
        now = datetime.datetime.now(datetime.UTC)
        if tokens.needs_new_key(
            self.current,
            now=now,
            ca_fingerprint_changed=self.ca_changed,
            rotate_seconds=self.config.rotate_seconds,
            lifetime=self.config.lifetime,
        ):
            self.current = tokens.issue_signing_key(*self.ca, now=now)
            self.ca_changed = False
            log.info("registry tokens: a new signing key, certified until %s", self.current.not_after.isoformat())
        assert self.current is not None
        return self.current

    def token(self, subject: str, access: list[tokens.Access], now: int) -> str:
        key = self.key()
        body = tokens.claims(
            issuer=self.config.issuer,
            service=self.config.service,
            subject=subject,
            access=access,
            now=now,
            lifetime=self.config.lifetime,
            token_id=secrets.token_hex(16),
        )
        return tokens.sign(key.key, tokens.header(key.chain), body)


# ---- the endpoint -----------------------------------------------------------------------------------------


@dataclass
class TokenServer:
    config: TokenConfig
    signer: Signer
    namespaces: Store[str, str | None] = field(
        default_factory=lambda: Store(_vpc_entry, changed=lambda key, before, after: None)
    )
    users: Users = field(default_factory=Users)
    known: Known = field(default_factory=Known)
    throttle: tokens.Throttle = field(default_factory=tokens.Throttle)
    checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(BCRYPT_THREADS))
    failing_checks: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(FAILING_THREADS))
    waiting: dict[tokens.Lane, int] = field(default_factory=lambda: {"clean": 0, "failing": 0})
    under_way: dict[str, int] = field(default_factory=dict)  # source → its checks admitted and not done
    clock: Callable[[], float] = time.monotonic
    synced: bool = False

    async def verify(self, user: str, password: str, source: str) -> tuple[bool, bool] | None:
        """(known, verified) for these credentials from ``source`` (the client's address); None when the source
        is throttled or its lane is full. A password known good is answered without a check or a throttle."""
        hashes = self.users.hashes(user, datetime.timedelta(seconds=self.config.previous_grace_seconds))
        if not hashes or rules.namespace_of(user) is None:
            return False, False
        if any(Known.key(user, hashed, password) in self.known for hashed in hashes):
            return True, True
        now = self.clock()
        lane = self.throttle.lane(source, self.under_way.get(source, 0), now)
        if self.throttle.refused(source, user, now) or self.waiting[lane] >= MAX_WAITING[lane]:
            return None
        self.waiting[lane] += 1
        self.under_way[source] = self.under_way.get(source, 0) + 1
        try:
            async with self._thread(lane):
                matched = await asyncio.to_thread(_first_match, password, hashes)
        finally:
            self.waiting[lane] -= 1
            self.under_way[source] -= 1
            if not self.under_way[source]:
                del self.under_way[source]
        if matched is None:
            self.throttle.failed(source, user, self.clock())
            return True, False
        self.known.add(Known.key(user, matched, password))
        self.throttle.succeeded(source, user)
        return True, True

    @contextlib.asynccontextmanager
    async def _thread(self, lane: tokens.Lane) -> AsyncIterator[None]:
        """One of the bcrypt threads: the failing lane first takes its own (at most ``FAILING_THREADS`` at once),
        so the clean lane always has the others and waits behind at most that many failing checks."""
        async with contextlib.AsyncExitStack() as stack:
            if lane == "failing":
                await stack.enter_async_context(self.failing_checks)
            await stack.enter_async_context(self.checks)
            yield

    async def handle(self, request: web.Request) -> web.Response:
        if not self.synced:
            return _error(503, "the token endpoint is starting; try again in a moment")
        if request.method == "POST":
            form = await request.post()
            if form.get("grant_type") != "password":
                return _error(400, "only grant_type=password is supported (no refresh tokens are issued)")
            user, password = str(form.get("username", "")), str(form.get("password", ""))
            credentials = (user, password) if user else None
            service = str(form["service"]) if "service" in form else None
            scopes = tokens.parse_scopes([str(value) for value in form.getall("scope", [])])
        else:
            credentials = tokens.parse_basic(request.headers.get("Authorization"))
            service = request.query.get("service")
            scopes = tokens.parse_scopes(request.query.getall("scope", []))
        known, verified = False, False
        if credentials is not None:
            checked = await self.verify(*credentials, source=request.remote or "unknown")
            if checked is None:
                return _error(429, "too many failed logins or checks at once; try again in a few seconds")
            known, verified = checked
        namespace = rules.namespace_of(credentials[0]) if credentials else None
        vpc = self.namespaces.get(namespace) if namespace is not None else None
        decision = tokens.decide(
            service=service,
            expected_service=self.config.service,
            credentials=credentials,
            known=known,
            verified=verified,
            vpc=vpc,
            scopes=scopes,
        )
        if isinstance(decision, tokens.Denied):
            if credentials is not None:
                log.info("registry tokens: refused %s: %s", credentials[0], decision.reason)
            return _error(decision.status, decision.reason)
        now = int(time.time())
        try:
            token = self.signer.token(decision.subject, decision.access, now)
        except LookupError as error:
            return _error(503, f"no token can be signed: {error}")
        granted = ", ".join(f"{a.name}:{','.join(a.actions)}" for a in decision.access) or "no repository"
        asked = len(scopes)
        log.info("registry tokens: %s (VPC %s) granted %s of %d scopes asked", decision.subject, vpc, granted, asked)
        return web.json_response(tokens.response(token, lifetime=self.config.lifetime, now=now))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok" if self.synced else "starting", status=200 if self.synced else 503)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/token", self.handle)
        app.router.add_post("/token", self.handle)
        app.router.add_get("/healthz", self.healthz)
        return app


def _first_match(password: str, hashes: tuple[str, ...]) -> str | None:
    """The first hash the password matches (bcrypt, one after the other: run in a thread)."""
    return next((hashed for hashed in hashes if rules.verify_password(password, hashed)), None)


def _error(status: int, message: str) -> web.Response:
    code = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 429: "TOOMANYREQUESTS"}.get(status, "UNAVAILABLE")
    headers = {"WWW-Authenticate": 'Basic realm="smll-secrets registry tokens"'} if status == 401 else None
    return web.json_response({"errors": [{"code": code, "message": message}]}, status=status, headers=headers)


@dataclass
class Serving:
    """A started token endpoint: ``task`` runs its informers and ends only by failing; ``stop`` ends it all."""

    server: TokenServer
    runner: web.AppRunner
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.runner.cleanup()


async def serve_tokens(api: client.ApiClient, config: TokenConfig, htpasswd_secret: str) -> Serving:
    """Start the informers and the listener; the endpoint answers 503 until the informers listed (and while there
    is no CA to sign with, saying why)."""
    signer = Signer(config)
    server = TokenServer(config, signer)
    namespace, name = parse_secret_ref(htpasswd_secret)
    ca_namespace, ca_name = config.ca_secret
    informers = [
        Informer(
            api,
            resource_path("Secret", ca_namespace),
            signer,
            query={"fieldSelector": f"metadata.name={ca_name}"},
            managed_fields=False,
        ),
        Informer(api, resource_path("Namespace"), server.namespaces, managed_fields=False),
        Informer(
            api,
            resource_path("Secret", namespace),
            server.users,
            query={"fieldSelector": f"metadata.name={name}"},
            managed_fields=False,
        ),
    ]

    async def run() -> None:
        async with asyncio.TaskGroup() as group:
            for informer in informers:
                group.create_task(informer.run())
            await asyncio.gather(*(_synced(informer) for informer in informers))
            server.synced = True
            log.info("registry tokens: caches synced; serving on port %d", config.port)

    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    return Serving(server, runner, asyncio.create_task(run()))


def _synced(informer: Informer) -> Awaitable[bool]:
    return informer.synced.wait()
