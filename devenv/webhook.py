"""Run the admission server beside the local control plane and register it by ``url`` (the chart's dev mode).

The webhook definitions come from the chart's own files, so the local run registers exactly what the chart ships.
"""

from __future__ import annotations

import datetime
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devenv.cluster import ADMISSION_CLIENT, ControlPlane
from devenv.process import Component, free_port
from rules.certs import make_ca, make_leaf
from rules.names import LINK_PREFIX, PRODUCT_NAMESPACE, WEBHOOK_CONFIGURATION
from rules.secretdata import encode

CHART_FILES = Path(__file__).resolve().parent.parent / "charts" / "smll-secrets" / "files"

# A malformed link only the webhook refuses: how the local run sees that the apiserver calls it.
PROBE = LINK_PREFIX + "PROBE"


def webhook_definitions(name: str) -> list[dict[str, Any]]:
    definitions = yaml.safe_load((CHART_FILES / name).read_text())
    assert isinstance(definitions, list)
    return definitions


def namespace_selector(product_namespace: str) -> dict[str, Any]:
    return {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", product_namespace]}
        ]
    }


def configurations(base_url: str, ca_pem: bytes, product_namespace: str = PRODUCT_NAMESPACE) -> list[dict[str, Any]]:
    """The webhook configurations, registered by url for a webhook running outside the cluster."""
    ca_bundle = encode(ca_pem)

    def hooks(file: str, path: str) -> list[dict[str, Any]]:
        return [
            {
                **hook,
                "clientConfig": {"url": f"{base_url}{path}", "caBundle": ca_bundle},
                "namespaceSelector": namespace_selector(product_namespace),
            }
            for hook in webhook_definitions(file)
        ]

    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": WEBHOOK_CONFIGURATION},
            "webhooks": hooks(file, path),
        }
        for kind, file, path in (
            ("MutatingWebhookConfiguration", "mutating-webhooks.yaml", "/mutate"),
            ("ValidatingWebhookConfiguration", "validating-webhooks.yaml", "/validate"),
        )
    ]


def wait_until_judging(plane: ControlPlane, *, timeout: float = 30) -> None:
    """The apiserver picks up webhook configurations (and a webhook becomes ready) a moment after: probe until it
    calls the webhook. The probe is a dry-run create of a Deployment with a malformed link, which only the webhook
    refuses; nothing is created."""

    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "webhook-probe",
            "namespace": "default",
            "annotations": {PROBE: "not-a-link"},
        },
        "spec": {
            "selector": {"matchLabels": {"app": "probe"}},
            "template": {
                "metadata": {"labels": {"app": "probe"}},
                "spec": {"containers": [{"name": "probe", "image": "registry.invalid/probe"}]},
            },
        },
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False)
        if PROBE in result.stderr:
            return
        time.sleep(0.3)
    raise RuntimeError("the apiserver did not start calling the webhook within the time allowed")


@dataclass
class LocalWebhook:
    """``python -m webhook`` on a loopback port, with a certificate signed by a CA of its own. Like the chart's
    install, its admission port requires the apiserver's webhook client certificate (``client_auth``), and health
    and metrics are on a plain-HTTP port of their own."""

    plane: ControlPlane
    workdir: Path
    port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    client_auth: bool = True
    component: Component | None = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def start(self, *, detach: bool = False) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        year = datetime.timedelta(days=365)
        ca = make_ca("smll-secrets local webhook CA", valid_for=year)
        serving = make_leaf(ca, "127.0.0.1", valid_for=year, ip_addresses=("127.0.0.1",), dns_names=("localhost",))
        (self.workdir / "ca.crt").write_bytes(ca.cert_pem)
        (self.workdir / "tls.crt").write_bytes(serving.cert_pem)
        (self.workdir / "tls.key").write_bytes(serving.key_pem)
        (self.workdir / "tls.key").chmod(0o600)
        args = [
            sys.executable,
            "-m",
            "webhook",
            f"--cert-file={self.workdir / 'tls.crt'}",
            f"--key-file={self.workdir / 'tls.key'}",
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--kubeconfig={self.plane.kubeconfig}",
            "--drain-seconds=0",  # no Service sends it reviews: nothing to drain
            f"--health-port={self.health_port}",
        ]
        if self.client_auth:
            args += [f"--client-ca-file={self.plane.admission_client_ca}", f"--client-allowed-name={ADMISSION_CLIENT}"]
        self.component = Component("webhook", args, self.workdir / "webhook.log")
        self.component.start(detach=detach)
        self.wait_ready()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.health_url}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> str:
        """A GET on the health port: /healthz, /readyz, /metrics."""
        with urllib.request.urlopen(f"{self.health_url}{path}", timeout=5) as answer:
            return str(answer.read().decode())

    def wait_ready(self, timeout: float = 30) -> None:
        assert self.component is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.component.alive():
                raise RuntimeError(f"the webhook exited; last lines of its log:\n{self.component.log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"the webhook was not ready after {timeout:.0f}s:\n{self.component.log_tail()}")

    def register(self) -> None:
        ca_pem = (self.workdir / "ca.crt").read_bytes()
        for configuration in configurations(self.base_url, ca_pem):
            self.plane.kubectl("apply", "-f", "-", input=json.dumps(configuration))
        self.wait_registered()

    def wait_registered(self, timeout: float = 30) -> None:
        wait_until_judging(self.plane, timeout=timeout)

    def unregister(self) -> None:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            self.plane.kubectl("delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found", check=False)

    def restart(self) -> None:
        """Start the same server again (same port and certificate), e.g. after ``stop()`` in a fault test."""
        assert self.component is not None
        self.component.start(detach=False)
        self.wait_ready()

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop()
