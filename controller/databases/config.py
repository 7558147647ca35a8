"""The PostgreSQL servers the Database loop is configured with (``--database-config``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from rules import database as database_rules


class ConfigError(ValueError):
    pass


def load_servers(path: Path) -> dict[str, database_rules.Server]:
    """``servers: {NAME: {host, port, sslmode, adminSecret, caSecret}}`` — a clear error names what to fix.

    ``caSecret`` (a Secret of the controller's namespace, key ``ca.crt``) is the CA bundle that ``verify-ca`` and
    ``verify-full`` check the server's certificate against; without it they use the system's CAs."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read the database config {path}: {error}") from None
    servers = document.get("servers") if isinstance(document, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise ConfigError(f"{path}: expected 'servers:' with at least one named server")
    found = {}
    for name, spec in servers.items():
        if not isinstance(spec, dict) or not spec.get("host") or not spec.get("adminSecret"):
            raise ConfigError(f"{path}: server {name!r} needs host and adminSecret (and may set port, sslmode)")
        sslmode = str(spec.get("sslmode", "require"))
        if sslmode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
            raise ConfigError(f"{path}: server {name!r} has sslmode {sslmode!r}; use disable, require, verify-full…")
        ca_secret = str(spec.get("caSecret") or "")
        if ca_secret and sslmode not in ("verify-ca", "verify-full"):
            raise ConfigError(
                f"{path}: server {name!r} names caSecret but sslmode {sslmode!r} checks no certificate; "
                f"use sslmode verify-full"
            )
        found[str(name)] = database_rules.Server(
            name=str(name),
            host=str(spec["host"]),
            port=int(spec.get("port", 5432)),
            sslmode=sslmode,
            admin_secret=str(spec["adminSecret"]),
            ca_secret=ca_secret,
        )
    return found
