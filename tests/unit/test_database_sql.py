"""The admin's SQL in controller/databases/postgres.py names only pg_catalog's functions, relations, operators and
casts, so that nothing a tenant creates (in its own database, or in ``public`` of the maintenance database) can be
what a name resolves to — whatever the search_path. Read from the module's source: every string literal, and the
literal parts of every f-string, outside docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from controller.databases import postgres
from rules.database import Server

SOURCE = Path(postgres.__file__)

SQL_WORD = re.compile(r"\b(SELECT|WHERE|FROM|JOIN|ALTER|CREATE|DROP|REASSIGN|COMMENT|GRANT|REVOKE)\b")
QUOTED = re.compile(r"'(?:[^']|'')*'")
# Words written before "(" that are SQL syntax, not a function resolved by the search_path.
SYNTAX = {"ARRAY", "ANY", "OPERATOR", "WITH", "VALUES", "EXISTS"}
PUBLIC_ROLE = {"PUBLIC"}  # REVOKE … FROM PUBLIC: the pseudo-role, not a relation


def literals(tree: ast.AST) -> list[str]:
    """Every string constant and f-string part, docstrings left out."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value)
    return found


def unqualified(sql: str) -> list[str]:
    """What in ``sql`` the search_path would resolve: empty when every name is pg_catalog's."""
    text = QUOTED.sub("''", sql)
    problems = []
    for match in re.finditer(r"(?<![\w.])(\w+)\s*\(", text):
        if match.group(1).upper() not in SYNTAX:
            problems.append(f"function {match.group(1)}(")
    for match in re.finditer(r"(?<![\w.])(pg_\w+)\b(?!\.)", text):
        if match.group(1) not in ("pg_catalog", "pg_temp"):
            problems.append(f"catalog name {match.group(1)}")
    for match in re.finditer(r"\b(?:FROM|JOIN)\s+(\w+)(\.?)", text):
        if match.group(1) not in PUBLIC_ROLE and not (match.group(1) == "pg_catalog" and match.group(2)):
            problems.append(f"relation {match.group(1)}")
    for match in re.finditer(r"::\s*(\w+)(\.?)", text):
        if not (match.group(1) == "pg_catalog" and match.group(2)):
            problems.append(f"cast ::{match.group(1)}")
    if re.search(r"\b(SELECT|WHERE)\b", text):  # a query: its operators too
        bare = re.sub(r"OPERATOR\(pg_catalog\.[^)]+\)", "", text)
        problems += [f"operator {op}" for op in re.findall(r"<>|!=|<=|>=|=|<|>", bare)]
        problems += ["IN (a bare =)" for _ in re.finditer(r"\bIN\s*\(", bare)]
    return problems


def module_sql() -> list[str]:
    return [text for text in literals(ast.parse(SOURCE.read_text())) if SQL_WORD.search(text)]


def test_the_check_finds_the_modules_sql() -> None:
    """Not vacuous: the role read, the database owner read, the session check and the utility statements are seen."""
    found = module_sql()
    assert len(found) >= 15
    joined = "\n".join(found)
    for piece in ("shobj_description", "pg_terminate_backend", "pg_get_userbyid", "REASSIGN OWNED", "current_setting"):
        assert piece in joined


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        pytest.param("SELECT shobj_description(r.oid, 'pg_authid') FROM pg_catalog.pg_roles r", "function", id="fn"),
        pytest.param("SELECT 1 FROM pg_roles r", "relation", id="relation"),
        pytest.param("SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = $1", "operator =", id="operator"),
        pytest.param("SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid IN (SELECT 1)", "IN", id="in"),
        pytest.param("SELECT pg_catalog.f($1::text)", "cast", id="cast"),
        pytest.param("SELECT pg_catalog.f(x) FROM y JOIN pg_stat_activity a", "catalog name", id="catalog-name"),
    ],
)
def test_the_check_flags_what_the_search_path_would_resolve(sql: str, problem: str) -> None:
    assert any(found.startswith(problem) for found in unqualified(sql)), unqualified(sql)


@pytest.mark.parametrize("sql", module_sql())
def test_every_name_in_the_admins_sql_is_pg_catalogs(sql: str) -> None:
    assert unqualified(sql) == []


def test_every_admin_session_pins_its_search_path_and_role() -> None:
    assert postgres.ADMIN_SETTINGS["search_path"] == "pg_catalog, pg_temp"
    assert postgres.ADMIN_SETTINGS["role"] == "none"
    assert postgres.ADMIN_SETTINGS["default_transaction_read_only"] == "off"


class Session:
    """A connection that answers the session check with what a tenant's database settings made of it."""

    def __init__(self, acting: str, path: str) -> None:
        self.row = {"acting": acting, "authenticated": "postgres", "path": path}
        self.sent: list[str] = []
        self.closed = False

    async def fetchrow(self, query: str) -> dict[str, str]:
        self.sent.append(query)
        return self.row

    async def execute(self, query: str) -> None:
        self.sent.append(query)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("acting", "path", "refused"),
    [
        pytest.param("postgres", "pg_catalog, pg_temp", False, id="pinned"),
        pytest.param("shop_orders", "pg_catalog, pg_temp", True, id="role-set-by-the-database"),
        pytest.param("postgres", "evil, pg_catalog", True, id="search-path-set-by-the-database"),
    ],
)
async def test_the_session_inside_a_tenants_database_is_proven_the_admins(
    monkeypatch: pytest.MonkeyPatch, acting: str, path: str, refused: bool
) -> None:
    session = Session(acting, path)

    async def connect(*args: Any, **kwargs: Any) -> Session:
        return session

    monkeypatch.setattr(postgres, "connect", connect)
    server = Server("default", "pg", 5432, "disable", "admin")
    if refused:
        with pytest.raises(postgres.RoleConflict, match="not the admin's"):
            await postgres.connect_inside(server, user="postgres", password="x", database="shop_orders")
        assert session.closed
    else:
        assert await postgres.connect_inside(server, user="postgres", password="x", database="shop_orders") is session
    assert len(session.sent) == 1, "nothing but the check is sent"
