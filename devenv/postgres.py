"""A real PostgreSQL server for tests and the demo: initdb in a temp dir, its own loopback port, password auth; with
``tls=True`` it also serves TLS with a certificate for 127.0.0.1 and localhost from a CA of its own (``ca_pem``), so
that clients can use ``sslmode=verify-full``."""

from __future__ import annotations

import datetime
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devenv.process import Component, free_port
from rules.certs import make_ca, make_leaf

SERVICE_USER = "postgres"
# The Secret (in the controller's namespace) that holds the admin credentials the controller connects with.
ADMIN_SECRET = "pg-admin"


def bin_dir() -> Path:
    found = shutil.which("pg_config")
    if found:
        path = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(path) / "initdb").exists():
            return Path(path)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (the tests start their own server)")
    return Path(candidates[-1]).parent


@dataclass
class LocalPostgres:
    port: int = field(default_factory=free_port)
    admin_user: str = "postgres"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="smll-pg-")))
    # Also listen on this address and accept password logins from this network (pods on the local node).
    pod_network: tuple[str, str] | None = None  # (address to listen on, CIDR of clients)
    tls: bool = False
    ca_pem: bytes = field(default=b"", repr=False)
    component: Component | None = None

    @property
    def run_as(self) -> str | None:
        return SERVICE_USER if os.geteuid() == 0 else None

    def _own(self, path: Path) -> None:
        if self.run_as is not None:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, *, detach: bool = False) -> None:
        binaries = bin_dir()
        data = self.directory / "data"
        if not data.exists():
            self._own(self.directory)
            password_file = self.directory / "pwfile"
            password_file.write_text(self.admin_password)
            self._own(password_file)
            subprocess.run(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.admin_user,
                    "--auth=scram-sha-256",
                    f"--pwfile={password_file}",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                check=True,
                user=self.run_as,
            )
            password_file.unlink()
            if self.pod_network is not None:
                with (data / "pg_hba.conf").open("a") as hba:
                    hba.write(f"host all all {self.pod_network[1]} scram-sha-256\n")
        tls_args = self._tls() if self.tls else []
        args = [
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(self.directory),
            "-c",
            "listen_addresses=" + ",".join(["127.0.0.1", *self.pod_network[:1]] if self.pod_network else ["127.0.0.1"]),
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            *tls_args,
        ]
        log = self.directory / "postgres.log"
        log.touch()
        self._own(log)
        self.component = Component("postgres", args, log, user=self.run_as)
        self.component.start(detach=detach)
        self.wait_ready(binaries)

    def _tls(self) -> list[str]:
        """A CA and a serving certificate for the addresses it listens on (made once; the key readable by the
        server's user only, as PostgreSQL demands)."""
        cert, key, ca = (self.directory / name for name in ("server.crt", "server.key", "ca.crt"))
        if not ca.exists():
            valid_for = datetime.timedelta(days=7)
            authority = make_ca("smll-secrets test PostgreSQL CA", valid_for=valid_for)
            addresses = ("127.0.0.1", *self.pod_network[:1]) if self.pod_network else ("127.0.0.1",)
            leaf = make_leaf(
                authority, "postgres", valid_for=valid_for, dns_names=("localhost",), ip_addresses=addresses
            )
            cert.write_bytes(leaf.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(leaf.key_pem)
            ca.write_bytes(authority.cert_pem)
            for path in (cert, key):
                self._own(path)
        self.ca_pem = ca.read_bytes()
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]

    def wait_ready(self, binaries: Path, timeout: float = 30) -> None:
        assert self.component is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.component.alive():
                raise RuntimeError(f"PostgreSQL exited:\n{self.component.log_tail()}")
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL was not ready after {timeout:.0f}s:\n{self.component.log_tail()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): SIGTERM would wait for every client, pods of the local node among them."""
        if self.component is not None:
            self.component.stop(sig=signal.SIGINT)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
