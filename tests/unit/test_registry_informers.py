"""The registry loop's informer handlers: which namespaces a change enqueues."""

from __future__ import annotations

import base64

import pytest

from controller.frame.queue import WorkQueue
from controller.registry.caches import Caches, HtpasswdHandler
from controller.registry.config import parse_secret_ref
from controller.registry.verifier import Verifier
from rules import registry as registry_rules


def htpasswd(entries: dict[str, str]) -> dict[str, object]:
    text = registry_rules.format_htpasswd(entries)
    return {
        "metadata": {"namespace": "registry", "name": "htpasswd"},
        "data": {"htpasswd": base64.b64encode(text.encode()).decode()},
    }


def drain(queue: WorkQueue[str]) -> set[str]:
    keys: set[str] = set()
    while True:
        key, _ = queue.try_get()
        if key is None:
            return keys
        keys.add(key)
        queue.done(key)


def test_an_htpasswd_change_enqueues_the_namespaces_whose_entries_changed() -> None:
    caches = Caches(WorkQueue())
    handler = HtpasswdHandler(caches)
    handler.replace([htpasswd({"vpc-a": "h1", "vpc-b": "h2", "ci": "h3"})])
    assert drain(caches.queue) == {"a", "b"}  # a stale entry of a deleted namespace is looked at too

    handler.apply("MODIFIED", htpasswd({"vpc-a": "h1", "vpc-b": "changed", "vpc-c": "h4", "ci": "other"}))
    assert drain(caches.queue) == {"b", "c"}

    handler.apply("DELETED", htpasswd({}))
    assert drain(caches.queue) == {"a", "b", "c"}
    assert caches.htpasswd is None


def test_a_relist_enqueues_every_namespace_and_those_that_went_away() -> None:
    caches = Caches(WorkQueue())
    store = caches.namespaces  # what the informer feeds, each object reduced by the store's compact first
    store.replace([store.compact({"metadata": {"name": "a"}}), store.compact({"metadata": {"name": "b"}})])
    drain(caches.queue)

    store.replace([store.compact({"metadata": {"name": "a"}})])

    assert drain(caches.queue) == {"a", "b"}
    assert set(caches.namespaces) == {"a"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("registry/htpasswd", ("registry", "htpasswd"), id="namespace-and-name"),
        pytest.param("htpasswd", None, id="no-namespace"),
        pytest.param("/htpasswd", None, id="empty-namespace"),
        pytest.param("registry/", None, id="empty-name"),
        pytest.param("a/b/c", None, id="too-many-parts"),
    ],
)
def test_the_htpasswd_secret_is_given_as_namespace_slash_name(value: str, expected: tuple[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="namespace/name"):
            parse_secret_ref(value)
    else:
        assert parse_secret_ref(value) == expected


async def test_the_verifier_remembers_results_without_keeping_the_password() -> None:
    verifier = Verifier()
    hashed = registry_rules.hash_password("right", cost=4)

    await verifier.prime("right", hashed)

    assert verifier("right", hashed)
    assert not verifier("wrong", hashed)
    assert "right" not in repr(verifier.known)
