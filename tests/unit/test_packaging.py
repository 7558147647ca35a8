"""The wheel holds the product and the kubectl plugin only: the packages setuptools finds with pyproject.toml's
``[tool.setuptools.packages.find]`` (the same discovery ``pip wheel .`` runs) are the product's, every module of the
product is in one of them, and devenv, bench and tests are in none.

By hand: ``.venv/bin/pip wheel --no-deps -w /tmp/wheel .`` and ``unzip -l /tmp/wheel/smll_secrets-*.whl``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from setuptools import find_packages  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = {"rules", "kubeio", "webhook", "controller", "kubectl_smll"}
STAYS_IN_THE_REPOSITORY = {"devenv", "bench", "tests"}


def project() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def packaged() -> set[str]:
    setuptools = project()["tool"]["setuptools"]
    find = setuptools["packages"]["find"]
    assert not find.get("namespaces", False), "namespace packages would take in any directory"
    return set(find_packages(where=str(ROOT), include=find.get("include", ["*"]), exclude=find.get("exclude", ())))


def test_the_wheel_holds_the_product_and_the_plugin_only() -> None:
    packages = packaged()
    assert {package.split(".")[0] for package in packages} == PRODUCT
    assert not {package for package in packages if package.split(".")[0] in STAYS_IN_THE_REPOSITORY}


def test_every_module_of_the_product_is_in_a_packaged_package() -> None:
    """A subpackage without ``__init__.py`` would be left out of the wheel silently."""
    packages = packaged()
    for top in PRODUCT:
        for module in (ROOT / top).rglob("*.py"):
            package = ".".join(module.parent.relative_to(ROOT).parts)
            assert package in packages, f"{module.relative_to(ROOT)} would not be in the wheel"


def test_the_console_script_is_in_the_wheel() -> None:
    scripts = project()["project"]["scripts"]
    module = scripts["kubectl-smll"].split(":")[0]
    assert module.rpartition(".")[0] in packaged()


def test_no_package_data_of_what_stays_in_the_repository() -> None:
    data = project()["tool"]["setuptools"].get("package-data", {})
    assert not set(data) & STAYS_IN_THE_REPOSITORY
