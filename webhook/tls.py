"""The server's TLS: TLS 1.2 or newer, certificate and key read from files and reloaded when they change."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


class ReloadingCertificate:
    """One SSLContext whose certificate is swapped in place when the files change: new handshakes get the new
    certificate, connections already open keep theirs, and nothing restarts."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp: tuple[float, float] | None = None
        self.reload()

    def _current_stamp(self) -> tuple[float, float]:
        return self.cert_file.stat().st_mtime, self.key_file.stat().st_mtime

    def reload(self) -> bool:
        """Load the files if they changed since the last load; True when a new certificate was loaded."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        self.context.load_cert_chain(self.cert_file, self.key_file)
        self._stamp = stamp
        return True

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                if self.reload():
                    log.info("loaded a new serving certificate from %s", self.cert_file)
            except (OSError, ssl.SSLError) as error:
                # A half-written pair (cert renewed, key not yet): keep serving the old one and try again.
                log.warning("could not load the certificate from %s yet: %s", self.cert_file, error)
