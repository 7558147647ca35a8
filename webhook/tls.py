"""The server's TLS: TLS 1.2 or newer, certificate and key read from files and reloaded when they change.

The listener keeps one SSLContext for its whole life. Each load makes a fresh context from the files, and the
listener's context hands every new handshake to the newest one (the SNI callback runs on every ClientHello, with
or without a server name). A pair that does not load — a half-written renewal, a key that does not match its
certificate, a missing file — never touches the context in use: the old certificate is served until a good pair
is on disk. Connections already open keep the certificate they were made with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

# What identifies one version of a file: a rename (Kubernetes' atomic volume update, our own os.replace) changes
# the inode; an in-place rewrite changes the mtime or the size.
Stamp = tuple[tuple[int, int, int], ...]


def server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    return context


class ReloadingCertificate:
    """``context`` is what the listener serves with; ``reload()`` (or ``watch()``) picks up new files.

    ``client_verifying`` is a second listener context with the same certificate that requires a client certificate
    signed by the CA given to ``trust_clients`` (the write-only API's front proxy); until then it accepts nobody.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context()
        self.context.sni_callback = self._hand_over
        self.client_verifying = server_context()
        self.client_verifying.verify_mode = ssl.CERT_REQUIRED
        self.client_verifying.sni_callback = self._hand_over_verifying
        self._client_ca: str | None = None
        self._current: ssl.SSLContext | None = None
        self._current_verifying: ssl.SSLContext | None = None
        self._stamp: Stamp | None = None
        self._failed: Stamp | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

    def _hand_over_verifying(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if self._current_verifying is not None:
            connection.context = self._current_verifying

    def _verifying(self, fresh: ssl.SSLContext) -> ssl.SSLContext | None:
        """A context like ``fresh`` (same pair) that requires clients signed by the client CA; None without one."""
        if not self._client_ca:
            return None
        verifying = server_context()
        verifying.verify_mode = ssl.CERT_REQUIRED
        verifying.load_verify_locations(cadata=self._client_ca)
        verifying.load_cert_chain(self.cert_file, self.key_file)
        return verifying

    def trust_clients(self, ca_pem: str) -> None:
        """Require client certificates signed by ``ca_pem`` on ``client_verifying`` (from now on; again when the
        CA changes). Raises ssl.SSLError when the bundle does not load; what is in use stays."""
        # The listener's own context verifies too (the handshake may be judged by either, whatever the SNI swap).
        self.client_verifying.load_verify_locations(cadata=ca_pem)
        if ca_pem == self._client_ca or self._current is None:
            self._client_ca = ca_pem
            return
        previous, self._client_ca = self._client_ca, ca_pem
        try:
            self._current_verifying = self._verifying(self._current)
        except (OSError, ssl.SSLError):
            self._client_ca = previous
            raise

    def _current_stamp(self) -> Stamp:
        stats = (os.stat(self.cert_file), os.stat(self.key_file))
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def reload(self) -> bool:
        """Load the files if they changed since the last good load; True when a new certificate was loaded.

        Raises OSError or ssl.SSLError when the files changed but do not make a usable pair; what is served
        stays as it was.
        """
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        fresh = server_context()
        # load_cert_chain checks that the key belongs to the certificate. The stamp was taken before reading: if
        # the files change while they are read, the next call sees a new stamp and loads again.
        fresh.load_cert_chain(self.cert_file, self.key_file)
        verifying = self._verifying(fresh)
        self._current = fresh
        self._current_verifying = verifying
        self._stamp = stamp
        self._failed = None
        return True

    def poll(self) -> None:
        """One step of ``watch``: reload, and say once per version of the files when they cannot be loaded."""
        try:
            if self.reload():
                log.info("serving the certificate in %s", self.cert_file)
        except (OSError, ssl.SSLError) as error:
            stamp = self._safe_stamp()
            if stamp is None or stamp != self._failed:
                log.warning("keeping the current certificate: %s does not load yet: %s", self.cert_file, error)
            self._failed = stamp

    def _safe_stamp(self) -> Stamp | None:
        try:
            return self._current_stamp()
        except OSError:
            return None

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.poll()
