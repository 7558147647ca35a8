"""The write-only API's protocol (webhook/apiprotocol.py): the Table, the front proxy's identity, the access review,
discovery. The plans and views they carry are tested in test_secretsapi_rules.py."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from rules import secretsapi as api
from webhook import apiprotocol

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)


def secret(data: dict[str, str], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "stripe", "namespace": "shop", "resourceVersion": "7", **metadata},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_the_table_has_the_printer_columns_and_one_row_per_secret() -> None:
    view = api.secret_view(secret({"A": "1", "B": "2"}, creationTimestamp="2026-11-27T11:00:00Z"), [], {}, NOW)
    table = apiprotocol.table([view], NOW, "9")
    assert [c["name"] for c in table["columnDefinitions"]] == [name for name, _, _ in apiprotocol.COLUMNS]
    assert table["rows"][0]["cells"] == ["stripe", "custom", "A,B", 0, "60m", 1, "60m"]
    assert table["rows"][0]["object"]["metadata"]["name"] == "stripe"
    assert table["metadata"]["resourceVersion"] == "9"


# ---- the front proxy and authorization ---------------------------------------------------------------------------


def test_the_front_proxy_settings_come_from_the_configmap() -> None:
    config = apiprotocol.front_proxy(
        {
            "requestheader-client-ca-file": "PEM",
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
            "requestheader-uid-headers": '["X-Remote-Uid"]',
        }
    )
    assert config == apiprotocol.FrontProxy(
        "PEM", frozenset({"front-proxy-client"}), ("X-Remote-User",), ("X-Remote-Uid",)
    )
    assert apiprotocol.front_proxy({"client-ca-file": "PEM"}) is None


def test_the_identity_is_what_the_front_proxy_says() -> None:
    config = apiprotocol.FrontProxy("PEM", uid_headers=("X-Remote-Uid",))
    who = apiprotocol.identity(
        config,
        [
            ("X-Remote-User", "alice"),
            ("x-remote-group", "devs"),
            ("X-Remote-Group", "system:authenticated"),
            ("X-Remote-Uid", "42"),
            ("X-Remote-Extra-Scopes", "a"),
            ("X-Remote-Extra-Example.com%2fteam", "b"),
            ("X-Other", "ignored"),
        ],
    )
    assert who == apiprotocol.Identity(
        "alice", "42", ("devs", "system:authenticated"), {"scopes": ("a",), "example.com/team": ("b",)}
    )
    assert apiprotocol.identity(config, [("X-Remote-Group", "devs")]) is None


def test_every_request_is_reviewed_on_the_api_s_own_resources() -> None:
    who = apiprotocol.Identity("alice", "42", ("devs",), {"scopes": ("a",)})
    review = apiprotocol.access_review(who, "create", api.WRITES, "shop")
    assert review["spec"] == {
        "user": "alice",
        "uid": "42",
        "groups": ["devs"],
        "extra": {"scopes": ["a"]},
        "resourceAttributes": {"verb": "create", "group": "secrets.smll.io", "version": "v1alpha1",
                               "resource": "secretwrites", "namespace": "shop"},
    }  # fmt: skip
    cluster_wide = apiprotocol.access_review(apiprotocol.Identity("bob"), "list", api.VIEWS, "")
    assert "namespace" not in cluster_wide["spec"]["resourceAttributes"]
    refusal = apiprotocol.forbidden(who, "list", api.VIEWS, "shop", "", "no RBAC policy matched")
    assert refusal.code == 403
    assert refusal.message == (
        'writeonlysecrets.secrets.smll.io is forbidden: User "alice" cannot list resource "writeonlysecrets" in API '
        'group "secrets.smll.io" in the namespace "shop": no RBAC policy matched'
    )


def test_discovery_names_both_resources() -> None:
    resources = {r["name"]: r for r in apiprotocol.api_resources()["resources"]}
    assert resources[api.VIEWS]["verbs"] == ["delete", "get", "list"]
    assert resources[api.WRITES]["verbs"] == ["create"]
    assert apiprotocol.api_group()["preferredVersion"]["groupVersion"] == "secrets.smll.io/v1alpha1"
