"""The write-only Secrets API's edge: the aggregated API server the apiserver proxies ``secrets.smll.io`` to.

Every request comes through the apiserver's front proxy: the listener requires its client certificate (the CA and
the allowed names come from kube-system/extension-apiserver-authentication), the user is the one the proxy names
in its headers, and each request is authorized by a SubjectAccessReview on this API's own resources. The Secret
itself is then read and written with the product's ServiceAccount: the validating webhook judges that write like
any other (protection), and the controller sees the change (rollouts). What each request may do and what it
answers is decided in the core (rules/secretsapi.py); values never reach a log line or an answer.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client

from kubeio.errors import describe_error
from kubeio.rest import ApiException, get_or_none, json_request
from rules import secretsapi as secretsapi_rules
from rules.workloads import resource_path
from webhook import apiprotocol
from webhook.referrers import ReferrerIndex
from webhook.tls import ReloadingCertificate

log = logging.getLogger(__name__)

AUTHENTICATION_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
BASE = f"/apis/{secretsapi_rules.GROUP}/{secretsapi_rules.VERSION}"
WRITE_ATTEMPTS = 8
TABLE = "as=Table"
# Pages of Secrets held at once by every listing together (each at most rules.secretsapi.PAGE Secrets, until their
# values are dropped): the listing shares its process with both failurePolicy: Fail webhooks.
LIST_SLOTS = 1
# Whole Secrets (a get, a delete's check, a write's read-plan-write) held at once, each up to 1 MiB of values.
SECRET_SLOTS = 8


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class SecretsApi:
    """What the handlers need: the product's API client, the referrer index (who uses each key), the front proxy's
    settings (kept current by ``watch_front_proxy``), and the age after which a key is called stale."""

    referrers: ReferrerIndex
    api: client.ApiClient | None = None  # set once the server runs
    stale_after: datetime.timedelta = secretsapi_rules.DEFAULT_STALE_AFTER
    clock: Callable[[], datetime.datetime] = utcnow
    front_proxy: apiprotocol.FrontProxy | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    # Kubernetes Secret types written beside Opaque and the generated ones (the chart's secretsApi.allowedTypes).
    allowed_types: frozenset[str] = frozenset()
    pages: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LIST_SLOTS))
    whole_secrets: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(SECRET_SLOTS))

    @property
    def kube(self) -> client.ApiClient:
        if self.api is None:
            raise secretsapi_rules.ApiError(503, "ServiceUnavailable", "the write-only API is starting")
        return self.api

    # -- the front proxy ------------------------------------------------------------------------------------------

    async def refresh_front_proxy(self, tls: ReloadingCertificate) -> None:
        found = await get_or_none(self.kube, AUTHENTICATION_CONFIGMAP)
        config = apiprotocol.front_proxy((found or {}).get("data") or {})
        if config is None:
            if not self.loaded.is_set():
                log.warning(
                    "the apiserver has no front proxy (no requestheader-client-ca-file in %s): the write-only API "
                    "cannot authenticate anyone until it has",
                    AUTHENTICATION_CONFIGMAP,
                )
            return
        if config != self.front_proxy:
            tls.trust_clients(config.client_ca)
            self.front_proxy = config
            log.info("the write-only API trusts the apiserver's front proxy (allowed names: %s)",
                     ", ".join(sorted(config.allowed_names)) or "any")  # fmt: skip
        self.loaded.set()

    async def watch_front_proxy(self, tls: ReloadingCertificate, interval: float = 30.0) -> None:
        while True:
            try:
                await self.refresh_front_proxy(tls)
            except (TimeoutError, ApiException, OSError, ssl.SSLError) as error:
                log.warning("cannot read the front proxy's settings: %s", describe_error(error))
            await asyncio.sleep(interval)

    # -- authentication and authorization ---------------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> apiprotocol.Identity:
        config = self.front_proxy
        transport = request.transport
        peer = transport.get_extra_info("peercert") if transport is not None else None
        if config is None or not peer:
            raise secretsapi_rules.ApiError(401, "Unauthorized", "this API answers the apiserver's front proxy only")
        if config.allowed_names:
            names = {value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"}
            if not names & config.allowed_names:
                raise secretsapi_rules.ApiError(
                    401, "Unauthorized", "the client certificate is not one of the allowed names"
                )
        who = apiprotocol.identity(config, request.headers.items())
        if who is None:
            raise secretsapi_rules.ApiError(401, "Unauthorized", "the front proxy named no user")
        return who

    async def authorize(
        self, who: apiprotocol.Identity, verb: str, resource: str, namespace: str, name: str = "", hint: str = ""
    ) -> None:
        review = await json_request(
            self.kube,
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            body=apiprotocol.access_review(who, verb, resource, namespace, name),
        )
        answer = review.get("status") or {}
        if not answer.get("allowed") or answer.get("denied"):
            raise apiprotocol.forbidden(who, verb, resource, namespace, name, str(answer.get("reason") or ""), hint)

    # -- handlers ---------------------------------------------------------------------------------------------------

    async def list_views(self, request: web.Request) -> web.Response:
        namespace = request.match_info.get("namespace", "")
        who = self.authenticate(request)
        secretsapi_rules.check_path(namespace)
        _no_watch(request)
        await self.authorize(who, "list", secretsapi_rules.VIEWS, namespace)
        asked = secretsapi_rules.parse_list(request.query)
        path = resource_path("Secret", namespace or None)
        views: list[secretsapi_rules.View] = []
        token, version = asked.continue_token, ""
        while (query := asked.page_query(token, len(views))) is not None:
            # One page at a time, its values dropped as soon as it is read: key names are all a view needs.
            async with self.pages:
                found = await json_request(self.kube, "GET", path, query=query)
                secrets = [secretsapi_rules.without_values(secret) for secret in found.pop("items", None) or []]
            for secret in secrets:
                # Each view is made off the loop (see _view): between Secrets, and while one is made, the loop
                # serves the webhooks and the probes.
                views.append(await self._view(secret))
            metadata = found.get("metadata") or {}
            version, token = str(metadata.get("resourceVersion", "")), str(metadata.get("continue") or "")
            if not token:
                break
        if _wants_table(request):
            return await _answer(apiprotocol.table(views, self.clock(), version, token))
        return await _answer(secretsapi_rules.view_list([view.body for view in views], version, token))

    async def get_view(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        who = self.authenticate(request)
        secretsapi_rules.check_path(namespace, name)
        _no_watch(request)
        await self.authorize(who, "get", secretsapi_rules.VIEWS, namespace, name)
        async with self.whole_secrets:
            secret = await get_or_none(self.kube, resource_path("Secret", namespace, name))
            if secret is None:
                raise secretsapi_rules.not_found(namespace, name)
            secret = secretsapi_rules.without_values(secret)
        view = await self._view(secret)
        del secret
        if _wants_table(request):
            return await _answer(apiprotocol.table([view], self.clock()))
        return await _answer(view.body)

    async def delete(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        who = self.authenticate(request)
        secretsapi_rules.check_path(namespace, name)
        await self.authorize(who, "delete", secretsapi_rules.VIEWS, namespace, name)
        path = resource_path("Secret", namespace, name)
        async with self.whole_secrets:
            current = await get_or_none(self.kube, path)
            if current is None:
                raise secretsapi_rules.not_found(namespace, name)
            secretsapi_rules.check_writable(current, self.allowed_types, verb="delete")
            # The Secret judged, not one made since under its name (a Secret's type never changes).
            options = {"preconditions": {"uid": (current.get("metadata") or {}).get("uid")}}
            del current
        try:
            await json_request(self.kube, "DELETE", path, query=_dry_run(request), body=options)
        except ApiException as error:
            if error.status == 404:
                raise secretsapi_rules.not_found(namespace, name) from None
            raise
        log.info(
            "secret %s/%s deleted for %s", namespace, name, who.user, extra=_fields(namespace, name, who, "deleted")
        )
        details = {"name": name, "group": secretsapi_rules.GROUP, "kind": secretsapi_rules.VIEWS}
        return _json(apiprotocol.status(200, "", f'secret "{name}" deleted', details=details))

    async def write(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        who = self.authenticate(request)
        secretsapi_rules.check_path(namespace)
        await self.authorize(who, "create", secretsapi_rules.WRITES, namespace)
        try:
            body = await request.json()
        except ValueError:
            raise secretsapi_rules.ApiError(400, "BadRequest", "the body is not JSON") from None
        wanted = secretsapi_rules.parse_write(body, namespace)
        # The review names the Secret, so a Role's resourceNames limits a writer to the Secrets it names.
        hint = secretsapi_rules.set_keys_hint(wanted.secret)
        await self.authorize(
            who, secretsapi_rules.SET_KEYS_VERB, secretsapi_rules.VIEWS, namespace, wanted.secret, hint
        )
        async with self.whole_secrets:
            try:
                result = await self._write(wanted, _dry_run(request))
            except ApiException as error:
                if _size_refusal(error):
                    # The apiserver's own limit, answered without the size it names (see secretsapi_rules._check_size).
                    raise secretsapi_rules.too_large(wanted.secret) from None
                raise
        fields = _fields(namespace, wanted.secret, who, "created" if result.created else "written")
        fields["keys"] = {"set": list(result.set), "removed": list(result.removed)}
        log.info(
            "secret %s/%s written for %s: created=%s set=%s removed=%s",
            namespace, wanted.secret, who.user, result.created, ",".join(result.set), ",".join(result.removed),
            extra=fields,
        )  # fmt: skip
        return _json(secretsapi_rules.write_answer(wanted, result), status=201 if result.created else 200)

    async def _write(
        self, wanted: secretsapi_rules.WriteRequest, query: dict[str, str]
    ) -> secretsapi_rules.WriteResult:
        """Read, plan, write with the resourceVersion read; a 409 (another writer came first) reads again. The
        apiserver's answer (the Secret, values included) is dropped unread."""
        collection = resource_path("Secret", wanted.namespace)
        path = resource_path("Secret", wanted.namespace, wanted.secret)  # refuses a name that is not one segment
        query = {**query, "fieldManager": secretsapi_rules.FIELD_MANAGER}
        for attempt in range(WRITE_ATTEMPTS):
            current = await get_or_none(self.kube, path)
            body, result = secretsapi_rules.plan_write(current, wanted, self.clock(), self.allowed_types)
            try:
                if current is None:
                    await json_request(self.kube, "POST", collection, body=body, query=query)
                else:
                    await json_request(self.kube, "PUT", path, body=body, query=query)
                return result
            except ApiException as error:
                if error.status != 409 or attempt == WRITE_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # noqa: S311 - jitter, not a secret
        raise AssertionError("unreachable")  # pragma: no cover

    async def _view(self, secret: dict[str, Any]) -> secretsapi_rules.View:
        """The view, made in a thread: it grows with the Secret's keys and uses (a 1 MiB Secret holds 100,000 short
        keys), and the loop it would hold serves both failurePolicy: Fail webhooks. The referrers are taken on the
        loop; the thread only looks owners up in the index (single dict reads)."""
        metadata = secret.get("metadata") or {}
        referrers = self.referrers.referrers(str(metadata.get("namespace", "")), str(metadata.get("name", "")))
        view = secretsapi_rules.secret_view
        return await asyncio.to_thread(view, secret, referrers, self.referrers.by_uid, self.clock(), self.stale_after)


