"""Linking, through the HTTP app: each test sends a review, applies the returned patch and looks at the object."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any

import jsonpatch
import pytest
from aiohttp.test_utils import TestClient

from rules.links import CACHED_UP_TO, _cached_link, link_object, parse_link
from rules.names import MANAGED_ENV
from rules.workloads import pod_template
from tests.factories import JsonObject, admission_review, container, secret, workload
from tests.factories import pod_spec as make_pod_spec
from webhook.app import WebhookState, create_app

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]
LINK = "env.secrets.smll.io/"


def ref(var: str, secret_name: str, key: str) -> JsonObject:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


@pytest.fixture
async def webhook(aiohttp_client: ClientFactory) -> Client:
    state = WebhookState()
    state.secret_keys.replace(
        [secret("stripe", STRIPE_SECRET_KEY="eA==", WEBHOOK_SECRET="eQ=="), secret("db", DATABASE_URL="eg==")]
    )
    return await aiohttp_client(create_app(state))


async def send(client: Client, review: JsonObject) -> JsonObject:
    answer = await client.post("/mutate", json=review)
    assert answer.status == 200, await answer.text()
    response: JsonObject = (await answer.json())["response"]
    assert response["uid"] == review["request"]["uid"]
    return response


async def linked(client: Client, obj: JsonObject, **review_args: Any) -> tuple[JsonObject, JsonObject]:
    """The object after the webhook's patch, and the response."""
    response = await send(client, admission_review(obj, **review_args))
    assert response["allowed"], response
    if "patch" not in response:
        return copy.deepcopy(obj), response
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    return jsonpatch.apply_patch(obj, patch), response


def env_of(obj: JsonObject, name: str = "web", field: str = "containers") -> list[JsonObject]:
    template = pod_template(obj)
    assert template is not None
    spec = template["spec"]
    found = next(c for c in spec.get(field, []) if c["name"] == name)
    env: list[JsonObject] = found.get("env", [])
    return env


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"])
async def test_a_link_annotation_on_the_object_becomes_a_secret_key_ref_env_var(webhook: Client, kind: str) -> None:
    obj = workload(kind, annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"})

    result, response = await linked(webhook, obj)

    assert env_of(result) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
    assert "warnings" not in response


async def test_a_link_annotation_on_the_pod_template_links_too(webhook: Client) -> None:
    obj = workload(template_annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"})

    result, _ = await linked(webhook, obj)

    assert env_of(result) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


async def test_the_template_annotation_wins_over_the_workload_annotation_for_the_same_var(webhook: Client) -> None:
    obj = workload(
        annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"},
        template_annotations={LINK + "API_KEY": "stripe/WEBHOOK_SECRET"},
    )

    result, _ = await linked(webhook, obj)

    assert env_of(result) == [ref("API_KEY", "stripe", "WEBHOOK_SECRET")]


async def test_every_app_container_is_linked_by_default_but_not_init_containers(webhook: Client) -> None:
    spec = make_pod_spec(container("web"), container("worker"), init=[container("migrate")])
    obj = workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}, spec=spec)

    result, _ = await linked(webhook, obj)

    assert env_of(result, "web") == env_of(result, "worker") == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
    assert env_of(result, "migrate", "initContainers") == []


async def test_the_containers_annotation_picks_containers_and_can_name_an_init_container(webhook: Client) -> None:
    spec = make_pod_spec(container("web"), container("worker"), init=[container("migrate")])
    annotations = {LINK + "DB": "db/DATABASE_URL", "secrets.smll.io/containers": "worker, migrate"}
    obj = workload(annotations=annotations, spec=spec)

    result, _ = await linked(webhook, obj)

    assert env_of(result, "web") == []
    assert env_of(result, "worker") == [ref("DB", "db", "DATABASE_URL")]
    assert env_of(result, "migrate", "initContainers") == [ref("DB", "db", "DATABASE_URL")]


