"""Self-managed TLS against the real control plane: ``python -m webhook --tls-mode=self-managed`` issues, stores,
publishes and renews its certificate, and the API server, trusting the caBundle it keeps, calls it."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes_asyncio import client

from devenv.cluster import ControlPlane, wait_for
from devenv.process import Component, free_port
from rules.tls import Material, Policy, Step, SubjectNames, fingerprint, signed_by, take_step
from webhook.selfmanaged import SelfManagedCertificate, SelfManagedSettings

pytestmark = pytest.mark.e2e

SERVICE = "smll-secrets-webhook"
SECRET = "webhook-tls"
KINDS = ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")


@dataclass
class Setup:
    cluster: ControlPlane
    namespace: str
    configuration: str
    port: int
    workdir: Path
    started: list[Component] = field(default_factory=list)

    def configurations(self, ca_bundle: str | None = None) -> list[dict[str, Any]]:
        """Both kinds under one name, by url to ``port``. The validating one judges ConfigMap creates in the test
        namespace with failurePolicy Fail, so a create succeeds only if the API server trusts our certificate."""

        def hook(path: str, resource: str) -> dict[str, Any]:
            client_config = {"url": f"https://127.0.0.1:{self.port}{path}"}
            if ca_bundle:
                client_config["caBundle"] = ca_bundle
            return {
                "name": f"tls-probe{path.replace('/', '.')}.smll.io",
                "clientConfig": client_config,
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": [resource]}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }

        return [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": self.configuration},
                # No Pods are created in these tests; this entry is here to have its caBundle kept in step.
                "webhooks": [hook("/mutate", "pods"), {**hook("/mutate", "pods"), "name": "second.tls-probe.smll.io"}],
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": self.configuration},
                "webhooks": [hook("/validate", "configmaps")],
            },
        ]

    def register(self, ca_bundle: str | None = None) -> None:
        for configuration in self.configurations(ca_bundle):
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(configuration))

    def ca_bundles(self) -> list[str]:
        """The caBundle of every webhook of both configurations."""
        bundles = []
        for kind in KINDS:
            found = json.loads(self.cluster.kubectl("get", kind, self.configuration, "-o", "json").stdout)
            bundles += [hook["clientConfig"].get("caBundle", "") for hook in found["webhooks"]]
        return bundles

    def secret(self) -> dict[str, Any] | None:
        result = self.cluster.kubectl("get", "secret", SECRET, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def material(self) -> Material:
        secret = self.secret()
        assert secret is not None
        return Material.from_secret_data(secret["data"])

    def start(self, name: str, port: int, *extra: str) -> Component:
        args = [
            sys.executable,
            "-m",
            "webhook",
            "--tls-mode=self-managed",
            f"--tls-secret-namespace={self.namespace}",
            f"--tls-secret-name={SECRET}",
            f"--service-name={SERVICE}",
            f"--webhook-configuration={self.configuration}",
            "--tls-extra-ip=127.0.0.1",
            f"--tls-directory={self.workdir / name}",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--kubeconfig={self.cluster.kubeconfig}",
            *extra,
        ]
        component = Component(name, args, self.workdir / f"{name}.log")
        component.start(detach=False)
        self.started.append(component)
        return component

    def names(self) -> SubjectNames:
        return SubjectNames.for_service(SERVICE, self.namespace, extra_ips=["127.0.0.1"])

    def api_server_calls_us(self) -> None:
        """A ConfigMap create goes through our validating webhook (failurePolicy Fail); retried while the API
        server loads the configuration."""

        def created() -> bool:
            name = f"probe-{uuid.uuid4().hex[:6]}"
            return self.cluster.kubectl("create", "configmap", name, "-n", self.namespace, check=False).returncode == 0

        wait_for(created, timeout=30, what="the API server to call the webhook over TLS it trusts", interval=0.5)


@pytest.fixture
def setup(cluster: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Setup]:
    value = Setup(cluster, namespace, f"tls-{uuid.uuid4().hex[:8]}", free_port(), tmp_path)
    try:
        yield value
    finally:
        for component in value.started:
            component.stop()
        for kind in KINDS:
            cluster.kubectl("delete", kind, value.configuration, "--ignore-not-found", check=False)


def served(port: int, component: Component, timeout: float = 30) -> x509.Certificate:
    """The certificate the instance on ``port`` serves, once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.alive():
            raise RuntimeError(f"{component.name} exited:\n{component.log_tail()}")
        try:
            return x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port), timeout=2).encode())
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{component.name} did not serve within {timeout:.0f}s:\n{component.log_tail()}")


def decoded(ca_bundle: str) -> list[str]:
    return [fingerprint(cert) for cert in x509.load_pem_x509_certificates(base64.b64decode(ca_bundle))]


