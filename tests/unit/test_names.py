"""The shapes of names Kubernetes accepts, by table: a name is all of the string, so a trailing newline (which a
``$`` at the end of a pattern lets through) is refused like any other character out of place."""

from __future__ import annotations

import re

import pytest

from rules.names import (
    ENV_VAR,
    SECRET_KEY,
    SECRET_NAME,
    is_dns_subdomain,
    is_namespace_name,
    is_secret_key,
    is_secret_name,
)


@pytest.mark.parametrize(
    ("name", "namespace", "subdomain", "key"),
    [
        ("shop", True, True, True),
        ("orders-db.v1", False, True, True),
        ("API_KEY", False, False, True),
        ("shop\n", False, False, False),
        ("orders-db.v1\n", False, False, False),
        ("API_KEY\n", False, False, False),
        ("\nshop", False, False, False),
        ("sh\nop", False, False, False),
        ("shop\r", False, False, False),
        ("", False, False, False),
        ("..", False, False, False),
        ("a" * 63, True, True, True),
        ("a" * 64, False, True, True),
        ("a" * 254, False, False, False),
    ],
    ids=repr,
)
def test_a_name_is_the_whole_string(name: str, namespace: bool, subdomain: bool, key: bool) -> None:
    assert is_namespace_name(name) is namespace
    assert is_dns_subdomain(name) is subdomain
    assert is_secret_name(name) is subdomain
    assert is_secret_key(name) is key


@pytest.mark.parametrize("pattern", [SECRET_NAME, SECRET_KEY, ENV_VAR], ids=lambda p: p.pattern)
def test_a_pattern_used_with_match_refuses_a_trailing_newline(pattern: object) -> None:
    """rules/links.py matches ENV_VAR with ``.match``: the pattern itself must end at the end of the string."""
    assert isinstance(pattern, re.Pattern)
    assert pattern.match("abc") is not None
    assert pattern.match("abc\n") is None