async def test_existing_env_is_kept_and_links_are_appended(webhook: Client) -> None:
    spec = make_pod_spec(container("web", env=[{"name": "MODE", "value": "prod"}]))
    obj = workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}, spec=spec)

    result, _ = await linked(webhook, obj)

    assert env_of(result) == [{"name": "MODE", "value": "prod"}, ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


async def test_applying_the_webhook_twice_changes_nothing(webhook: Client) -> None:
    obj = workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", LINK + "DB": "db/DATABASE_URL"})

    once, _ = await linked(webhook, obj)
    response = await send(webhook, admission_review(once, operation="UPDATE", old=once))

    assert response["allowed"]
    assert "patch" not in response


async def test_removing_an_annotation_removes_exactly_its_env_entry(webhook: Client) -> None:
    spec = make_pod_spec(container("web", env=[{"name": "MODE", "value": "prod"}]))
    obj = workload(
        annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", LINK + "DB": "db/DATABASE_URL"}, spec=spec
    )
    before, _ = await linked(webhook, obj)
    after_edit = copy.deepcopy(before)
    del after_edit["metadata"]["annotations"][LINK + "API_KEY"]

    result, _ = await linked(webhook, after_edit, operation="UPDATE", old=before)

    assert env_of(result) == [{"name": "MODE", "value": "prod"}, ref("DB", "db", "DATABASE_URL")]


async def test_removing_every_link_removes_the_env_entries_and_the_record(webhook: Client) -> None:
    obj = workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"})
    before, _ = await linked(webhook, obj)
    after_edit = copy.deepcopy(before)
    after_edit["metadata"]["annotations"] = {}

    result, _ = await linked(webhook, after_edit, operation="UPDATE", old=before)

    assert env_of(result) == []
    template = pod_template(result)
    assert template is not None
    assert MANAGED_ENV not in template["metadata"].get("annotations", {})


async def test_changing_the_link_target_updates_the_env_entry(webhook: Client) -> None:
    before, _ = await linked(webhook, workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}))
    after_edit = copy.deepcopy(before)
    after_edit["metadata"]["annotations"][LINK + "API_KEY"] = "stripe/WEBHOOK_SECRET"

    result, _ = await linked(webhook, after_edit, operation="UPDATE", old=before)

    assert env_of(result) == [ref("API_KEY", "stripe", "WEBHOOK_SECRET")]


async def test_narrowing_the_containers_unlinks_the_containers_left_out(webhook: Client) -> None:
    spec = make_pod_spec(container("web"), container("worker"))
    before, _ = await linked(webhook, workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}, spec=spec))
    after_edit = copy.deepcopy(before)
    after_edit["metadata"]["annotations"]["secrets.smll.io/containers"] = "worker"

    result, _ = await linked(webhook, after_edit, operation="UPDATE", old=before)

    assert env_of(result, "web") == []
    assert env_of(result, "worker") == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


async def test_an_object_without_links_gets_no_patch(webhook: Client) -> None:
    response = await send(webhook, admission_review(workload()))

    assert response == {"uid": response["uid"], "allowed": True}


