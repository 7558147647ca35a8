"""The SQL the Database reconcile runs, with asyncpg. Identifiers and literals are quoted by ``rules.database``.

Utility statements (CREATE ROLE, CREATE DATABASE…) take no bind parameters, so every name and password is quoted;
passwords never reach the server at all: it gets their SCRAM-SHA-256 verifier.

Every statement that changes a role that exists (ALTER, DROP, REASSIGN OWNED) is preceded, on the same connection,
by a read of that role that proves it this Database's (``verified``): marked for it, of the kind expected, and a
member of its owner role. A role that fails is never touched (``RoleConflict``).

What the admin session trusts: nothing a tenant can write. A Database's login owns its database, so it may add
schemas, functions and operators there and ``ALTER DATABASE … SET`` any USERSET parameter (search_path, role,
timeouts…); with PUBLIC's CREATE on ``public`` (PostgreSQL ≤ 14, kept by pg_upgrade) it may add functions to the
maintenance database too. So every admin session pins those parameters in its startup packet (``ADMIN_SETTINGS``,
which outrank ALTER DATABASE/ROLE … SET), every catalog function, relation, operator and cast below is named in
``pg_catalog``, roles are read only on the connection to the maintenance database, and the session inside a
tenant's database runs REASSIGN OWNED and DROP OWNED only, once it has seen that it is the admin on pg_catalog's
names.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import asyncpg

from rules.database import Role, Server, ServerState, is_login_of, quote_ident, quote_literal, scram_verifier

CONNECT_TIMEOUT = 5.0
SEARCH_PATH = "pg_catalog, pg_temp"
# Every parameter of the admin session that a database's owner could set for it (ALTER DATABASE … SET) and that
# changes who it acts as, what its names mean, whether it may write, or how long it may wait. PostgreSQL 13 has
# them all (DROP DATABASE … WITH (FORCE) needs 13 anyway); idle_session_timeout (14) cannot be pinned there.
ADMIN_SETTINGS = {
    "application_name": "smll-secrets-controller",
    "search_path": SEARCH_PATH,
    "role": "none",
    "default_transaction_read_only": "off",
    "transaction_read_only": "off",
    "default_transaction_isolation": "read committed",
    "standard_conforming_strings": "on",
    "local_preload_libraries": "",
    "statement_timeout": "60s",
    "lock_timeout": "30s",
    "idle_in_transaction_session_timeout": "60s",
}

# asyncpg ships no type information; its connection is typed as Any here.
Connection = Any


class RoleConflict(Exception):
    """A role or database of this Database's name that is not this Database's: nothing was changed."""


async def connect(server: Server, *, user: str, password: str, database: str = "postgres") -> Connection:
    """A session with ``ADMIN_SETTINGS`` pinned (the admin's; a login's check, ``logs_in``, sends them too)."""
    return await asyncpg.connect(
        host=server.host,
        port=server.port,
        user=user,
        password=password,
        database=database,
        timeout=CONNECT_TIMEOUT,
        ssl=ssl_for(server),
        server_settings=ADMIN_SETTINGS,
    )


async def connect_inside(server: Server, *, user: str, password: str, database: str) -> Connection:
    """The admin's session in a tenant's database, proven to be the admin's with pg_catalog's names only (the pins
    held); RoleConflict, and nothing sent but that read, when not."""
    inside = await connect(server, user=user, password=password, database=database)
    try:
        seen = await inside.fetchrow(
            "SELECT current_user AS acting, session_user AS authenticated, "
            "pg_catalog.current_setting('search_path') AS path"
        )
    except BaseException:
        await inside.close()
        raise
    if (seen["acting"], seen["path"]) != (seen["authenticated"], SEARCH_PATH):
        await inside.close()
        raise RoleConflict(f"the admin session in database {database} is not the admin's as pinned; nothing done")
    return inside


def ssl_for(server: Server) -> ssl.SSLContext | str | bool:
    """verify-ca and verify-full check the server's certificate against the configured CA bundle (the system's CAs
    without one); verify-full also checks that it names the host. The other modes are libpq's, as asyncpg reads
    them (``require`` encrypts but checks no certificate)."""
    if server.sslmode == "disable":
        return False
    if server.sslmode not in ("verify-ca", "verify-full"):
        return server.sslmode
    context = ssl.create_default_context(cadata=server.ca_pem.decode() if server.ca_pem else None)
    context.check_hostname = server.sslmode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# Every name is pg_catalog's, and every operator (the search_path is pinned too); values are typed bind parameters.
_ROLE = (  # the statements below add constant WHERE clauses only
    "SELECT r.rolname, r.rolcanlogin, "
    "(r.rolsuper OR r.rolcreaterole OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls) AS privileged, "
    "pg_catalog.shobj_description(r.oid, 'pg_authid'::pg_catalog.name) AS comment, "
    "ARRAY(SELECT g.rolname FROM pg_catalog.pg_auth_members m "
    "JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) m.roleid "
    "WHERE m.member OPERATOR(pg_catalog.=) r.oid ORDER BY 1) AS member_of FROM pg_catalog.pg_roles r "
)


_MEMBERS_OF = (
    "WHERE r.oid OPERATOR(pg_catalog.=) ANY (SELECT m.member FROM pg_catalog.pg_auth_members m "
    "JOIN pg_catalog.pg_roles o ON o.oid OPERATOR(pg_catalog.=) m.roleid "
    "WHERE o.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.text) ORDER BY 1"
)
_DATABASE_OWNER = (
    "SELECT pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d "
    "WHERE d.datname OPERATOR(pg_catalog.=) $1::pg_catalog.text"
)


def _role(row: Any) -> Role:
    return Role(
        name=str(row["rolname"]),
        login=bool(row["rolcanlogin"]),
        privileged=bool(row["privileged"]),
        comment=None if row["comment"] is None else str(row["comment"]),
        member_of=tuple(str(name) for name in row["member_of"]),
    )


async def role(admin: Connection, name: str) -> Role | None:
    row = await admin.fetchrow(_ROLE + "WHERE r.rolname OPERATOR(pg_catalog.=) $1::pg_catalog.text", name)
    return None if row is None else _role(row)


async def inspect(admin: Connection, owner: str) -> ServerState:
    """The owner role, the owner of the database of its name, and the owner role's members."""
    found = await role(admin, owner)
    database_owner = await admin.fetchval(_DATABASE_OWNER, owner)
    members: tuple[Role, ...] = ()
    if found is not None:
        rows = await admin.fetch(
            _ROLE + _MEMBERS_OF,
            owner,
        )
        members = tuple(_role(row) for row in rows)
    return ServerState(found, None if database_owner is None else str(database_owner), members)


