"""docs/reference.md names everything the product has: the names are collected from the code itself (the constants of
rules.names, the argparse parsers of both processes and the plugin, values.yaml, the CRD, the Event reasons passed
to the recording calls, the metric objects, the routes) and each must stand, in backticks, in its section of the
doc. A name counts as there when a backticked span equals it, or equals it once its ``<placeholders>`` are taken out
(``env.secrets.smll.io/<VAR>`` names the prefix ``env.secrets.smll.io/``)."""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import controller.__main__ as controller_cli
import rules.names
from controller.frame.metrics import ControllerMetrics
from kubectl_smll.main import parser as plugin_parser
from webhook.__main__ import parser as webhook_parser
from webhook.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reference.md"
VALUES = ROOT / "charts" / "smll-secrets" / "values.yaml"
CRD = ROOT / "charts" / "smll-secrets" / "crds" / "databases.smll.io.yaml"
# Kubernetes' ResourceRequirements: documented as one value, not leaf by leaf.
WHOLE_VALUES = frozenset({"webhook.resources", "controller.resources"})


# ---- reading the doc ------------------------------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line, e.g. ``## Metrics``) up to the next heading of its level or
    above."""
    lines = text.splitlines()
    assert heading in lines, f"docs/reference.md has no heading {heading!r}"
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if re.match(rf"^#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end])


def spans(text: str) -> set[str]:
    found = set(re.findall(r"`([^`\n]+)`", text))
    return found | {re.sub(r"<[^>]*>", "", span) for span in found}


def missing(names: Iterable[str], text: str) -> list[str]:
    there = spans(text)
    return sorted({name for name in names if name not in there})


def doc() -> str:
    return DOC.read_text()


# ---- collecting the names from the code -----------------------------------------------------------------------


def python_files(*packages: str) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def names_constants() -> set[str]:
    """Every public string constant of rules.names: annotation and label names, their values, prefixes, fixed
    names."""
    return {value for key, value in vars(rules.names).items() if key.isupper() and isinstance(value, str)}


def module_constants(*packages: str) -> Iterator[tuple[str, ast.expr]]:
    """``NAME = <value>`` at the top of every module of ``packages``."""
    for _, tree in python_files(*packages):
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                yield node.targets[0].id, node.value


def secret_keys() -> set[str]:
    """Module-level ``*_KEY`` and ``*KEYS`` string constants (or tuples of them) of the core and the controller: the
    keys of the Secrets the product makes and reads."""
    return {
        key
        for name, value in module_constants("rules", "controller")
        if name.endswith(("_KEY", "KEYS")) and isinstance(value, ast.Constant | ast.Tuple)
        for key in strings(value)
    }


def api_names() -> set[str]:
    wanted = {"GROUP", "VERSION", "VIEWS", "VIEW_KIND", "WRITES", "WRITE_KIND"}
    return {
        text
        for name, value in module_constants("rules", "webhook")
        if name in wanted and isinstance(value, ast.Constant)
        for text in strings(value)
    }


# Calls that record an Event or set the Ready condition, or build an Event to record, the reason among their
# positional arguments.
RECORDING = frozenset({"record_event", "event", "_record", "status"})
REASON = re.compile(r"^[A-Z][A-Za-z]+$")
CONDITION_STATUSES = frozenset({"True", "False", "Unknown"})


def _called(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _target_names(node: ast.Assign | ast.AnnAssign) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else "" for t in targets]


def reasons() -> dict[str, str]:
    """Event and condition reasons → where: string literals given as ``reason=`` to any call, as positional
    arguments of the recording calls (or of any call whose name says Event), or assigned to a name ending in
    ``reason``."""
    found: dict[str, str] = {}
    for path, tree in python_files("controller", "rules"):
        for node in ast.walk(tree):
            candidates: list[str] = []
            if isinstance(node, ast.Call):
                candidates += [s for kw in node.keywords if kw.arg == "reason" for s in strings(kw.value)]
                called = _called(node.func)
                if called in RECORDING or "event" in called.lower():
                    candidates += [s for a in node.args if isinstance(a, ast.Constant | ast.IfExp) for s in strings(a)]
            elif (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and node.value is not None
                and any(name.lower().endswith("reason") for name in _target_names(node))
            ):
                candidates += strings(node.value)
            for candidate in candidates:
                if REASON.match(candidate) and candidate not in CONDITION_STATUSES:
                    found.setdefault(candidate, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}")
    return found


def condition_types() -> set[str]:
    """The ``type`` of every condition literal (a dict with ``type`` and ``status``) the product writes."""
    found: set[str] = set()
    for _, tree in python_files("rules", "controller"):
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value: v for k, v in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant)}
                if "type" in keys and "status" in keys and isinstance(keys["type"], ast.Constant):
                    found.update(strings(keys["type"]))
    return found


def metric_names() -> set[str]:
    """The names the metric objects expose (a counter's with ``_total``)."""
    found: set[str] = set()
    for metrics in (Metrics(), ControllerMetrics()):
        for family in metrics.registry.collect():
            found.add(family.name + "_total" if family.type == "counter" else family.name)
    return found


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def controller_parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``python -m controller`` builds, taken at the moment it parses."""

    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", grab)
        with pytest.raises(_Parsed) as parsed:
            controller_cli.main([])
    return parsed.value.parser


def flags(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= flags(sub)
        found.update(option for option in action.option_strings if option not in ("-h", "--help"))
    return found


def commands(parser: argparse.ArgumentParser, prefix: str) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                below = commands(sub, f"{prefix} {name}")
                found |= below or {f"{prefix} {name}"}
    return found


def value_paths(tree: Any, prefix: str = "") -> set[str]:
    """The leaf key paths of values.yaml (an empty map or a list is a leaf; WHOLE_VALUES are leaves)."""
    if not isinstance(tree, dict) or not tree or prefix in WHOLE_VALUES:
        return {prefix}
    return {path for key, value in tree.items() for path in value_paths(value, f"{prefix}.{key}" if prefix else key)}


def crd_names() -> set[str]:
    crd = yaml.safe_load(CRD.read_text())
    names = crd["spec"]["names"]
    found = {crd["spec"]["group"], names["kind"], names["plural"], names["singular"]}
    found |= set(names.get("shortNames", [])) | set(names.get("categories", []))
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]["properties"]
        for part in ("spec", "status"):
            found |= {f"{part}.{field}" for field in schema[part]["properties"]}
    return found


def server_fields() -> set[str]:
    """The fields of one server in the ``--database-config`` file: what the loader reads of ``spec``."""
    found: set[str] = set()
    path = ROOT / "controller" / "databases" / "config.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            owner, args = node.func.value, node.args
        elif isinstance(node, ast.Subscript):
            owner, args = node.value, [node.slice]
        else:
            continue
        if isinstance(owner, ast.Name) and owner.id == "spec" and args and isinstance(args[0], ast.Constant):
            found.update(strings(args[0]))
    return found


def routes() -> set[str]:
    found: set[str] = set()
    for _, tree in python_files("webhook", "controller"):
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("add_get", "add_post", "add_put", "add_delete")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.update(strings(node.args[0]))
    return found


# ---- the checks -----------------------------------------------------------------------------------------------


def test_every_name_of_rules_names_is_in_the_reference() -> None:
    names = names_constants()
    assert {"secrets.smll.io/protection", "smll.io/secret-type", "smll.io/vpc", "registry"} <= names
    assert missing(names, section(doc(), "## Annotations, labels and names")) == []


def test_every_key_of_the_secrets_the_product_makes_is_in_the_reference() -> None:
    keys = secret_keys()
    assert {"POSTGRES_PASSWORD", "DATABASE_URL", "REGISTRY_URL", ".dockerconfigjson", "htpasswd"} <= keys
    assert missing(keys, section(doc(), "## Secrets the product makes, and their keys")) == []


def test_the_database_kind_its_fields_and_its_condition_types_are_in_the_reference() -> None:
    names = crd_names() | condition_types()
    assert {"Database", "spec.server", "status.secretUID", "status.login", "Ready"} <= names
    assert missing(names, section(doc(), "## The `Database` kind")) == []


def test_every_event_and_condition_reason_is_in_the_reference() -> None:
    found = reasons()
    known = {"SecretChanged", "RolloutHeld", "Provisioned", "RoleConflict", "ServerUnavailable"}
    assert known <= set(found), f"reasons() no longer finds {sorted(known - set(found))}: where are they given now?"
    text = section(doc(), "## Event reasons") + section(doc(), "### Condition types and reasons")
    assert [f"{reason} ({found[reason]})" for reason in missing(found, text)] == []


def test_every_metric_is_in_the_reference() -> None:
    names = metric_names()
    assert {"smll_admission_reviews_total", "smll_rollouts_total", "smll_leader"} <= names
    assert missing(names, section(doc(), "## Metrics")) == []


def test_the_write_only_api_s_resources_are_in_the_reference() -> None:
    names = api_names()
    assert {"secrets.smll.io", "writeonlysecrets", "SecretWrite"} <= names
    assert missing(names, section(doc(), "## The write-only API")) == []


def flag_sections(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    return {
        "### `python -m webhook`": flags(webhook_parser()),
        "### `python -m controller`": flags(controller_parser(monkeypatch)),
        "### `kubectl smll`": flags(plugin_parser()) | commands(plugin_parser(), "kubectl smll"),
    }


def test_every_flag_of_both_processes_and_the_plugin_is_in_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    found = flag_sections(monkeypatch)
    assert {"--client-ca-file", "--api-allowed-type", "--tls-mode"} <= found["### `python -m webhook`"]
    assert {"--registry-token-port", "--database-config", "--log-format"} <= found["### `python -m controller`"]
    assert {"kubectl smll secrets set", "--as-group", "-A"} <= found["### `kubectl smll`"]
    for heading, names in found.items():
        assert (heading, missing(names, section(doc(), heading))) == (heading, [])


def test_no_flag_in_the_reference_is_one_its_command_does_not_have(monkeypatch: pytest.MonkeyPatch) -> None:
    for heading, names in flag_sections(monkeypatch).items():
        listed = {span for span in spans(section(doc(), heading)) if re.fullmatch(r"--?[a-zA-Z][-a-z]*", span)}
        assert (heading, sorted(listed - names)) == (heading, [])


def test_every_field_of_the_database_server_file_is_in_the_reference() -> None:
    fields = server_fields()
    assert {"host", "port", "sslmode", "adminSecret", "caSecret"} <= fields
    assert missing(fields, section(doc(), "## The database server file (`--database-config`)")) == []


def test_every_chart_value_is_in_the_reference_and_every_value_there_exists() -> None:
    paths = value_paths(yaml.safe_load(VALUES.read_text()))
    assert {
        "webhook.clientAuth.allowedNames",
        "secretsApi.allowedTypes",
        "controller.registry.tokens.caSecret",
    } <= paths
    text = section(doc(), "## Chart values")
    assert missing(paths, text) == []
    rows = {m for m in re.findall(r"^\| `([^`]+)` \|", text, re.M)}
    assert sorted(rows - paths) == []


def test_every_http_endpoint_is_in_the_reference() -> None:
    paths = routes()
    assert {"/mutate", "/validate", "/token", "/readyz"} <= paths
    assert missing(paths, section(doc(), "## HTTP endpoints")) == []


def test_a_name_taken_out_of_the_reference_is_reported() -> None:
    """The check itself: without its row, a flag, a reason, a chart value and an annotation are missing."""
    text = doc()
    for name in ("--api-allowed-type", "CredentialsRestored", "secretsApi.allowedTypes", "secrets.smll.io/rotate"):
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))
        assert missing([name], text) == []
        assert missing([name], text.replace(row + "\n", "")) == [name]
