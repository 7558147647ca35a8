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