async def verified(admin: Connection, name: str, *, marker: str, owner: str, admin_user: str) -> Role | None:
    """The role ``name`` if it is this Database's (None if there is none); RoleConflict if it exists and is not.
    ``name == owner``: the NOLOGIN owner role; otherwise one of its login generations."""
    found = await role(admin, name)
    if found is None:
        return None
    sound = found.comment == marker and not found.privileged and found.name != admin_user
    if name == owner:
        sound = sound and not found.login
    else:
        sound = sound and found.login and owner in found.member_of
    if not sound:
        raise RoleConflict(f"role {name} is not one this controller made for this Database; it is left alone")
    return found


async def mark(admin: Connection, names: tuple[str, ...], marker: str) -> None:
    """Roles made before markers, proven this Database's (rules.database.claim): marked, in one transaction."""
    async with admin.transaction():
        for name in names:
            await admin.execute(f"COMMENT ON ROLE {quote_ident(name)} IS {quote_literal(marker)}")


async def ensure_database(admin: Connection, owner: str, *, marker: str, admin_user: str) -> None:
    """A NOLOGIN owner role (marked) and a database it owns, which PUBLIC may not connect to."""
    if await verified(admin, owner, marker=marker, owner=owner, admin_user=admin_user) is None:
        async with admin.transaction():
            await admin.execute(f"CREATE ROLE {quote_ident(owner)} NOLOGIN")
            await admin.execute(f"COMMENT ON ROLE {quote_ident(owner)} IS {quote_literal(marker)}")
    database_owner = await admin.fetchval(_DATABASE_OWNER, owner)
    if database_owner is None:
        await admin.execute(f"CREATE DATABASE {quote_ident(owner)} OWNER {quote_ident(owner)}")
    elif database_owner != owner:
        raise RoleConflict(f"database {owner} is owned by another role; it is left alone")
    await admin.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quote_ident(owner)} FROM PUBLIC")
    await admin.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(owner)} TO {quote_ident(owner)}")


