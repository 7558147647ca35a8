"""The write-only API against a hostile tenant (issue 22), by table: a view shows only the product's own metadata, a
write answers the same whether a value sent was the stored one or not, only the Secret types the API is for are
written or deleted, the access review names the Secret, and the listing reads Secrets a bounded page at a time."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
from collections.abc import Coroutine
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from kubernetes_asyncio import client

import webhook.secretsapi as edge
from rules import secretsapi as api
from rules.names import KEYS_CHANGED_AT, PROTECTION, SECRET_TYPE_LABEL
from rules.workloads import resource_path
from tests.unit.fakeapi import FakeApi
from webhook import apiprotocol
from webhook.referrers import ReferrerIndex

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
CANARY = "canary-sk_live_0123456789"
SECRETS = resource_path("Secret", "shop")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(name: str = "stripe", kind: str = "Opaque", labels: dict[str, str] | None = None, **data: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": kind,
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "labels": labels or {},
        },
        "data": {k: b64(v) for k, v in (data or {"A": CANARY}).items()},
    }


# ---- the views: an allowlist of metadata ---------------------------------------------------------------------


def applied_with_kubectl() -> Any:
    found = secret(labels={"team": CANARY[:40], SECRET_TYPE_LABEL: "nonsense", "app.kubernetes.io/name": "shop"})
    manifest = {"apiVersion": "v1", "kind": "Secret", "stringData": {"A": CANARY}, "metadata": {"name": "stripe"}}
    found["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(manifest),
        "example.com/note": CANARY,
        KEYS_CHANGED_AT: json.dumps({"A": "2026-11-01T00:00:00Z"}),
        PROTECTION: "strict",
    }
    found["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:data": {"f:A": {}}}}]
    found["metadata"]["finalizers"] = [CANARY]
    return found


def test_a_view_shows_only_the_metadata_the_product_knows() -> None:
    view = api.view(applied_with_kubectl(), [], {}, NOW)
    assert CANARY not in json.dumps(view)
    assert b64(CANARY) not in json.dumps(view)
    assert view["metadata"] == {
        "name": "stripe",
        "namespace": "shop",
        "uid": "uid-stripe",
        "labels": {SECRET_TYPE_LABEL: "nonsense", "app.kubernetes.io/name": "shop"},
        "annotations": {PROTECTION: "strict"},
    }
    assert view["keys"] == [{"name": "A", "lastChanged": "2026-11-01T00:00:00Z", "usedBy": []}]
    table = apiprotocol.table([api.secret_view(applied_with_kubectl(), [], {}, NOW)], NOW)
    assert CANARY not in json.dumps(table)
    assert table["rows"][0]["object"]["metadata"] == view["metadata"]


def test_a_view_carries_no_resource_version() -> None:
    assert "resourceVersion" not in api.view(secret(), [], {}, NOW)["metadata"]


def test_values_are_dropped_as_soon_as_a_page_is_read() -> None:
    found = api.without_values({**secret(), "stringData": {"B": CANARY}})
    assert found["data"] == {"A": ""}
    assert CANARY not in json.dumps(found)
    assert b64(CANARY) not in json.dumps(found)


# ---- no oracle ----------------------------------------------------------------------------------------------------


def request(*, allow: bool = False, remove: frozenset[str] = frozenset(), **values: str) -> api.WriteRequest:
    return api.WriteRequest("shop", "stripe", {k: v.encode() for k, v in values.items()}, remove, allow)


@pytest.mark.parametrize(
    ("stored", "labels"),
    [({"A": CANARY, "B": "b"}, {}), ({"A": CANARY}, {SECRET_TYPE_LABEL: "database"})],
    ids=["custom", "generated"],
)
def test_a_right_guess_and_a_wrong_one_are_answered_and_written_alike(
    stored: dict[str, str], labels: dict[str, str]
) -> None:
    current = secret(labels=labels, **stored)
    right_body, right = api.plan_write(current, request(A=CANARY, allow=bool(labels)), NOW)
    wrong_body, wrong = api.plan_write(current, request(A="guess", allow=bool(labels)), NOW)
    assert right == wrong == api.WriteResult(set=("A",))
    assert api.write_answer(request(A=CANARY), right) == api.write_answer(request(A="guess"), wrong)
    # The same write but for the value: the same stamp, so the same trace in the listing.
    assert {**right_body, "data": None} == {**wrong_body, "data": None}
    assert json.loads(right_body["metadata"]["annotations"][KEYS_CHANGED_AT]) == {"A": "2026-11-27T12:00:00Z"}


def test_the_answer_has_no_field_that_could_tell_equality() -> None:
    answer = api.write_answer(request(A="x"), api.WriteResult(set=("A",)))
    assert set(answer["status"]) == {"created", "set", "removed"}


# ---- the types this API writes ----------------------------------------------------------------------------------

PRODUCT_LABELS = {"app.kubernetes.io/managed-by": "smll-secrets"}


@pytest.mark.parametrize(
    ("kind", "labels", "allowed", "writable"),
    [
        ("Opaque", {}, (), True),
        ("", {}, (), True),  # no type is Opaque
        ("Opaque", {SECRET_TYPE_LABEL: "database", **PRODUCT_LABELS}, (), True),
        ("kubernetes.io/dockerconfigjson", {SECRET_TYPE_LABEL: "registry", **PRODUCT_LABELS}, (), True),
        ("kubernetes.io/dockerconfigjson", {SECRET_TYPE_LABEL: "registry"}, (), False),  # not the product's
        ("kubernetes.io/dockerconfigjson", {}, (), False),
        ("helm.sh/release.v1", {}, (), False),
        ("helm.sh/release.v1", {SECRET_TYPE_LABEL: "database", **PRODUCT_LABELS}, (), False),  # a label is no type
        ("kubernetes.io/service-account-token", {}, (), False),
        ("kubernetes.io/tls", {}, (), False),
        ("bootstrap.kubernetes.io/token", {}, (), False),
        ("kubernetes.io/basic-auth", {}, (), False),
        ("kubernetes.io/basic-auth", {}, ("kubernetes.io/basic-auth",), True),
        ("example.com/custom", {}, (), False),
    ],
)
def test_only_the_secrets_the_api_is_for_are_written(
    kind: str, labels: dict[str, str], allowed: tuple[str, ...], writable: bool
) -> None:
    current = secret(kind=kind, labels=labels)
    if writable:
        api.check_writable(current, frozenset(allowed), verb="write")
        return
    with pytest.raises(api.ApiError) as refused:
        api.plan_write(current, request(A="forged", allow=True), NOW, frozenset(allowed))
    assert refused.value.code == 403
    assert refused.value.reason == "Forbidden"
    assert f'secret "stripe" is of type {kind}' in refused.value.message
    assert "secretsApi.allowedTypes" in refusal_text(refused.value)
    with pytest.raises(api.ApiError, match="the write-only API deletes Opaque Secrets"):
        api.check_writable(current, frozenset(allowed), verb="delete")


def refusal_text(error: api.ApiError) -> str:
    text = json.dumps(apiprotocol.error_status(error))
    assert CANARY not in text
    return text


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("helm.sh/release.v1", "a Helm release record"),
        ("kubernetes.io/service-account-token", "a ServiceAccount's token"),
        ("kubernetes.io/tls", "a TLS key pair"),
        ("kubernetes.io/dockerconfigjson", "an image pull secret smll-secrets did not make"),
    ],
)
def test_a_refusal_says_what_the_secret_is(kind: str, why: str) -> None:
    with pytest.raises(api.ApiError, match=why):
        api.check_writable(secret(kind=kind), frozenset(), verb="write")


# ---- the listing's pages -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "read", "token", "expected"),
    [
        ({}, 0, "", {"limit": str(api.PAGE)}),
        ({}, 40, "t", {"limit": str(api.PAGE), "continue": "t"}),
        ({"limit": "500"}, 0, "", {"limit": str(api.PAGE)}),  # kubectl's --chunk-size=500: no more than a page
        ({"limit": "3"}, 0, "", {"limit": "3"}),
        ({"limit": "15"}, 10, "t", {"limit": "5", "continue": "t"}),
        ({"limit": "10"}, 10, "t", None),  # the client's chunk is full
        ({"labelSelector": "a=b", "fieldSelector": "type=Opaque", "other": "x"}, 0, "",
         {"labelSelector": "a=b", "fieldSelector": "type=Opaque", "limit": str(api.PAGE)}),
    ],
)  # fmt: skip
def test_each_page_is_bounded_whatever_the_client_asks(
    query: dict[str, str], read: int, token: str, expected: dict[str, str] | None
) -> None:
    assert api.parse_list(query).page_query(token, read) == expected


def test_a_limit_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(api.ApiError, match="limit must be a whole number"):
        api.parse_list({"limit": "-1"})


# ---- the edge: paging, reviews that name the Secret, refused types ------------------------------------------------


def fake(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[FakeApi, edge.SecretsApi, list[dict[str, Any]], list[dict[str, Any]]]:
    """23 Secrets in shop, each with a canary value; every access review allowed but for the Secret "not-yours"."""
    api_ = FakeApi()
    api_.install(monkeypatch)
    reviews: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []

    async def answer(kube: Any, method: str, path: str, *, body: Any = None, query: Any = None, **kw: Any) -> Any:
        if path.endswith("/subjectaccessreviews"):
            reviews.append(body["spec"]["resourceAttributes"])
            allowed = body["spec"]["resourceAttributes"].get("name") != "not-yours"
            return {**body, "status": {"allowed": allowed}}
        if method == "GET" and path == SECRETS:
            pages.append(dict(query or {}))
        return await api_.json_request(kube, method, path, body=body, query=query, **kw)

    monkeypatch.setattr(edge, "json_request", answer)
    monkeypatch.setattr("kubeio.rest.json_request", answer)
    secrets = edge.SecretsApi(ReferrerIndex(), api=cast(client.ApiClient, object()), clock=lambda: NOW)
    monkeypatch.setattr(secrets, "authenticate", lambda request: apiprotocol.Identity("ci"))
    for number in range(23):
        api_.put(SECRETS, secret(f"s{number:02d}", KEY=CANARY))
    return api_, secrets, reviews, pages


def listing(path: str, **query: str) -> web.Request:
    target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return make_mocked_request("GET", target, match_info={"namespace": "shop"})


def body_of(response: web.StreamResponse) -> Any:
    return json.loads(cast(web.Response, response).body)  # type: ignore[arg-type]


async def test_the_listing_reads_every_page_and_never_more_than_a_page(monkeypatch: pytest.MonkeyPatch) -> None:
    _, secrets, _, pages = fake(monkeypatch)
    found = body_of(await secrets.list_views(listing(f"{edge.BASE}/namespaces/shop/writeonlysecrets")))
    assert [item["metadata"]["name"] for item in found["items"]] == [f"s{n:02d}" for n in range(23)]
    assert "continue" not in found["metadata"]
    assert [page.get("limit") for page in pages] == [str(api.PAGE)] * 3
    assert CANARY not in json.dumps(found)
    assert b64(CANARY) not in json.dumps(found)


async def test_the_listing_honours_the_client_s_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    _, secrets, _, pages = fake(monkeypatch)
    path = f"{edge.BASE}/namespaces/shop/writeonlysecrets"
    names: list[str] = []
    token, chunks = "", 0
    while chunks < 10:
        query = {"limit": "15"} | ({"continue": token} if token else {})
        found = body_of(await secrets.list_views(listing(path, **query)))
        assert len(found["items"]) <= 15
        names += [item["metadata"]["name"] for item in found["items"]]
        chunks += 1
        token = found["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"s{n:02d}" for n in range(23)]
    assert chunks == 2, "a chunk of 15, then the 8 left, as kubectl --chunk-size=15 follows continue"
    assert [page["limit"] for page in pages] == [str(api.PAGE), "5", str(api.PAGE)]
    pages.clear()
    whole = body_of(await secrets.list_views(listing(path, limit="500")))  # kubectl's default chunk
    assert len(whole["items"]) == 23
    assert all(int(page["limit"]) <= api.PAGE for page in pages)


async def test_only_one_page_is_held_at_a_time_by_all_listings(monkeypatch: pytest.MonkeyPatch) -> None:
    _, secrets, _, _ = fake(monkeypatch)
    held, most = 0, 0
    real = cast(Any, edge).json_request

    async def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal held, most
        if args[1] == "GET" and args[2] == SECRETS:
            held += 1
            most = max(most, held)
            await asyncio.sleep(0.01)
            held -= 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(edge, "json_request", slow)
    path = f"{edge.BASE}/namespaces/shop/writeonlysecrets"
    await asyncio.gather(*(secrets.list_views(listing(path)) for _ in range(4)))
    assert most == edge.LIST_SLOTS == 1


def write_request(body: Any, *, dry_run: bool = False, namespace: str = "shop") -> web.Request:
    path = f"{edge.BASE}/namespaces/shop/secretwrites" + ("?dryRun=All" if dry_run else "")
    request = make_mocked_request("POST", path, match_info={"namespace": namespace})

    async def read() -> Any:
        return body

    cast(Any, request).json = read
    return request


def secret_write(name: str, **spec: Any) -> Any:
    return {"apiVersion": api.API_VERSION, "kind": api.WRITE_KIND, "spec": {"secretName": name, **spec}}


async def test_the_review_of_a_write_names_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    api_, secrets, reviews, _ = fake(monkeypatch)
    answer = await secrets.write(write_request(secret_write("s01", stringData={"KEY": "new"})))
    assert answer.status == 200
    attributes = {"group": api.GROUP, "version": api.VERSION, "namespace": "shop"}
    assert reviews[-2:] == [
        {"verb": "create", "resource": api.WRITES, **attributes},  # what the apiserver asked too
        {"verb": "update", "resource": api.VIEWS, "name": "s01", **attributes},  # the Secret, by name
    ]
    with pytest.raises(api.ApiError) as refused:
        await secrets.write(write_request(secret_write("not-yours", stringData={"KEY": "x"})))
    assert refused.value.code == 403
    assert refused.value.message.startswith(
        'writeonlysecrets.secrets.smll.io "not-yours" is forbidden: User "ci" cannot update resource '
        '"writeonlysecrets" in API group "secrets.smll.io" in the namespace "shop": a SecretWrite to secret '
        '"not-yours" needs update on writeonlysecrets "not-yours"'
    )
    assert api_.get(resource_path("Secret", "shop", "not-yours")) is None


@pytest.mark.parametrize("dry_run", [False, True])
async def test_a_secret_of_another_type_is_neither_written_nor_deleted(
    monkeypatch: pytest.MonkeyPatch, dry_run: bool
) -> None:
    api_, secrets, _, _ = fake(monkeypatch)
    api_.put(SECRETS, secret("sh.helm.release.v1.shop.v1", kind="helm.sh/release.v1", release="record"))
    path = resource_path("Secret", "shop", "sh.helm.release.v1.shop.v1")
    before = api_.get(path)
    with pytest.raises(api.ApiError, match=r"of type helm\.sh/release\.v1, a Helm release record"):
        await secrets.write(
            write_request(secret_write("sh.helm.release.v1.shop.v1", stringData={"release": "forged"}), dry_run=dry_run)
        )
    delete = make_mocked_request(
        "DELETE",
        f"{edge.BASE}/namespaces/shop/writeonlysecrets/x" + ("?dryRun=All" if dry_run else ""),
        match_info={"namespace": "shop", "name": "sh.helm.release.v1.shop.v1"},
    )
    with pytest.raises(api.ApiError, match="deletes Opaque Secrets"):
        await secrets.delete(delete)
    assert api_.get(path) == before
    assert [m for m, p in api_.requests if p == path and m != "GET"] == []


async def test_a_delete_removes_the_secret_it_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    api_, secrets, _, _ = fake(monkeypatch)
    deletes: list[Any] = []
    real = cast(Any, edge).json_request

    async def record(*args: Any, **kwargs: Any) -> Any:
        if args[1] == "DELETE":
            deletes.append(kwargs.get("body"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(edge, "json_request", record)
    uid = (api_.get(resource_path("Secret", "shop", "s03")) or {})["metadata"]["uid"]
    request = make_mocked_request(
        "DELETE", f"{edge.BASE}/namespaces/shop/writeonlysecrets/s03", match_info={"namespace": "shop", "name": "s03"}
    )
    answer = body_of(await secrets.delete(request))
    assert answer["status"] == "Success"
    assert CANARY not in json.dumps(answer)
    assert deletes == [{"preconditions": {"uid": uid}}]
    assert api_.get(resource_path("Secret", "shop", "s03")) is None


# ---- no oracle for the size of the stored values (security review) -------------------------------------------------


def sized(total: int) -> Any:
    """A Secret whose stored values add up to ``total`` bytes (its keys included)."""
    found = secret(A="x")
    found["data"] = {"A": base64.b64encode(b"v" * (total - 1)).decode()}
    return found


def outcome(current: Any, pad: int) -> Any:
    try:
        _, result = api.plan_write(current, request(PAD="p" * (pad - 3)), NOW)
    except api.ApiError as error:
        return apiprotocol.error_status(error)
    return result


@pytest.mark.parametrize("total", [1000, 40_000, 600_000])
def test_a_dry_run_pad_never_tells_the_stored_size(total: int) -> None:
    """A writer pads a dry-run SecretWrite until it is refused: the answer may depend on the request's own size and
    the stored size rounded up (api.SIZE_STEP), never on the stored size to the byte."""
    near = [total, total + 3, total + 17]
    limits = [api.MAX_SECRET_BYTES - size for size in near]
    rounded = -(-total // api.SIZE_STEP) * api.SIZE_STEP
    pads = sorted({p for limit in [*limits, api.MAX_SECRET_BYTES - rounded] for p in range(limit - 4, limit + 5)})
    for pad in pads:
        answers = [outcome(sized(size), pad) for size in near]
        assert all(answer == answers[0] for answer in answers), f"pad {pad}: {answers}"
        if isinstance(answers[0], dict):
            assert str(total) not in json.dumps(answers[0])
            assert answers[0]["code"] == 413


def test_a_write_the_api_lets_through_is_never_over_the_apiserver_s_limit() -> None:
    """So the apiserver's own exact limit is never what answers a writer through this API."""
    for size in (1000, 65_535, 65_537, 500_000, 1_000_000):
        for pad in range(api.MAX_SECRET_BYTES - size - 70_000, api.MAX_SECRET_BYTES - size + 10, 997):
            found = outcome(sized(size), max(pad, 4))
            if isinstance(found, api.WriteResult):
                assert size + max(pad, 4) <= api.MAX_SECRET_BYTES


