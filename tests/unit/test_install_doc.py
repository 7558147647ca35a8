"""docs/install.md shows the values the e2e tests and the demo install with (devenv.incluster.chart_values): the
same keys, and the same settings wherever the local environment has no reason to differ."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from devenv.incluster import chart_values

DOC = Path(__file__).resolve().parents[2] / "docs" / "install.md"


class _Registry:
    url = "http://10.244.0.1:5000"


class _Postgres:
    port = 5432


class _Platform:
    vpc_registry = _Registry()
    cluster_registry = None  # the host's registry, as the e2e tests install with
    postgres = _Postgres()
    apiserver_client_ca = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"


def _keys(tree: Any, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return {key for name, value in tree.items() for key in _keys(value, f"{prefix}.{name}" if prefix else name)}


def documented_values() -> dict[str, Any]:
    text = DOC.read_text()
    block = re.search(r"`values\.yaml`:\n\n```yaml\n(.*?)```", text, re.S)
    assert block is not None, "docs/install.md has no values.yaml block"
    values = yaml.safe_load(block.group(1))
    assert isinstance(values, dict)
    return values


def test_the_documented_values_have_exactly_the_keys_the_tests_install_with() -> None:
    tested = chart_values(_Platform(), "127.0.0.1:5000/smll-secrets:dev-0", replicas=2)  # type: ignore[arg-type]
    assert _keys(documented_values()) == _keys(tested)


def test_the_documented_values_match_the_tested_ones_where_nothing_local_differs() -> None:
    tested = chart_values(_Platform(), "127.0.0.1:5000/smll-secrets:dev-0", replicas=2)  # type: ignore[arg-type]
    documented = documented_values()
    for path in (
        "image.pullPolicy",
        "replicaCount",
        "logLevel",
        "controller.settleSeconds",
        "controller.registry.htpasswdSecret.name",
        "controller.databases.servers.default.adminSecret",
    ):

        def at(tree: dict[str, Any], dotted: str) -> Any:
            for part in dotted.split("."):
                tree = tree[part]
            return tree

        assert at(documented, path) == at(tested, path), path


def test_every_helm_command_in_the_doc_names_the_chart_and_namespace_the_tests_use() -> None:
    commands = [line for line in DOC.read_text().splitlines() if line.startswith("helm ")]
    assert commands
    assert all("-n smll-system" in command for command in commands), commands
