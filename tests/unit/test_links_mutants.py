"""Linking where mutation testing found it untested (docs/mutation.md): what a user set by hand in a container's env
is never dropped or overwritten, and only what the product put there goes when a link goes."""

from __future__ import annotations

import json

import pytest

from rules.links import CACHED_UP_TO, Link, LinkDenied, LinkRequest, apply_links, link_object, parse_link, parse_links
from rules.names import CONTAINERS, MANAGED_ENV
from tests.factories import JsonObject

STRIPE = Link("API_KEY", "stripe", "KEY")
LINKED = STRIPE.env_entry()
HAND = {"name": "MODE", "value": "live"}
HAND_API_KEY = {"name": "API_KEY", "value": "set-by-hand"}


def template(env: list[JsonObject] | None, managed: dict[str, list[str]] | None = None) -> JsonObject:
    web: JsonObject = {"name": "web", "image": "registry.invalid/web:1"}
    if env is not None:
        web["env"] = env
    metadata: JsonObject = {"annotations": {MANAGED_ENV: json.dumps(managed)}} if managed is not None else {}
    return {"metadata": metadata, "spec": {"containers": [web]}}


def env_after(found: JsonObject, *links: Link) -> list[JsonObject] | None:
    apply_links(found, LinkRequest(links={link.var: link for link in links}, containers=None))
    env: list[JsonObject] | None = found["spec"]["containers"][0].get("env")
    return env


@pytest.mark.parametrize(
    ("before", "managed", "links", "after"),
    [
        pytest.param([HAND], None, [STRIPE], [HAND, LINKED], id="a-hand-set-var-stays-and-the-link-is-added-after-it"),
        pytest.param([HAND, LINKED], {"web": ["API_KEY"]}, [], [HAND], id="unlinking-drops-only-the-linked-var"),
        pytest.param(
            [LINKED, HAND, LINKED], {"web": ["API_KEY"]}, [STRIPE], [LINKED, HAND], id="a-linked-var-is-kept-once"
        ),
        pytest.param([HAND_API_KEY], None, [], [HAND_API_KEY], id="a-hand-set-var-no-link-names-is-left-alone"),
        pytest.param(
            [HAND_API_KEY], {"web": ["OTHER"]}, [], [HAND_API_KEY], id="a-record-of-another-var-drops-nothing-else"
        ),
        pytest.param([LINKED], None, [STRIPE], [LINKED], id="a-var-set-by-hand-exactly-as-the-link-would-is-taken"),
        pytest.param([HAND_API_KEY], {"web": ["API_KEY"]}, [STRIPE], [LINKED], id="a-var-the-product-set-is-replaced"),
        pytest.param(None, None, [], None, id="no-env-stays-no-env"),
        pytest.param([LINKED], {"web": ["API_KEY"]}, [], None, id="the-last-linked-var-gone-leaves-no-empty-env"),
    ],
)
def test_what_linking_leaves_in_a_container_s_env(
    before: list[JsonObject] | None,
    managed: dict[str, list[str]] | None,
    links: list[Link],
    after: list[JsonObject] | None,
) -> None:
    assert env_after(template(before, managed), *links) == after


@pytest.mark.parametrize(
    "before",
    [
        pytest.param([HAND_API_KEY], id="alone"),
        pytest.param([HAND, HAND_API_KEY], id="after-another-var"),
        pytest.param([LINKED, HAND_API_KEY], id="beside-an-entry-equal-to-the-link"),
    ],
)
def test_a_link_over_a_var_set_by_hand_is_refused_and_says_what_to_do(before: list[JsonObject]) -> None:
    found = template(list(before))

    with pytest.raises(LinkDenied) as denied:
        env_after(found, STRIPE)

    assert denied.value.problems == (
        f"annotation {STRIPE.annotation}: container 'web' already sets API_KEY by hand; "
        "remove that env entry or use another var name",
    )
    assert found["spec"]["containers"][0]["env"] == before


def test_the_record_names_the_vars_the_product_put_in_each_container() -> None:
    found = template([HAND])

    env_after(found, STRIPE)

    assert json.loads(found["metadata"]["annotations"][MANAGED_ENV]) == {"web": ["API_KEY"]}


def pod(env: list[JsonObject], *, containers: list[object] | None = None) -> JsonObject:
    found = template(env)
    found["kind"] = "Pod"
    found["metadata"] = {"name": "p", "annotations": {STRIPE.annotation: "stripe/KEY"}}
    if containers is not None:
        found["spec"]["containers"] += containers
    return found