def test_a_request_too_large_by_itself_says_its_own_size() -> None:
    with pytest.raises(api.ApiError) as refused:
        api.plan_write(None, request(BIG="x" * (api.MAX_SECRET_BYTES + 1)), NOW)
    assert refused.value.code == 413
    assert f"{api.MAX_SECRET_BYTES + 4} bytes" in refused.value.message


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (422, 'Secret "s01" is invalid: data: Too long: must have at most 1048576 bytes (1048571)'),
        (422, 'Secret "s01" is invalid: data: Too long: may not be more than 1048576 bytes (1048571)'),
        (500, "etcdserver: request is too large (1048571)"),
        (413, "Request entity too large: limit is 3145728 (1048571)"),
    ],
)
async def test_the_apiserver_s_size_refusal_is_answered_without_a_size(
    monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    api_, secrets, _, _ = fake(monkeypatch)
    path = resource_path("Secret", "shop", "s01")
    api_.fail("PUT", path, code, message)
    with pytest.raises(api.ApiError) as refused:
        await secrets.write(write_request(secret_write("s01", stringData={"PAD": "p" * 1000}), dry_run=True))
    assert refused.value.code == 413
    assert refused.value.message == api.too_large("s01").message
    assert "1048571" not in json.dumps(apiprotocol.error_status(refused.value))


# ---- names: all of the string (security review) -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["s01\n", "s01\r", "s01 ", "../s01", "s01/x"], ids=repr)
async def test_a_write_to_a_name_with_anything_after_it_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    api_, secrets, reviews, _ = fake(monkeypatch)
    with pytest.raises(api.ApiError) as refused:
        await secrets.write(write_request(secret_write(name, stringData={"KEY": "x"})))
    assert refused.value.code == 422
    assert "is not a valid Secret name" in refused.value.message
    assert [r for r in reviews if r.get("name")] == [], "no access review carries the bad name"
    assert [p for _, p in api_.requests if "s01" in p] == []


@pytest.mark.parametrize("key", ["KEY\n", "KEY\r\n", "\nKEY"], ids=repr)
def test_a_key_with_a_newline_is_refused(key: str) -> None:
    with pytest.raises(api.ApiError, match="is not a valid Secret key"):
        api.parse_write(
            {
                "apiVersion": api.API_VERSION,
                "kind": api.WRITE_KIND,
                "spec": {"secretName": "s", "stringData": {key: "x"}},
            },
            "shop",
        )


BAD_PATHS = [
    ("shop\n", "s01"),
    ("sh op", "s01"),
    ("Shop", "s01"),
    ("shop", "s01\n"),
    ("shop", "s01\r\n"),
    ("shop", ".."),
]


@pytest.mark.parametrize(
    ("verb", "namespace", "name"),
    [(verb, namespace, name) for verb in ("get", "delete") for namespace, name in BAD_PATHS]
    + [(verb, namespace, "s01") for verb in ("list", "write") for namespace, _ in BAD_PATHS[:3]],
    ids=repr,
)
async def test_a_path_naming_what_kubernetes_never_would_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch, verb: str, namespace: str, name: str
) -> None:
    api_, secrets, reviews, _ = fake(monkeypatch)
    before = len(api_.requests)
    base = f"{edge.BASE}/namespaces/x/writeonlysecrets"
    call: Coroutine[Any, Any, web.StreamResponse]
    if verb == "write":
        call = secrets.write(write_request(secret_write("s01", stringData={"KEY": "x"}), namespace=namespace))
    elif verb == "list":
        call = secrets.list_views(make_mocked_request("GET", base, match_info={"namespace": namespace}))
    else:
        request = make_mocked_request(verb.upper(), f"{base}/x", match_info={"namespace": namespace, "name": name})
        call = secrets.get_view(request) if verb == "get" else secrets.delete(request)
    with pytest.raises(api.ApiError) as refused:
        await call
    assert refused.value.code == 400
    assert "is not a valid" in refused.value.message
    assert reviews == []
    assert len(api_.requests) == before
