"""The chart's part in Database tenancy: no role a tenant is handed by aggregation reaches databases/status (where
the controller records the Secret it made), and a server's caSecret reaches the controller's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.databases.config import load_servers
from tests.unit.test_chart import COMBINATIONS, helm, one, render

__all__ = ["helm"]  # the fixture, shared with the chart tests

AGGREGATED_TO_TENANTS = ("aggregate-to-edit", "aggregate-to-admin", "aggregate-to-view")


def reaches_database_status(rule: dict[str, Any]) -> bool:
    groups, resources = rule.get("apiGroups") or [], rule.get("resources") or []
    return bool({"smll.io", "*"} & set(groups)) and bool({"databases/status", "databases/*", "*"} & set(resources))


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_no_role_aggregated_into_the_tenants_roles_reaches_database_status(helm: Path, combination: str) -> None:
    docs = render(helm, COMBINATIONS[combination])
    aggregated = [
        doc
        for doc in docs
        if doc["kind"] == "ClusterRole"
        and any(label.endswith(AGGREGATED_TO_TENANTS) for label in (doc["metadata"].get("labels") or {}))
    ]

    if combination == "everything":
        assert aggregated, "the writer and viewer roles are aggregated into edit, admin and view: checked here"
    assert [
        (doc["metadata"]["name"], rule)
        for doc in aggregated
        for rule in doc.get("rules") or []
        if reaches_database_status(rule)
    ] == []


def test_a_servers_ca_secret_reaches_the_controllers_config(helm: Path, tmp_path: Path) -> None:
    server = {"host": "pg.db.svc", "sslmode": "verify-full", "adminSecret": "pg-admin", "caSecret": "pg-ca"}
    docs = render(helm, {"controller": {"databases": {"servers": {"default": server}}}})
    config = tmp_path / "databases.yaml"
    config.write_text(one(docs, "ConfigMap", "smll-secrets-databases")["data"]["databases.yaml"])

    [found] = load_servers(config).values()

    assert (found.sslmode, found.ca_secret) == ("verify-full", "pg-ca")