def owned_by(kind: str, api_version: str, owner_kind: str, *, linked: bool = False, **extra: Any) -> JsonObject:
    """A ``kind`` carrying a link, controlled by an owner; ``linked``: its pod template already has the env."""
    spec = make_pod_spec(container("web", env=[ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")] if linked else None))
    template_annotations = {MANAGED_ENV: '{"web":["API_KEY"]}'} if linked else None
    obj = workload(
        kind,
        annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", **extra},
        template_annotations=template_annotations,
        spec=spec,
    )
    if kind == "Pod" and template_annotations:
        obj["metadata"]["annotations"].update(template_annotations)
    reference = {"apiVersion": api_version, "kind": owner_kind, "name": "owner", "uid": "u", "controller": True}
    obj["metadata"]["ownerReferences"] = [reference]
    return obj


NOT_APPLIED = "are not applied"


@pytest.mark.parametrize(
    ("obj", "patched", "warning"),
    [
        pytest.param(
            owned_by("Deployment", "example.com/v1", "Shop"), True, None, id="deployment-owned-by-a-custom-resource"
        ),
        pytest.param(
            owned_by("Deployment", "example.com/v1", "Deployment"),
            True,
            None,
            id="a-custom-kind-named-like-a-built-in-one",
        ),
        pytest.param(owned_by("StatefulSet", "example.com/v1", "Shop"), True, None, id="statefulset-of-an-operator"),
        pytest.param(
            owned_by("ReplicaSet", "argoproj.io/v1alpha1", "Rollout"), True, None, id="replicaset-of-a-rollout"
        ),
        pytest.param(owned_by("Job", "example.com/v1", "Pipeline"), True, None, id="job-of-an-operator"),
        pytest.param(owned_by("Pod", "argoproj.io/v1alpha1", "Workflow"), True, None, id="pod-of-a-workflow"),
        pytest.param(
            owned_by("ReplicaSet", "apps/v1", "Deployment", linked=True), False, None, id="deployment-replicaset"
        ),
        pytest.param(owned_by("Job", "batch/v1", "CronJob", linked=True), False, None, id="cronjob-job"),
        pytest.param(owned_by("Pod", "apps/v1", "ReplicaSet", linked=True), False, None, id="replicaset-pod"),
        pytest.param(owned_by("Pod", "batch/v1", "Job", linked=True), False, None, id="job-pod"),
        pytest.param(owned_by("Pod", "apps/v1", "StatefulSet", linked=True), False, None, id="statefulset-pod"),
        pytest.param(owned_by("Pod", "apps/v1", "DaemonSet", linked=True), False, None, id="daemonset-pod"),
        pytest.param(
            owned_by("ReplicaSet", "apps/v1", "Deployment"),
            False,
            "link annotations on this ReplicaSet are not applied: deployment/owner makes it from its own pod "
            "template; annotate deployment/owner (or the workload that owns it) instead",
            id="a-link-put-on-a-deployment-replicaset",
        ),
        pytest.param(owned_by("Pod", "apps/v1", "ReplicaSet"), False, NOT_APPLIED, id="a-link-its-template-lacks"),
        pytest.param(
            owned_by("Job", "batch/v1", "CronJob", linked=True, **{LINK + "BAD": "no-key"}),
            False,
            NOT_APPLIED,
            id="a-copy-is-never-refused",
        ),
    ],
)
def test_links_apply_whoever_owns_the_object_except_copies_of_a_built_in_controllers_template(
    obj: JsonObject, patched: bool, warning: str | None
) -> None:
    result = link_object(obj, kind=obj["kind"], namespace="shop", secret_keys=lambda _namespace, _name: None)

    assert (env_of(result.obj) != env_of(obj)) is patched
    if patched:
        assert env_of(result.obj) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
    unapplied = [w for w in result.warnings if NOT_APPLIED in w]
    if warning is None:
        assert unapplied == []
    else:
        assert len(unapplied) == 1
        assert warning in unapplied[0]


async def test_a_deployment_owned_by_a_custom_resource_is_linked_through_the_webhook(webhook: Client) -> None:
    result, response = await linked(webhook, owned_by("Deployment", "example.com/v1", "Shop"))

    assert env_of(result) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]
    assert "warnings" not in response


@pytest.mark.parametrize(
    ("annotations", "spec", "expected"),
    [
        pytest.param(
            {LINK + "API_KEY": "stripe"},
            None,
            [LINK + "API_KEY", "is not <secret>/<key>", LINK + "API_KEY=stripe/"],
            id="value-without-key",
        ),
        pytest.param({LINK + "API_KEY": "Stripe/KEY"}, None, ["is not <secret>/<key>"], id="uppercase-secret-name"),
        pytest.param({LINK + "API_KEY": "stripe/"}, None, ["is not <secret>/<key>"], id="empty-key"),
        pytest.param({LINK + "API_KEY": "stripe/a b"}, None, ["is not <secret>/<key>"], id="key-with-space"),
        pytest.param(
            {LINK + "1PASS": "stripe/KEY"},
            None,
            [LINK + "1PASS", "not a valid env var name"],
            id="var-starts-with-digit",
        ),
        pytest.param(
            {LINK + "MY-VAR": "stripe/KEY"}, None, ["'MY-VAR' is not a valid env var name"], id="var-with-dash"
        ),
        pytest.param(
            {LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", "secrets.smll.io/containers": "web,sidecar"},
            None,
            ["secrets.smll.io/containers", "no container named sidecar", "its containers: web"],
            id="unknown-container",
        ),
        pytest.param(
            {LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", "secrets.smll.io/containers": " , "},
            None,
            ["secrets.smll.io/containers", "names no container"],
            id="empty-containers",
        ),
        pytest.param(
            {LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"},
            make_pod_spec(container("web", env=[{"name": "API_KEY", "value": "hand-set"}])),
            [LINK + "API_KEY", "container 'web' already sets API_KEY by hand"],
            id="var-set-by-hand",
        ),
    ],
)
async def test_bad_links_are_denied_with_a_message_that_names_the_annotation_and_the_fix(
    webhook: Client, annotations: dict[str, str], spec: JsonObject | None, expected: list[str]
) -> None:
    response = await send(webhook, admission_review(workload(annotations=annotations, spec=spec)))

    assert response["allowed"] is False
    for part in expected:
        assert part in response["status"]["message"]


async def test_every_malformed_annotation_is_named_in_one_denial(webhook: Client) -> None:
    annotations = {LINK + "A": "nope", LINK + "B": "also-nope"}

    response = await send(webhook, admission_review(workload(annotations=annotations)))

    assert LINK + "A" in response["status"]["message"]
    assert LINK + "B" in response["status"]["message"]


async def test_a_hand_set_var_that_already_equals_the_link_is_adopted_not_denied(webhook: Client) -> None:
    spec = make_pod_spec(container("web", env=[ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]))

    result, _ = await linked(webhook, workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}, spec=spec))

    assert env_of(result) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


@pytest.mark.parametrize(
    ("value", "warning"),
    [
        pytest.param("missing/KEY_NAME", "Secret 'missing' does not exist in namespace 'shop' yet", id="no-secret"),
        pytest.param("stripe/OTHER_KEY", "Secret 'stripe' has no key 'OTHER_KEY' yet", id="no-key"),
        pytest.param("stripe/KEY_1", "key name 'KEY_1' says little", id="vague-key-name"),
    ],
)
async def test_links_that_cannot_work_yet_are_allowed_with_a_warning(webhook: Client, value: str, warning: str) -> None:
    result, response = await linked(webhook, workload(annotations={LINK + "API_KEY": value}))

    assert env_of(result)[0]["name"] == "API_KEY"
    assert any(warning in w for w in response["warnings"]), response["warnings"]


async def test_a_pod_update_never_patches_the_immutable_pod_spec(webhook: Client) -> None:
    pod, _ = await linked(webhook, workload("Pod", annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY"}))
    edited = copy.deepcopy(pod)
    edited["metadata"]["annotations"][LINK + "DB"] = "db/DATABASE_URL"

    response = await send(webhook, admission_review(edited, operation="UPDATE", old=pod))

    assert response["allowed"]
    assert "patch" not in response
    assert any("re-created" in w for w in response["warnings"])


async def test_annotation_keys_with_slashes_and_tildes_are_patched_correctly(webhook: Client) -> None:
    obj = workload(annotations={LINK + "API_KEY": "stripe/STRIPE_SECRET_KEY", "example.com/a~b": "x"})

    result, _ = await linked(webhook, obj)

    assert result["metadata"]["annotations"]["example.com/a~b"] == "x"
    assert env_of(result) == [ref("API_KEY", "stripe", "STRIPE_SECRET_KEY")]


def test_a_link_padded_past_the_cache_limit_still_parses_and_is_not_cached() -> None:
    padded = " " * CACHED_UP_TO + "stripe/STRIPE_SECRET_KEY"
    before = _cached_link.cache_info().currsize

    link = parse_link("env.secrets.smll.io/API_KEY", padded)

    assert (link.secret, link.key) == ("stripe", "STRIPE_SECRET_KEY")
    assert _cached_link.cache_info().currsize == before