def test_self_managed_mode_creates_the_secret_and_the_api_server_trusts_the_patched_ca_bundle(setup: Setup) -> None:
    setup.register()  # no caBundle: nothing trusts us yet
    instance = setup.start("only", setup.port)

    certificate = served(setup.port, instance)

    secret = setup.secret()
    assert secret is not None
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    material = setup.material()
    assert certificate == material.serving.certificate
    assert setup.names().of(certificate)
    wait_for(
        lambda: setup.ca_bundles() == [material.ca_bundle] * 3,
        timeout=10,
        what="the caBundle on every webhook entry",
    )
    setup.api_server_calls_us()
    log = instance.log.read_text()
    assert "BEGIN" not in log
    assert secret["data"]["tls.key"] not in log
    assert secret["data"]["ca.key"] not in log


def test_two_instances_racing_make_one_secret_and_serve_the_same_certificate(setup: Setup) -> None:
    setup.register()
    other_port = free_port()
    first = setup.start("first", setup.port)
    second = setup.start("second", other_port)

    served_first, served_second = served(setup.port, first), served(other_port, second)

    material = setup.material()
    assert served_first == served_second == material.serving.certificate
    assert setup.ca_bundles() == [material.ca_bundle] * 3
    secrets = json.loads(setup.cluster.kubectl("get", "secrets", "-n", setup.namespace, "-o", "json").stdout)
    assert [s["metadata"]["name"] for s in secrets["items"] if s["type"] == "kubernetes.io/tls"] == [SECRET]
    setup.api_server_calls_us()


async def test_replicas_reconciling_at_the_same_instant_agree_on_one_secret(
    setup: Setup, kube_api: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    setup.register()
    replicas = [
        SelfManagedCertificate(
            kube_api,
            SelfManagedSettings(
                secret_namespace=setup.namespace,
                secret_name=SECRET,
                names=setup.names(),
                directory=setup.workdir / f"replica-{index}",
                configuration_name=setup.configuration,
            ),
        )
        for index in range(5)
    ]

    with caplog.at_level(logging.INFO, logger="webhook.selfmanaged"):
        results = await asyncio.gather(*(replica.reconcile() for replica in replicas))

    stored = await asyncio.to_thread(setup.material)
    assert all(result.serving == stored.serving and result.ca == stored.ca for result in results)
    assert caplog.text.count(Step.ISSUE.value) == 1  # one writer; the others were refused with 409 and followed
    assert "another replica wrote first" in caplog.text
    for index in range(5):
        assert (setup.workdir / f"replica-{index}" / "tls.crt").read_bytes() == stored.serving.cert_pem
    assert await asyncio.to_thread(setup.ca_bundles) == [stored.ca_bundle] * 3


def test_a_ca_near_its_end_is_rotated_and_the_ca_bundle_follows_before_the_serving_certificate(setup: Setup) -> None:
    # Seed what an instance made four years ago, with a serving certificate renewed yesterday: the CA has less
    # than a third of its five years left, the serving certificate is fine.
    now = datetime.datetime.now(datetime.UTC)
    policy, names = Policy(), setup.names()
    old = take_step(Step.ISSUE, None, now=now - datetime.timedelta(days=4 * 365), policy=policy, names=names)
    old = take_step(Step.REISSUE_SERVING, old, now=now - datetime.timedelta(days=1), policy=policy, names=names)
    seeded = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": setup.namespace},
        "type": "kubernetes.io/tls",
        "data": old.secret_data(),
    }
    setup.cluster.kubectl("create", "-f", "-", input=json.dumps(seeded))
    setup.register(old.ca_bundle)
    instance = setup.start("rotating", setup.port, "--tls-check-seconds=1")

    def rotated() -> bool:
        return served(setup.port, instance) != old.serving.certificate

    wait_for(rotated, timeout=30, what="a serving certificate signed by a new CA")

    material = setup.material()
    certificate = served(setup.port, instance)
    assert certificate == material.serving.certificate
    assert signed_by(certificate, material.ca.certificate)
    assert material.ca.certificate != old.ca.certificate
    # The new CA first, the old one kept for the overlap; every webhook entry carries exactly that.
    assert decoded(material.ca_bundle) == [fingerprint(material.ca.certificate), fingerprint(old.ca.certificate)]
    assert setup.ca_bundles() == [material.ca_bundle] * 3
    log = instance.log.read_text()
    assert log.index(Step.ROTATE_CA.value) < log.index(Step.REISSUE_SERVING.value)
    setup.api_server_calls_us()


def test_a_short_lived_serving_certificate_is_renewed_in_place_and_the_bundle_stays(setup: Setup) -> None:
    setup.register()
    instance = setup.start("short", setup.port, "--tls-serving-validity=9s", "--tls-check-seconds=1")
    first = served(setup.port, instance)
    bundle = setup.material().ca_bundle

    wait_for(lambda: served(setup.port, instance) != first, timeout=30, what="a renewed serving certificate")

    material = setup.material()
    assert served(setup.port, instance) == material.serving.certificate
    assert material.ca_bundle == bundle
    assert setup.ca_bundles() == [bundle] * 3
    setup.api_server_calls_us()
