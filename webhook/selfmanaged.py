"""Self-managed TLS: the webhook makes its own CA and serving certificate, keeps them in a Secret, renews them,
and keeps the ``caBundle`` of its webhook configurations in step.

Two halves. The decisions — does this pair need renewing at time T, what should the Secret hold next, what
``caBundle`` should a configuration carry — are plain functions in the core (rules/tls.py), tested by table. This
edge (``SelfManagedCertificate``) reads the Secret and the configurations, applies one decision, writes, and puts
the pair where ``ReloadingCertificate`` serves it from.

Several replicas share one Secret and never coordinate otherwise: whoever writes first wins (create-if-absent,
updates carry the resourceVersion they read), and a 409 means another replica wrote, so the loser re-reads and
follows. A CA rotation takes two writes with the configurations in between, so that no replica serves a
certificate the API server does not trust yet:

1. a new CA goes first in ``ca.crt`` while the serving certificate stays the one the old CA signed;
2. every configuration is given the new bundle (new CA and old CA);
3. only once the configurations are seen to trust the new CA is the serving certificate re-issued under it.

The old CA stays in the bundle until it expires, so replicas that still serve a certificate it signed are trusted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from kubeio.errors import describe_error, transient
from kubeio.rest import ApiException, get_or_none, json_request
from rules.names import MANAGED_BY_LABEL, PRODUCT, WEBHOOK_CONFIGURATION
from rules.tls import (
    CA_FILE,
    CERT_FILE,
    KEY_FILE,
    Material,
    Policy,
    Step,
    SubjectNames,
    describe_certificate,
    next_step,
    take_step,
    trusts,
    with_ca_bundle,
)
from rules.workloads import resource_path
from webhook.tls import ReloadingCertificate

log = logging.getLogger(__name__)

# What carries the caBundle kept in step: the webhook configurations, and the write-only API's APIService.
CONFIGURATION_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService")
MANAGED_BY = {MANAGED_BY_LABEL: f"{PRODUCT}-webhook"}
MAX_ATTEMPTS = 5

# ---------------------------------------------------------------------------------------------------------------
# The edge: the Secret, the webhook configurations, the files.


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class SelfManagedSettings:
    secret_namespace: str
    secret_name: str
    names: SubjectNames
    directory: Path
    configuration_name: str = WEBHOOK_CONFIGURATION
    api_service: str = ""  # the write-only API's APIService, whose caBundle is kept in step too ("": none)
    check_seconds: float = 60.0
    policy: Policy = field(default_factory=Policy)

    @property
    def cert_file(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key_file(self) -> Path:
        return self.directory / KEY_FILE


class Conflict(Exception):
    """Other writers kept winning; the next check tries again."""


class SelfManagedCertificate:
    def __init__(
        self,
        api: client.ApiClient,
        settings: SelfManagedSettings,
        *,
        clock: Callable[[], datetime.datetime] = utcnow,
    ) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock

    @property
    def _secret_path(self) -> str:
        return resource_path("Secret", self.settings.secret_namespace)

    async def _read(self, path: str) -> dict[str, Any] | None:
        return await get_or_none(self.api, path)

    async def _configurations(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for kind in CONFIGURATION_KINDS:
            name = self.settings.api_service if kind == "APIService" else self.settings.configuration_name
            if not name:
                continue
            configuration = await self._read(resource_path(kind, name=name))
            if configuration is None:
                log.debug("no %s %s to keep in step", kind, name)
            else:
                found.append((kind, configuration))
        return found

    async def _write_secret(self, secret: dict[str, Any] | None, material: Material) -> None:
        """Create the Secret, or update the one read; ApiException 409 when another replica wrote first."""
        if secret is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": self.settings.secret_name,
                    "namespace": self.settings.secret_namespace,
                    "labels": MANAGED_BY,
                },
                "type": "kubernetes.io/tls",
                "data": material.secret_data(),
            }
            await json_request(self.api, "POST", self._secret_path, body=body)
        else:
            # The body keeps the resourceVersion that was read: the update is refused if anyone wrote since.
            body = {**secret, "data": material.secret_data()}
            await json_request(self.api, "PUT", f"{self._secret_path}/{self.settings.secret_name}", body=body)

    async def reconcile(self) -> Material:
        """Make the Secret, the configurations and the files right for now; return what is served."""
        for _ in range(MAX_ATTEMPTS):
            # The configurations are read before the Secret. Writers update the Secret before the
            # configurations, so a configuration changed after this read makes our update of it fail with 409
            # instead of putting back an older bundle.
            configurations = await self._configurations()
            secret = await self._read(f"{self._secret_path}/{self.settings.secret_name}")
            material = self._material(secret)
            now = self.clock()
            published = material is not None and all(trusts(c, material.ca.certificate) for _, c in configurations)
            s = self.settings
            step = next_step(material, now=now, policy=s.policy, names=s.names, published=published)
            try:
                if step.writes:
                    material = take_step(step, material, now=now, policy=s.policy, names=s.names)
                    await self._write_secret(secret, material)
                    log.info(
                        "%s: CA %s, serving %s",
                        step.value,
                        describe_certificate(material.ca.certificate),
                        describe_certificate(material.serving.certificate),
                    )
                elif step is Step.AWAIT_BUNDLE:
                    log.info("%s %s", step.value, describe_certificate(material.ca.certificate) if material else "")
                assert material is not None
                await self._publish(configurations, material)
            except ApiException as error:
                if error.status != 409:
                    raise
                log.info("another replica wrote first; following what it wrote")
                continue
            self._write_files(material)
            return material
        raise Conflict(f"the Secret or the configurations kept changing over {MAX_ATTEMPTS} attempts")

    def _material(self, secret: dict[str, Any] | None) -> Material | None:
        if secret is None:
            return None
        try:
            return Material.from_secret_data(secret.get("data") or {})
        except (KeyError, ValueError, TypeError) as error:
            # The error names what is wrong with the data, never the data.
            log.warning(
                "Secret %s/%s does not hold a usable CA and certificate (%s); issuing new ones",
                self.settings.secret_namespace,
                self.settings.secret_name,
                type(error).__name__,
            )
            return None

    async def _publish(self, configurations: list[tuple[str, dict[str, Any]]], material: Material) -> None:
        for kind, configuration in configurations:
            updated = with_ca_bundle(configuration, material.ca_bundle)
            if updated is not None:
                name = configuration["metadata"]["name"]
                await json_request(self.api, "PUT", resource_path(kind, name=name), body=updated)
                log.info("the caBundle of %s %s now trusts %d CA(s)", kind, name, len(material.bundle))

    def _write_files(self, material: Material) -> None:
        """Write what changed, each file by rename; the key before the certificate. In between, the pair on disk
        does not match, and ReloadingCertificate keeps serving the old one until it does."""
        directory = self.settings.directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name, content, mode in (
            (KEY_FILE, material.serving.key_pem, 0o600),
            (CERT_FILE, material.serving.cert_pem, 0o644),
            (CA_FILE, material.bundle_pem, 0o644),
        ):
            target = directory / name
            if target.exists() and target.read_bytes() == content:
                continue
            scratch = directory / f".{name}.new"
            fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
            os.replace(scratch, target)

    async def run(self, tls: ReloadingCertificate) -> None:
        """Check again every ``check_seconds`` (give or take a tenth, so that replicas spread out)."""
        while True:
            delay = self.settings.check_seconds * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret
            await asyncio.sleep(delay)
            try:
                await self.reconcile()
            except Conflict as error:  # other replicas kept writing: one of them has done the work
                log.warning("could not check the serving certificate; trying again later: %s", error)
            except Exception as error:
                if transient(error):
                    log.warning("could not check the serving certificate; will try again: %s", describe_error(error))
                elif isinstance(error, ApiException | OSError):  # a refusal (RBAC?) or an unwritable directory
                    log.error("checking the serving certificate failed; trying again later: %s", describe_error(error))
                else:
                    # A bug of ours must not end renewal for the life of the pod; the traceback holds no key material.
                    log.exception("checking the serving certificate failed; trying again later")
            tls.poll()