def _fields(namespace: str, name: str, who: apiprotocol.Identity, outcome: str) -> dict[str, Any]:
    """``extra=`` of a log line about a write (kubeio/logs.py prints them as fields in JSON): names, never values."""
    return {"object": {"kind": "Secret", "namespace": namespace, "name": name}, "user": who.user, "outcome": outcome}


def _no_watch(request: web.Request) -> None:
    if request.query.get("watch") in ("1", "true"):
        raise secretsapi_rules.ApiError(
            405,
            "MethodNotAllowed",
            f"{secretsapi_rules.VIEWS} cannot be watched (a watch would stream Secrets as they change): "
            "list them again instead",
        )


def _wants_table(request: web.Request) -> bool:
    return TABLE in request.headers.get("Accept", "")


def _dry_run(request: web.Request) -> dict[str, str]:
    return {"dryRun": "All"} if request.query.get("dryRun") == "All" else {}


async def _answer(body: dict[str, Any]) -> web.Response:
    """A view or a listing, serialized in a thread (it can be megabytes)."""
    text = await asyncio.to_thread(json.dumps, body)
    return web.Response(body=text.encode(), content_type="application/json")


def _json(body: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), status=status, content_type="application/json")


def _refusal(error: secretsapi_rules.ApiError) -> web.Response:
    return _json(apiprotocol.error_status(error), status=error.code)


