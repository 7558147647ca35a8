"""Protection, through the HTTP app: who uses a Secret, and which deletes and key removals are refused."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.factories import JsonObject, admission_review, container, pod_spec, secret, workload
from webhook.app import WebhookState, create_app
from webhook.validate import PROTOBUF_MAGIC, Snapshot, _varint, mentions, referrers_in

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


def env_ref(var: str, secret_name: str, key: str, optional: bool = False) -> JsonObject:
    ref: JsonObject = {"name": secret_name, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": var, "valueFrom": {"secretKeyRef": ref}}


def owned(obj: JsonObject, owner: JsonObject, uid: str) -> JsonObject:
    obj["metadata"]["uid"] = uid
    obj["metadata"]["ownerReferences"] = [
        {"kind": owner["kind"], "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True}
    ]
    return obj


def with_uid(obj: JsonObject, uid: str) -> JsonObject:
    obj["metadata"]["uid"] = uid
    return obj


WEB = with_uid(workload("Deployment", spec=pod_spec(container("web", env=[env_ref("API_KEY", "stripe", "KEY")]))), "d1")
WEB_RS = owned(workload("ReplicaSet", "web-7d9", spec=WEB["spec"]["template"]["spec"]), WEB, "rs1")
WEB_POD = owned(workload("Pod", "web-7d9-x", spec=WEB["spec"]["template"]["spec"]), WEB_RS, "p1")
REPORT = with_uid(
    workload("CronJob", "report", spec=pod_spec(container("r", envFrom=[{"secretRef": {"name": "stripe"}}]))), "c1"
)
REPORT_JOB = owned(
    workload("Job", "report-1", spec=REPORT["spec"]["jobTemplate"]["spec"]["template"]["spec"]), REPORT, "j1"
)
PULLER = with_uid(
    workload("Pod", "puller", spec=pod_spec(container("p"), imagePullSecrets=[{"name": "regcred"}])), "p2"
)
OPTIONAL = with_uid(
    workload("Deployment", "opt", spec=pod_spec(container("o", env=[env_ref("O", "stripe", "MAYBE", optional=True)]))),
    "d2",
)
LINKED = with_uid(
    workload("Deployment", "linked", annotations={"env.secrets.smll.io/DB": "orders-credentials/DATABASE_URL"}), "d3"
)
CLUSTER = [WEB, WEB_RS, WEB_POD, REPORT, REPORT_JOB, PULLER, OPTIONAL, LINKED]


def make_state(
    objects: list[JsonObject], *, fresh: list[JsonObject] | None = None, terminating: str = ""
) -> WebhookState:
    state = WebhookState()
    by_kind: dict[str, list[JsonObject]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    for kind, found in by_kind.items():
        state.protection.referrers.handler(kind).replace(found)
    if terminating:
        state.protection.terminating.apply(
            "MODIFIED", {"metadata": {"name": terminating}, "status": {"phase": "Terminating"}}
        )

    async def consistent_read(namespace: str) -> Snapshot:
        """What the apiserver would list: one page per kind, as raw JSON."""
        pages: dict[str, list[JsonObject]] = {}
        for obj in objects if fresh is None else fresh:
            pages.setdefault(obj["kind"], []).append(obj)
        return [(kind, json.dumps({"items": items}).encode()) for kind, items in pages.items()]

    state.protection.consistent_read = consistent_read
    return state


@pytest.fixture
def app_for(aiohttp_client: ClientFactory) -> Callable[[WebhookState], Awaitable[Client]]:
    async def make(state: WebhookState) -> Client:
        return await aiohttp_client(create_app(state))

    return make


async def judge(client: Client, review: JsonObject) -> JsonObject:
    answer = await client.post("/validate", json=review)
    assert answer.status == 200, await answer.text()
    response: JsonObject = (await answer.json())["response"]
    return response


def delete_of(obj: JsonObject) -> JsonObject:
    return admission_review(None, operation="DELETE", old=obj)


@pytest.mark.parametrize(
    ("secret_name", "message"),
    [
        pytest.param(
            "stripe",
            'secret "stripe" is used by cronjob/report (envFrom), deployment/opt (env O), '
            "deployment/web (env API_KEY); remove these references first",
            id="every-referrer-once-as-its-top-owner-optional-ones-too",
        ),
        pytest.param(
            "regcred",
            'secret "regcred" is used by pod/puller (imagePullSecrets); remove these references first',
            id="bare-pod-imagePullSecrets",
        ),
        pytest.param(
            "orders-credentials",
            'secret "orders-credentials" is used by deployment/linked (link DB); remove these references first',
            id="link-annotation",
        ),
    ],
)
async def test_deleting_a_used_secret_is_denied_naming_every_referrer_and_how(
    app_for: Callable[[WebhookState], Awaitable[Client]], secret_name: str, message: str
) -> None:
    client = await app_for(make_state(CLUSTER))

    response = await judge(client, delete_of(secret(secret_name)))

    assert response["allowed"] is False
    assert response["status"]["message"] == message


async def test_deleting_an_unused_secret_is_allowed_after_a_consistent_read(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    client = await app_for(make_state(CLUSTER))

    response = await judge(client, delete_of(secret("unused")))

    assert response["allowed"] is True


async def test_a_referrer_the_index_has_not_seen_yet_still_blocks_the_delete(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    brand_new = with_uid(
        workload("Deployment", "new", spec=pod_spec(container("n", env=[env_ref("K", "fresh", "K")]))), "d9"
    )
    client = await app_for(make_state(CLUSTER, fresh=[*CLUSTER, brand_new]))

    response = await judge(client, delete_of(secret("fresh")))

    assert response["allowed"] is False
    assert "deployment/new (env K)" in response["status"]["message"]


async def test_a_delete_that_only_revision_history_names_is_allowed_with_a_warning_unless_a_pod_of_it_runs(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    unlinked = with_uid(workload("Deployment", "web", spec=pod_spec(container("web"))), "d1")
    history = owned(workload("ReplicaSet", "web-7d9", spec=WEB["spec"]["template"]["spec"]), unlinked, "rs1")
    history["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    history["spec"]["replicas"] = 0
    history["status"] = {"replicas": 0}
    client = await app_for(make_state([unlinked, history]))

    response = await judge(client, delete_of(secret("stripe")))

    assert response["allowed"] is True
    assert response["warnings"] == [
        'the revision history of deployment/web still names secret "stripe": rolling back with kubectl rollout '
        "undo to revision 2 (ReplicaSet web-7d9) would fail to start"
    ]

    # The index has not seen a pod of that ReplicaSet yet; the consistent read does, and it still runs.
    late_pod = owned(workload("Pod", "web-7d9-x", spec=WEB["spec"]["template"]["spec"]), history, "p9")
    client = await app_for(make_state([unlinked, history], fresh=[unlinked, history, late_pod]))

    response = await judge(client, delete_of(secret("stripe")))

    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'secret "stripe" is used by deployment/web (old ReplicaSet web-7d9, 1 pod, scaling down); '
        "remove these references first"
    )


async def test_the_message_is_capped_with_and_n_more(app_for: Callable[[WebhookState], Awaitable[Client]]) -> None:
    many = [
        with_uid(
            workload(
                "Deployment", f"svc-{i:02}", spec=pod_spec(container("c", envFrom=[{"secretRef": {"name": "shared"}}]))
            ),
            f"u{i}",
        )
        for i in range(12)
    ]
    client = await app_for(make_state(many))

    response = await judge(client, delete_of(secret("shared")))

    message = response["status"]["message"]
    assert message.startswith('secret "shared" is used by deployment/svc-00 (envFrom), deployment/svc-01 (envFrom)')
    assert "and 7 more; remove these references first" in message
    assert len(message) < 400


async def test_nothing_is_blocked_in_a_namespace_being_deleted(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    client = await app_for(make_state(CLUSTER, terminating="shop"))

    response = await judge(client, delete_of(secret("stripe")))

    assert response["allowed"] is True


async def test_the_protection_escape_hatch_allows_the_delete(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    client = await app_for(make_state(CLUSTER))
    escaped = secret("stripe")
    escaped["metadata"]["annotations"] = {"secrets.smll.io/protection": "disabled"}

    response = await judge(client, delete_of(escaped))

    assert response["allowed"] is True


@pytest.mark.parametrize(
    ("old_keys", "new_keys", "allowed", "message"),
    [
        pytest.param(
            {"KEY", "OTHER"},
            {"OTHER"},
            False,
            'key KEY of secret "stripe" is used by deployment/web (env API_KEY); remove these references first',
            id="removing-a-key-a-secretKeyRef-needs",
        ),
        pytest.param({"KEY", "OTHER"}, {"KEY"}, True, "", id="removing-an-unused-key"),
        pytest.param({"KEY", "MAYBE"}, {"KEY"}, True, "", id="removing-a-key-only-an-optional-ref-needs"),
        pytest.param({"KEY"}, {"KEY", "NEW"}, True, "", id="adding-a-key"),
    ],
)
async def test_an_update_that_removes_a_needed_key_is_denied(
    app_for: Callable[[WebhookState], Awaitable[Client]],
    old_keys: set[str],
    new_keys: set[str],
    allowed: bool,
    message: str,
) -> None:
    client = await app_for(make_state(CLUSTER))
    old = secret("stripe", **dict.fromkeys(old_keys, "eA=="))
    new = secret("stripe", **dict.fromkeys(new_keys, "eA=="))

    response = await judge(client, admission_review(new, operation="UPDATE", old=old))

    assert response["allowed"] is allowed
    if message:
        assert response["status"]["message"] == message


async def test_deleting_a_database_whose_credentials_are_in_use_is_denied(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    client = await app_for(make_state(CLUSTER))
    database = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders", "namespace": "shop"},
    }
    review = admission_review(None, operation="DELETE", old=database, kind="Secret")
    review["request"]["kind"] = {"group": "smll.io", "version": "v1alpha1", "kind": "Database"}

    response = await judge(client, review)

    assert response["allowed"] is False
    assert response["status"]["message"] == (
        'database "orders": its credentials secret "orders-credentials" is used by deployment/linked (link DB); '
        "remove these references first"
    )


@pytest.mark.parametrize("path", ["/mutate", "/validate"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"{not json", "body is not JSON", id="not-json"),
        pytest.param(b"[1, 2]", "body is not a JSON object", id="not-an-object"),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "Pod"}', "kind must be AdmissionReview", id="wrong-kind"
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}',
            "apiVersion must be admission.k8s.io/v1",
            id="wrong-api-version",
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "request is missing", id="no-request"
        ),
        pytest.param(
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u",'
            b' "operation": "CREATE", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}}',
            "request.object is required for CREATE",
            id="no-object",
        ),
        pytest.param(b"\xff\xfe", "body is not JSON", id="not-utf8"),
    ],
)
async def test_a_body_that_is_not_a_review_gets_400_with_the_reason(
    aiohttp_client: ClientFactory, path: str, body: bytes, reason: str
) -> None:
    client = await aiohttp_client(create_app(WebhookState()))

    answer = await client.post(path, data=body, headers={"Content-Type": "application/json"})

    assert answer.status == 400
    assert reason in await answer.text()


async def test_an_oversized_body_gets_400(aiohttp_client: ClientFactory) -> None:
    state = WebhookState(max_body_bytes=1024)
    client = await aiohttp_client(create_app(state))

    answer = await client.post("/mutate", data=b"x" * 4096, headers={"Content-Type": "application/json"})

    assert answer.status == 400
    assert "body larger than 1024 bytes" in await answer.text()


async def test_readyz_waits_for_the_caches(aiohttp_client: ClientFactory) -> None:
    synced = False
    state = WebhookState(ready_checks=[lambda: synced])
    client = await aiohttp_client(create_app(state))

    assert (await client.get("/readyz")).status == 503
    synced = True
    assert (await client.get("/readyz")).status == 200


async def test_a_snapshot_page_without_the_secret_name_is_never_decoded_and_links_are_still_found() -> None:
    linked = with_uid(workload("Deployment", "linked", annotations={"env.secrets.smll.io/K": " vault/KEY"}), "l1")
    snapshot: Snapshot = [
        ("Pod", b"{not even json: the name is absent, so it must be skipped"),
        ("Deployment", json.dumps({"items": [linked]}).encode()),
    ]

    found = await referrers_in(snapshot, "vault", "shop", None)

    assert [r.label for r in found] == ["deployment/linked"]


def protobuf(*strings: str) -> bytes:
    """A protobuf LIST answer as far as ``mentions`` looks: the magic, then string fields (tag, length, bytes)."""
    fields = b"".join(b"\x0a" + _varint(len(text.encode())) + text.encode() for text in strings)
    return PROTOBUF_MAGIC + b"\x12\x00" + fields


@pytest.mark.parametrize(
    ("body", "secret", "expected"),
    [
        (protobuf("api", "vault"), "vault", True),  # a whole string: secretKeyRef.name, secretName, …
        (protobuf("vault/KEY"), "vault", True),  # a link value
        (protobuf(" vault/KEY"), "vault", True),  # a link value with a space (links are trimmed)
        (protobuf("vaults", "a-vault"), "vault", False),  # only longer strings that contain it
        (protobuf("x" * 200, "v" * 200), "v" * 200, True),  # a two-byte length
        (protobuf("v" * 201), "v" * 200, False),
        (b'{"items":[{"name":"vault"}]}', "vault", True),
        (b'{"items":[{"name":"vaults"}]}', "vault", False),
        (b'{"items":[{"value":"vault/KEY"}]}', "vault", True),
    ],
)
def test_an_answer_mentions_a_secret_when_it_holds_its_name_as_a_whole_string_or_a_link(
    body: bytes, secret: str, expected: bool
) -> None:
    assert mentions(body, secret) is expected


async def test_a_protobuf_answer_that_mentions_the_name_is_read_again_as_json_and_one_that_does_not_never() -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "vault", "key": "TOKEN"}}}]
    user = with_uid(workload("Deployment", "web", spec=pod_spec(container(env=env))), "w1")
    asked: list[tuple[str, str]] = []

    async def json_read(namespace: str, kind: str) -> list[bytes]:
        asked.append((namespace, kind))
        return [json.dumps({"items": [user]}).encode()]

    snapshot: Snapshot = [("Deployment", protobuf("web", "vault")), ("Pod", protobuf("web-1", "other"))]

    found = await referrers_in(snapshot, "vault", "shop", json_read)

    assert asked == [("shop", "Deployment")]
    assert [r.label for r in found] == ["deployment/web"]
    assert await referrers_in(snapshot, "unused", "shop", json_read) == []
    assert asked == [("shop", "Deployment")]


@pytest.mark.parametrize("path", ["/validate", "/mutate"])
@pytest.mark.parametrize(
    ("namespace", "name", "reason"),
    [
        pytest.param("../kube-system", "stripe", "request.namespace '../kube-system' is not a namespace name", id="up"),
        pytest.param("shop/../bank", "stripe", "request.namespace 'shop/../bank' is not a namespace name", id="across"),
        pytest.param("", "stripe", "request.namespace '' is not a namespace name", id="no-namespace"),
        pytest.param("Shop", "stripe", "request.namespace 'Shop' is not a namespace name", id="upper-case"),
        pytest.param("shop", "a/b", "request.name 'a/b' is not a Secret name", id="name-slash"),
        pytest.param("shop", "..", "request.name '..' is not a Secret name", id="name-dotdot"),
    ],
)
async def test_a_review_naming_what_kubernetes_never_would_is_refused_before_any_api_call(
    aiohttp_client: ClientFactory, path: str, namespace: str, name: str, reason: str
) -> None:
    reads: list[str] = []
    state = make_state([])

    async def consistent_read(namespace: str) -> Snapshot:
        reads.append(namespace)
        return []

    state.protection.consistent_read = consistent_read
    client = await aiohttp_client(create_app(state))
    review = delete_of(secret("stripe", KEY="c2VjcmV0"))
    review["request"]["namespace"] = namespace
    review["request"]["name"] = name

    answer = await client.post(path, json=review)

    assert answer.status == 400
    assert reason in await answer.text()
    assert reads == [], "no API call for a review the apiserver would never send"


async def test_a_delete_of_every_secret_at_once_is_judged_secret_by_secret(
    app_for: Callable[[WebhookState], Awaitable[Client]],
) -> None:
    """`kubectl delete secrets --all` is a deletecollection: the apiserver reviews each Secret with an empty
    request.name and the Secret in oldObject. Judged by that empty name, every Secret in use would go."""
    client = await app_for(make_state(CLUSTER))
    review = delete_of(secret("stripe", KEY="c2VjcmV0"))
    review["request"]["name"] = ""

    response = await judge(client, review)

    assert response["allowed"] is False
    assert "deployment/web (env API_KEY)" in response["status"]["message"]
