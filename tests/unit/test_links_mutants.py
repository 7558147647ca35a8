"""Linking where mutation testing found it untested (docs/mutation.md): what a user set by hand in a container's env
is never dropped or overwritten, and only what the product put there goes when a link goes."""

from __future__ import annotations

import json

import pytest

from rules.links import Link, LinkDenied, LinkRequest, apply_links
from rules.names import MANAGED_ENV
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
