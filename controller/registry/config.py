"""What the registry loop is configured with."""

from __future__ import annotations

from dataclasses import dataclass

from rules import registry as registry_rules
from rules.workloads import resource_path


@dataclass(frozen=True)
class RegistryConfig:
    url: str  # as configured: ``https://host[:port]`` or ``host[:port]``
    htpasswd_namespace: str
    htpasswd_name: str
    rotation_namespace: str  # the controller's own: where a password on its way in is kept

    @property
    def host(self) -> str:
        """What REGISTRY_URL says and what the pull secret is keyed by."""
        return registry_rules.registry_host(self.url)

    @property
    def htpasswd_path(self) -> str:
        return resource_path("Secret", self.htpasswd_namespace, self.htpasswd_name)

    @property
    def rotations_path(self) -> str:
        return resource_path("Secret", self.rotation_namespace)


def parse_secret_ref(value: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name)."""
    namespace, _, name = value.partition("/")
    if not namespace or not name or "/" in name:
        raise ValueError(f"expected namespace/name, got {value!r}")
    return namespace, name
