"""One definition of a vague key name: the mutating webhook's warning and the write-only API's advice agree."""

from __future__ import annotations

import datetime

import pytest

from rules import secretsapi
from rules.keynames import vague_key
from rules.links import link_request, link_warnings
from rules.names import LINK_PREFIX

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)

NAMES = [
    ("AUTH_TOKEN", True),
    ("KEY_1", True),
    ("KEY", True),
    ("SECRET", True),
    ("TOKEN", True),
    ("PASSWORD2", True),
    ("key.2", True),
    ("MyToken", True),
    ("SECRET_VALUE", True),
    ("STRIPE_SECRET_KEY", False),
    ("DATABASE_URL", False),
    ("API_KEY", False),
    ("githubToken", False),
    ("SMTP_PASSWORD", False),
]


def webhook_warns(key: str) -> bool:
    request = link_request({LINK_PREFIX + "APP_VALUE": f"app/{key}"})
    warnings = link_warnings(request, lambda namespace, name: frozenset({key}), "shop")
    return any("says little about what it holds" in warning for warning in warnings)


def api_advises(key: str) -> bool:
    secret = {"metadata": {"name": "app", "namespace": "shop"}, "data": {key: "dg=="}}
    found = secretsapi.advice(secret, secretsapi.KeyUsers({}, {}), {key: NOW}, NOW, datetime.timedelta(days=90))
    return any("use descriptive key names" in advice for advice in found)


@pytest.mark.parametrize(("key", "vague"), NAMES)
def test_the_webhook_and_the_api_agree_on_vague_key_names(key: str, vague: bool) -> None:
    assert vague_key(key) is vague
    assert webhook_warns(key) is vague
    assert api_advises(key) is vague
