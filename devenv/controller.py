"""Run the controller beside the local control plane, as the chart's sidecar would run in the cluster."""

from __future__ import annotations

import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv.cluster import ControlPlane
from devenv.postgres import ADMIN_SECRET, LocalPostgres
from devenv.process import Component, free_port
from rules.names import PRODUCT_NAMESPACE

CONTROLLER_NAMESPACE = PRODUCT_NAMESPACE
CRD = Path(__file__).resolve().parent.parent / "charts" / "smll-secrets" / "crds" / "databases.smll.io.yaml"


def install_database_support(plane: ControlPlane, postgres: LocalPostgres, workdir: Path) -> Path:
    """The Database CRD, the admin Secret of the server, and the controller's server config (returned)."""
    plane.kubectl("apply", "-f", str(CRD))
    plane.kubectl("wait", "--for=condition=Established", "crd/databases.smll.io", "--timeout=30s")
    plane.kubectl("create", "namespace", CONTROLLER_NAMESPACE, check=False)
    plane.kubectl("delete", "secret", ADMIN_SECRET, "-n", CONTROLLER_NAMESPACE, "--ignore-not-found")
    plane.kubectl(
        "create",
        "secret",
        "generic",
        ADMIN_SECRET,
        "-n",
        CONTROLLER_NAMESPACE,
        f"--from-literal=username={postgres.admin_user}",
        f"--from-literal=password={postgres.admin_password}",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "databases.yaml"
    server = {"host": "127.0.0.1", "port": postgres.port, "sslmode": "disable", "adminSecret": ADMIN_SECRET}
    config.write_text(yaml.safe_dump({"servers": {"default": server}}))
    return config


@dataclass
class LocalController:
    plane: ControlPlane
    workdir: Path
    identity: str = "local-controller"
    settle_seconds: float = 1.0
    lease_seconds: int = 15
    lease_name: str = "smll-secrets-controller"
    metrics_port: int = field(default_factory=free_port)
    registry_url: str | None = None
    htpasswd_secret: str | None = None  # namespace/name
    extra_args: list[str] = field(default_factory=list)
    component: Component | None = None

    def start(self, *, detach: bool = False) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.plane.kubectl("create", "namespace", CONTROLLER_NAMESPACE, check=False)
        args = [
            sys.executable,
            "-m",
            "controller",
            f"--kubeconfig={self.plane.kubeconfig}",
            f"--namespace={CONTROLLER_NAMESPACE}",
            f"--identity={self.identity}",
            f"--settle-seconds={self.settle_seconds}",
            f"--lease-seconds={self.lease_seconds}",
            f"--lease-name={self.lease_name}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            *([f"--registry-url={self.registry_url}"] if self.registry_url else []),
            *([f"--htpasswd-secret={self.htpasswd_secret}"] if self.htpasswd_secret else []),
            *self.extra_args,
        ]
        self.component = Component(f"controller-{self.identity}", args, self.workdir / f"{self.identity}.log")
        self.component.start(detach=detach)

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())

    def metric(self, name: str) -> float:
        """The sum of one metric over its labels (0 when absent)."""
        try:
            text = self.metrics()
        except OSError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def leading(self) -> bool:
        return self.metric("smll_leader ") == 1.0

    def wait_leading(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.component is not None and not self.component.alive():
                raise RuntimeError(f"the controller exited:\n{self.component.log_tail()}")
            if self.leading() and "rollouts: caches synced" in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the controller did not lead within {timeout:.0f}s")

    def log(self) -> str:
        assert self.component is not None
        try:
            return self.component.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, *, kill: bool = False) -> None:
        if self.component is not None:
            self.component.stop(sig=signal.SIGKILL if kill else signal.SIGTERM)