def _size_refusal(error: ApiException) -> bool:
    """The apiserver refused a write for the size of its values: Secret validation (422, ``data: Too long: may not be
    more than 1048576 bytes``, older versions ``must have at most``), the request's or etcd's limit (413, or 500
    ``etcdserver: request is too large``)."""
    try:
        found = json.loads(error.body or b"{}")
    except ValueError:
        found = {}
    message = str(found.get("message") or "") if isinstance(found, dict) else ""
    return error.status == 413 or (
        error.status in (422, 500) and ("data: Too long" in message or "request is too large" in message)
    )


def _passed_on(error: ApiException) -> web.Response:
    """An apiserver refusal of our write (protection's denial among them), answered with its code and message.
    A Status carries key names and reasons, never the Secret's data; nothing else of the answer is kept."""
    try:
        found = json.loads(error.body or b"{}")
    except ValueError:
        found = {}
    message = str(found.get("message") or error.reason or "the apiserver refused the write")
    reason = str(found.get("reason") or "")
    code = int(error.status or 500)
    return _json(apiprotocol.status(code, reason, message), status=code)


@web.middleware
async def answers(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Every refusal of this API as a ``Status``; a bug of ours as a 500 Status without details."""
    if not request.path.startswith("/apis") and not request.path.startswith("/openapi"):
        response: web.StreamResponse = await handler(request)
        return response
    try:
        response = await handler(request)
    except secretsapi_rules.ApiError as error:
        return _refusal(error)
    except ApiException as error:
        log.info("the apiserver refused %s %s: %s", request.method, request.path, describe_error(error))
        return _passed_on(error)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("the write-only API failed on %s %s", request.method, request.path)
        return _json(apiprotocol.status(500, "InternalError", "internal error; see the webhook's log"), status=500)
    return response


def add_routes(app: web.Application, secrets_api: SecretsApi) -> None:
    """The API's routes on the app; they answer only requests that come through the front proxy."""

    def discovery(document: Callable[[], dict[str, Any]]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            secrets_api.authenticate(request)
            return _json(document())

        return handle

    def group_list() -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [apiprotocol.api_group()]}

    app.router.add_get("/apis", discovery(group_list))
    app.router.add_get(f"/apis/{secretsapi_rules.GROUP}", discovery(apiprotocol.api_group))
    app.router.add_get(BASE, discovery(apiprotocol.api_resources))
    app.router.add_get(f"{BASE}/{secretsapi_rules.VIEWS}", secrets_api.list_views)
    app.router.add_get(f"{BASE}/namespaces/{{namespace}}/{secretsapi_rules.VIEWS}", secrets_api.list_views)
    app.router.add_get(f"{BASE}/namespaces/{{namespace}}/{secretsapi_rules.VIEWS}/{{name}}", secrets_api.get_view)
    app.router.add_delete(f"{BASE}/namespaces/{{namespace}}/{secretsapi_rules.VIEWS}/{{name}}", secrets_api.delete)
    app.router.add_post(f"{BASE}/namespaces/{{namespace}}/{secretsapi_rules.WRITES}", secrets_api.write)
    app.middlewares.append(answers)
