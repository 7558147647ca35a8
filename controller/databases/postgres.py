"""The SQL the Database reconcile runs, with asyncpg. Identifiers and literals are quoted by ``rules.database``.

Utility statements (CREATE ROLE, CREATE DATABASE…) take no bind parameters, so every name and password is quoted;
passwords never reach the server at all: it gets their SCRAM-SHA-256 verifier.
"""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from rules.database import Server, quote_ident, quote_literal, scram_verifier

CONNECT_TIMEOUT = 5.0

# asyncpg ships no type information; its connection is typed as Any here.
Connection = Any


async def connect(server: Server, *, user: str, password: str, database: str = "postgres") -> Connection:
    return await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=user,
        password=password,
        database=database,
        timeout=CONNECT_TIMEOUT,
        ssl=_ssl(server.sslmode),
    )


def _ssl(sslmode: str) -> str | bool:
    return False if sslmode == "disable" else sslmode


async def ensure_database(admin: Connection, owner: str) -> None:
    """A NOLOGIN owner role and a database it owns, which PUBLIC may not connect to."""
    if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner):
        await admin.execute(f"CREATE ROLE {quote_ident(owner)} NOLOGIN")
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", owner):
        await admin.execute(f"CREATE DATABASE {quote_ident(owner)} OWNER {quote_ident(owner)}")
    await admin.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote_ident(owner)} FROM PUBLIC")
    await admin.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(owner)} TO {quote_ident(owner)}")


async def ensure_login(admin: Connection, *, login: str, owner: str, password: str) -> None:
    """A least-privilege login that acts as the owner role, with this password."""
    options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    # The server gets the SCRAM verifier, never the password itself.
    verifier = quote_literal(scram_verifier(password, salt=os.urandom(16)))
    if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
        await admin.execute(f"ALTER ROLE {quote_ident(login)} WITH {options} PASSWORD {verifier}")
    else:
        await admin.execute(
            f"CREATE ROLE {quote_ident(login)} WITH {options} PASSWORD {verifier} IN ROLE {quote_ident(owner)}"
        )
    # Objects a login creates belong to the owner role, so that a rotated-out login can be dropped cleanly.
    await admin.execute(f"ALTER ROLE {quote_ident(login)} SET role = {quote_literal(owner)}")


async def logs_in(server: Server, *, user: str, password: str, database: str) -> bool:
    try:
        connection = await connect(server, user=user, password=password, database=database)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    await connection.close()
    return True


async def logins_of(admin: Connection, owner: str) -> list[str]:
    rows = await admin.fetch(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
        "JOIN pg_roles o ON o.oid = m.roleid WHERE o.rolname = $1 ORDER BY 1",
        owner,
    )
    return [str(row["rolname"]) for row in rows]


async def drop_login(
    server: Server, admin: Connection, *, admin_user: str, admin_password: str, login: str, owner: str
) -> None:
    """Drop a rotated-out login: end its sessions, hand anything it owns to the owner role, drop it."""
    if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", login):
        return
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", login)
    if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", owner):
        inside = await connect(server, user=admin_user, password=admin_password, database=owner)
        try:
            await inside.execute(f"REASSIGN OWNED BY {quote_ident(login)} TO {quote_ident(owner)}")
            await inside.execute(f"DROP OWNED BY {quote_ident(login)}")
        finally:
            await inside.close()
    await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(login)}")


async def drop_database(admin: Connection, owner: str) -> None:
    """deletionPolicy Delete: the database, every login of it, and the owner role."""
    logins = await logins_of(admin, owner)
    await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(owner)} WITH (FORCE)")
    for login in logins:
        await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(login)}")
    await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(owner)}")
