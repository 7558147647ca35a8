"""Every version of one Secret, as a watch delivers them: ``kubectl get --watch`` in the background."""

from __future__ import annotations

import json
import subprocess
import threading
from types import TracebackType
from typing import Any

from devenv.cluster import ControlPlane


class SecretVersions:
    """Collects each ADDED/MODIFIED/DELETED event of the Secret ``name`` (it may not exist yet) in memory."""

    def __init__(self, plane: ControlPlane, namespace: str, name: str) -> None:
        self.command = [
            str(plane.binaries.kubectl),
            f"--kubeconfig={plane.kubeconfig}",
            "get",
            "secrets",
            "-n",
            namespace,
            f"--field-selector=metadata.name={name}",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ]
        self.events: list[dict[str, Any]] = []
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> SecretVersions:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self.process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    event, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break  # an object not complete yet
                self.events.append(event)
                buffer = buffer.lstrip()[end:]

    def versions(self) -> list[dict[str, Any]]:
        """Every version seen, in order (a deletion is not a version)."""
        return [event["object"] for event in list(self.events) if event.get("type") in ("ADDED", "MODIFIED")]

    def key_sets(self) -> list[frozenset[str]]:
        return [frozenset((version.get("data") or {}).keys()) for version in self.versions()]

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.reader is not None:
            self.reader.join(timeout=10)
