"""The controller's settings: one frozen value, read by the process and by every loop."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from rules.names import PRODUCT_NAMESPACE


@dataclass(frozen=True)
class Settings:
    namespace: str = PRODUCT_NAMESPACE
    kubeconfig: Path | None = None
    identity: str = f"{socket.gethostname()}-{os.getpid()}"
    lease_name: str = "smll-secrets-controller"
    lease_seconds: int = 15
    settle_seconds: float = 2.0
    settle_max_seconds: float = 30.0  # the longest a burst is coalesced (rules.settling)
    workers: int = 8
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped inside the cluster
    metrics_port: int = 8080
    hmac_secret: str = "smll-secrets-rollout-key"
    database_config: Path | None = None
    rotation_grace_seconds: float = 3600.0
    registry_url: str | None = None
    htpasswd_secret: str | None = None  # "namespace/name" of the registry's htpasswd Secret
    # The registry's token endpoint (controller.registry.tokens), on every replica; off without a port.
    registry_token_port: int | None = None
    registry_token_host: str = "0.0.0.0"  # noqa: S104 - the registry's clients reach it through a Service
    registry_token_ca: str | None = None  # "namespace/name" of a kubernetes.io/tls Secret: the CA the registry trusts
    registry_token_service: str | None = None  # the registry's auth.token.service; its host by default
    registry_token_issuer: str = "smll-secrets"
    registry_token_seconds: int = 60  # rules.registry_token.DEFAULT_TOKEN_SECONDS