async def ensure_login(
    admin: Connection, *, login: str, owner: str, password: str, marker: str, admin_user: str
) -> None:
    """A least-privilege login of this Database that acts as the owner role, with this password: created (marked),
    or, when it exists, its password set — only once it is proven this Database's."""
    options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
    # The server gets the SCRAM verifier, never the password itself.
    verifier = quote_literal(scram_verifier(password, salt=os.urandom(16)))
    async with admin.transaction():
        await verified(admin, owner, marker=marker, owner=owner, admin_user=admin_user)
        if await verified(admin, login, marker=marker, owner=owner, admin_user=admin_user) is not None:
            await admin.execute(f"ALTER ROLE {quote_ident(login)} WITH {options} PASSWORD {verifier}")
        else:
            await admin.execute(
                f"CREATE ROLE {quote_ident(login)} WITH {options} PASSWORD {verifier} IN ROLE {quote_ident(owner)}"
            )
            await admin.execute(f"COMMENT ON ROLE {quote_ident(login)} IS {quote_literal(marker)}")
        # Objects a login creates belong to the owner role, so that a rotated-out login can be dropped cleanly.
        await admin.execute(f"ALTER ROLE {quote_ident(login)} SET role = {quote_literal(owner)}")


async def logs_in(server: Server, *, user: str, password: str, database: str) -> bool:
    try:
        connection = await connect(server, user=user, password=password, database=database)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
        return False
    await connection.close()
    return True


async def drop_login(
    server: Server,
    admin: Connection,
    *,
    admin_user: str,
    admin_password: str,
    login: str,
    owner: str,
    marker: str,
) -> None:
    """Drop a rotated-out login of this Database, proven so right before (on ``admin``, the maintenance database's
    session: never inside the tenant's database): end its sessions, hand anything it owns to the owner role, drop
    it."""
    if await verified(admin, login, marker=marker, owner=owner, admin_user=admin_user) is None:
        return
    await admin.execute(
        "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a "
        "WHERE a.usename OPERATOR(pg_catalog.=) $1::pg_catalog.text",
        login,
    )
    if await admin.fetchval(_DATABASE_OWNER, owner) is not None:
        inside = await connect_inside(server, user=admin_user, password=admin_password, database=owner)
        try:
            await verified(admin, login, marker=marker, owner=owner, admin_user=admin_user)
            await inside.execute(f"REASSIGN OWNED BY {quote_ident(login)} TO {quote_ident(owner)}")
            await inside.execute(f"DROP OWNED BY {quote_ident(login)}")
        finally:
            await inside.close()
    async with admin.transaction():
        await verified(admin, login, marker=marker, owner=owner, admin_user=admin_user)
        await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(login)}")


async def drop_database(
    admin: Connection, owner: str, *, namespace: str, name: str, marker: str, admin_user: str
) -> bool:
    """deletionPolicy Delete: the database, every login of it, and the owner role — only when the owner role is
    this Database's (False: it is not, and nothing was dropped). Members that are not its marked logins lose
    their membership with the owner role, and nothing else."""
    try:
        found = await verified(admin, owner, marker=marker, owner=owner, admin_user=admin_user)
    except RoleConflict:
        return False
    if found is None:
        return True
    state = await inspect(admin, owner)
    logins = [
        member.name
        for member in state.members
        if member.comment == marker
        and member.login
        and not member.privileged
        and is_login_of(member.name, namespace, name)
    ]
    if state.database_owner == owner:
        await admin.execute(f"DROP DATABASE IF EXISTS {quote_ident(owner)} WITH (FORCE)")
    async with admin.transaction():
        for login in logins:
            await verified(admin, login, marker=marker, owner=owner, admin_user=admin_user)
            await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(login)}")
        await verified(admin, owner, marker=marker, owner=owner, admin_user=admin_user)
        await admin.execute(f"DROP ROLE IF EXISTS {quote_ident(owner)}")
    return True
