"""Canaries: distinctive values planted in every Secret and password the e2e suite makes, and the search for them
in everything the product says — logs, kubectl's stderr (where webhook answers land), Events, statuses, metrics."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LeakGuard:
    canaries: set[str] = field(default_factory=set)
    findings: list[str] = field(default_factory=list)

    def canary(self, label: str = "") -> str:
        value = f"canary{label}{uuid.uuid4().hex}"
        self.canaries.add(value)
        return value

    def register(self, value: str) -> str:
        """A value the product generated (a password): from now on it must never be seen either."""
        if len(value) >= 12:
            self.canaries.add(value)
        return value

    def _forms(self) -> dict[str, str]:
        forms = {}
        for value in self.canaries:
            forms[value] = value
            forms[base64.b64encode(value.encode()).decode()] = value
        return forms

    def scan(self, text: str, where: str) -> None:
        for form, value in self._forms().items():
            if form in text:
                self.findings.append(f"{where}: canary {value[:18]}… found")

    def scan_files(self, root: Path, where: str) -> int:
        count = 0
        for path in root.rglob("*"):
            if path.is_file() and (path.suffix == ".log" or "log" in path.parts) and path.stat().st_size < 64 << 20:
                self.scan(path.read_text(errors="replace"), f"{where}/{path.relative_to(root)}")
                count += 1
        return count


GUARD = LeakGuard()