def no_keys(namespace: str, name: str) -> frozenset[str] | None:
    return frozenset({"KEY"})


def test_an_existing_pod_whose_link_a_hand_set_var_blocks_is_neither_refused_nor_warned() -> None:
    linked = link_object(pod([HAND_API_KEY]), kind="Pod", namespace="shop", secret_keys=no_keys, operation="UPDATE")

    assert linked.warnings == []


def test_a_container_list_with_something_that_is_not_a_container_is_linked_around_it() -> None:
    linked = link_object(pod([], containers=["nonsense"]), kind="Pod", namespace="shop", secret_keys=no_keys)

    assert linked.obj["spec"]["containers"][1] == "nonsense"
    assert linked.obj["spec"]["containers"][0]["env"] == [LINKED]


def test_a_pod_without_metadata_gets_the_record_of_what_was_linked() -> None:
    found: JsonObject = {"spec": {"containers": [{"name": "web"}]}}

    apply_links(found, LinkRequest(links={"API_KEY": STRIPE}, containers=None))

    assert json.loads(found["metadata"]["annotations"][MANAGED_ENV]) == {"web": ["API_KEY"]}


def test_every_container_s_hand_set_var_is_named_in_the_refusal() -> None:
    found = template([HAND_API_KEY])
    found["spec"]["containers"].append({"name": "worker", "env": [HAND_API_KEY]})

    with pytest.raises(LinkDenied) as denied:
        env_after(found, STRIPE)

    assert [problem.split(":")[1] for problem in denied.value.problems] == [
        " container 'web' already sets API_KEY by hand; remove that env entry or use another var name",
        " container 'worker' already sets API_KEY by hand; remove that env entry or use another var name",
    ]
    assert str(denied.value) == "; ".join(denied.value.problems)


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        pytest.param(
            {"spec": "nonsense"}, "the object has no pod spec to link env vars into", id="a-spec-that-is-no-object"
        ),
        pytest.param(
            {"metadata": "nonsense", "spec": {"containers": [{"name": "web"}]}},
            "the pod template's metadata is not an object",
            id="metadata-that-is-no-object",
        ),
    ],
)
def test_a_malformed_template_is_refused_with_what_is_wrong(found: JsonObject, problem: str) -> None:
    with pytest.raises(LinkDenied) as denied:
        env_after(found, STRIPE)

    assert denied.value.problems == (problem,)


@pytest.mark.parametrize(
    ("containers", "problem"),
    [
        pytest.param(
            [{"name": "web"}, {"name": "worker"}],
            "the pod has no container named db, cache (its containers: web, worker)",
            id="names-what-is-missing-and-what-there-is",
        ),
        pytest.param([], "the pod has no container named db, cache (its containers: none)", id="a-pod-of-none"),
    ],
)
def test_a_containers_annotation_naming_no_such_container_says_which_exist(
    containers: list[JsonObject], problem: str
) -> None:
    found: JsonObject = {"metadata": {}, "spec": {"containers": containers}}

    with pytest.raises(LinkDenied) as denied:
        apply_links(found, LinkRequest(links={"API_KEY": STRIPE}, containers=("db", "cache")))

    assert denied.value.problems == (
        f"annotation {CONTAINERS}: {problem}; name existing containers or remove the annotation",
    )


def test_a_link_too_long_to_be_cached_keeps_its_var() -> None:
    padded = "stripe/KEY" + " " * CACHED_UP_TO

    assert parse_link(STRIPE.annotation, padded) == STRIPE


def test_an_env_that_is_not_a_list_is_left_as_it_is_when_nothing_is_linked() -> None:
    found = template(None)
    found["spec"]["containers"][0]["env"] = "nonsense"

    env_after(found)

    assert found["spec"]["containers"][0]["env"] == "nonsense"


def test_annotations_that_sort_before_the_links_do_not_hide_them() -> None:
    found = {"app.kubernetes.io/name": "web", STRIPE.annotation: "stripe/KEY", "zz.example.com/note": "x"}

    assert parse_links(found) == {"API_KEY": STRIPE}


def test_an_existing_pod_whose_links_would_change_it_is_told_they_wait_for_a_new_pod() -> None:
    linked = link_object(pod([]), kind="Pod", namespace="shop", secret_keys=no_keys, operation="UPDATE")

    assert linked.warnings == ["link annotations on an existing Pod take effect only when the Pod is re-created"]


def test_unlinking_leaves_no_empty_annotations_behind() -> None:
    found = template([HAND])
    found["metadata"]["annotations"] = {}

    env_after(found)

    assert "annotations" not in found["metadata"]
