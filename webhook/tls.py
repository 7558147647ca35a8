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
    """``context`` is what the listener serves with; ``reload()`` (or ``watch()``) picks up new files."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context()
        self.context.sni_callback = self._hand_over
        self._current: ssl.SSLContext | None = None
        self._stamp: Stamp | None = None
        self._failed: Stamp | None = None

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _hand_over(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        if self._current is not None:
            connection.context = self._current

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
        self._current = fresh
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
