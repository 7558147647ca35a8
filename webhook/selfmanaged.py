"""Self-managed TLS: the webhook makes its own CA and serving certificate, keeps them in a Secret, renews them,
and keeps the ``caBundle`` of its webhook configurations in step.

Two halves. The decisions — does this pair need renewing at time T, what should the Secret hold next, what
``caBundle`` should a configuration carry — are plain functions over certificates and dicts, tested by table. The
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
import base64
import copy
import datetime
import enum
import hashlib
import ipaddress
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import exceptions, x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID
from kubernetes_asyncio import client

from kubeio.rest import ApiException, get_or_none, json_request
from webhook.certs import KeyPair, make_ca, make_leaf
from webhook.tls import ReloadingCertificate

log = logging.getLogger(__name__)

YEAR = datetime.timedelta(days=365)
CONFIGURATION_PATHS = {
    "MutatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
}
CERT_FILE, KEY_FILE, CA_FILE, CA_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"
MANAGED_BY = {"app.kubernetes.io/managed-by": "smll-secrets-webhook"}
MAX_ATTEMPTS = 5

# ---------------------------------------------------------------------------------------------------------------
# The decisions: no I/O, the time is an argument.


@dataclass(frozen=True)
class Policy:
    """How long certificates live, and how much of its life may be left before one is renewed."""

    ca_validity: datetime.timedelta = 5 * YEAR
    serving_validity: datetime.timedelta = YEAR
    renew_fraction: float = 1 / 3


@dataclass(frozen=True)
class SubjectNames:
    """What the serving certificate must be valid for."""

    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...] = ()

    @classmethod
    def for_service(
        cls, service: str, namespace: str, *, extra_dns: Sequence[str] = (), extra_ips: Sequence[str] = ()
    ) -> SubjectNames:
        """The names the API server uses for a service reference, plus any extra ones (a local run by url)."""
        svc = f"{service}.{namespace}.svc"
        return cls((service, f"{service}.{namespace}", svc, f"{svc}.cluster.local", *extra_dns), tuple(extra_ips))

    def of(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` names exactly these subjects."""
        try:
            sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        except x509.ExtensionNotFound:
            return False
        assert isinstance(sans, x509.SubjectAlternativeName)
        dns = set(sans.get_values_for_type(x509.DNSName))
        ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        return dns == set(self.dns_names) and ips == {str(ipaddress.ip_address(ip)) for ip in self.ip_addresses}


@dataclass(frozen=True)
class Material:
    """What the Secret holds: the CA that signs now, the serving pair, and the bundle that clients trust (the
    signing CA first, then older CAs kept for the overlap)."""

    ca: KeyPair
    serving: KeyPair
    bundle: tuple[x509.Certificate, ...]

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in self.bundle)

    @property
    def ca_bundle(self) -> str:
        """The value of a webhook's ``clientConfig.caBundle``."""
        return base64.b64encode(self.bundle_pem).decode()

    def secret_data(self) -> dict[str, str]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        return {
            CERT_FILE: b64(self.serving.cert_pem),
            KEY_FILE: b64(self.serving.key_pem),
            CA_FILE: b64(self.bundle_pem),
            CA_KEY: b64(self.ca.key_pem),
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> Material:
        """Raises ValueError (or KeyError) when the data is not a complete, readable set."""
        raw = {key: base64.b64decode(data[key], validate=True) for key in (CERT_FILE, KEY_FILE, CA_FILE, CA_KEY)}
        bundle = tuple(x509.load_pem_x509_certificates(raw[CA_FILE]))
        ca = KeyPair(bundle[0].public_bytes(serialization.Encoding.PEM), raw[CA_KEY])
        serving = KeyPair(raw[CERT_FILE], raw[KEY_FILE])
        for pair in (ca, serving):
            pair.certificate  # noqa: B018 - parse now, so that a bad Secret fails here and not later
            serialization.load_pem_private_key(pair.key_pem, password=None)
        return cls(ca, serving, bundle)


class Step(enum.Enum):
    KEEP = "keep"
    ISSUE = "issue a new CA and serving certificate"
    ROTATE_CA = "put a new CA first in the bundle"
    AWAIT_BUNDLE = "wait until the webhook configurations trust the new CA"
    REISSUE_SERVING = "issue a new serving certificate"
    PRUNE_BUNDLE = "drop expired CAs from the bundle"

    @property
    def writes(self) -> bool:
        return self not in (Step.KEEP, Step.AWAIT_BUNDLE)


def _lifetime(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def expired(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return now >= cert.not_valid_after_utc


def needs_renewal(cert: x509.Certificate, now: datetime.datetime, *, renew_fraction: float) -> bool:
    """Less than ``renew_fraction`` of the certificate's lifetime is left at ``now`` (or it has expired)."""
    not_before, not_after = _lifetime(cert)
    return not_after - now < (not_after - not_before) * renew_fraction


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


def key_matches(pair: KeyPair) -> bool:
    key = serialization.load_pem_private_key(pair.key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        key.public_key().public_bytes(serialization.Encoding.DER, public)
        == pair.certificate.public_key().public_bytes(serialization.Encoding.DER, public)
    )


def trusted_bundle(
    signing: x509.Certificate, previous: Sequence[x509.Certificate], now: datetime.datetime
) -> tuple[x509.Certificate, ...]:
    """The signing CA first, then every other CA of ``previous`` that has not expired, each once."""
    bundle = [signing]
    seen = {fingerprint(signing)}
    for cert in previous:
        if fingerprint(cert) not in seen and not expired(cert, now):
            bundle.append(cert)
            seen.add(fingerprint(cert))
    return tuple(bundle)


def next_step(
    material: Material | None, *, now: datetime.datetime, policy: Policy, names: SubjectNames, published: bool
) -> Step:
    """What the Secret needs next. ``published``: every webhook configuration already trusts ``material.ca``."""
    if material is None:
        return Step.ISSUE
    ca, serving = material.ca.certificate, material.serving.certificate
    if expired(ca, now) or not key_matches(material.ca):
        return Step.ISSUE
    if needs_renewal(ca, now, renew_fraction=policy.renew_fraction):
        return Step.ROTATE_CA
    if not signed_by(serving, ca):
        issuers = [cert for cert in material.bundle if signed_by(serving, cert)]
        still_good = bool(issuers) and not expired(serving, now) and key_matches(material.serving)
        return Step.AWAIT_BUNDLE if still_good and not published else Step.REISSUE_SERVING
    if (
        needs_renewal(serving, now, renew_fraction=policy.renew_fraction)
        or not names.of(serving)
        or not key_matches(material.serving)
    ):
        return Step.REISSUE_SERVING
    if [fingerprint(c) for c in material.bundle] != [fingerprint(c) for c in trusted_bundle(ca, material.bundle, now)]:
        return Step.PRUNE_BUNDLE
    return Step.KEEP


def ca_name(names: SubjectNames) -> str:
    return f"{names.dns_names[0]} webhook CA"


def take_step(
    step: Step, material: Material | None, *, now: datetime.datetime, policy: Policy, names: SubjectNames
) -> Material:
    """The Secret's next contents. Makes keys, so it is not pure, but it reads no clock: ``now`` is given."""

    def serving_from(ca: KeyPair) -> KeyPair:
        # Never valid past the CA that signs it.
        validity = min(policy.serving_validity, ca.not_after - now)
        return make_leaf(
            ca,
            names.dns_names[0],
            valid_for=validity,
            dns_names=names.dns_names,
            ip_addresses=names.ip_addresses,
            now=now,
        )

    previous = material.bundle if material else ()
    if step is Step.ISSUE or material is None:
        ca = make_ca(ca_name(names), valid_for=policy.ca_validity, now=now)
        return Material(ca, serving_from(ca), trusted_bundle(ca.certificate, previous, now))
    if step is Step.ROTATE_CA:
        ca = make_ca(ca_name(names), valid_for=policy.ca_validity, now=now)
        return Material(ca, material.serving, trusted_bundle(ca.certificate, previous, now))
    if step is Step.REISSUE_SERVING:
        return Material(material.ca, serving_from(material.ca), trusted_bundle(material.ca.certificate, previous, now))
    if step is Step.PRUNE_BUNDLE:
        return Material(material.ca, material.serving, trusted_bundle(material.ca.certificate, previous, now))
    return material


def _bundle_certs(ca_bundle: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(base64.b64decode(ca_bundle))
    except ValueError:
        return []


def trusts(configuration: Mapping[str, Any], ca: x509.Certificate) -> bool:
    """Every webhook of the configuration has ``ca`` in its caBundle."""
    wanted = fingerprint(ca)
    return all(
        wanted in {fingerprint(c) for c in _bundle_certs((hook.get("clientConfig") or {}).get("caBundle") or "")}
        for hook in configuration.get("webhooks") or []
    )


def with_ca_bundle(configuration: Mapping[str, Any], ca_bundle: str) -> dict[str, Any] | None:
    """The configuration with ``ca_bundle`` on every webhook, or None when it carries it already."""
    hooks = configuration.get("webhooks") or []
    if all((hook.get("clientConfig") or {}).get("caBundle") == ca_bundle for hook in hooks):
        return None
    updated = copy.deepcopy(dict(configuration))
    for hook in updated["webhooks"]:
        hook.setdefault("clientConfig", {})["caBundle"] = ca_bundle
    return updated


def describe(cert: x509.Certificate) -> str:
    """For logs: which certificate, never what is secret."""
    until = f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, valid until {until})"


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
    configuration_name: str = "smll-secrets"
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
        return f"/api/v1/namespaces/{self.settings.secret_namespace}/secrets"

    async def _read(self, path: str) -> dict[str, Any] | None:
        return await get_or_none(self.api, path)

    async def _configurations(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for kind, collection in CONFIGURATION_PATHS.items():
            configuration = await self._read(f"{collection}/{self.settings.configuration_name}")
            if configuration is None:
                log.debug("no %s %s to keep in step", kind, self.settings.configuration_name)
            else:
                found.append((collection, configuration))
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
                        describe(material.ca.certificate),
                        describe(material.serving.certificate),
                    )
                elif step is Step.AWAIT_BUNDLE:
                    log.info("%s %s", step.value, describe(material.ca.certificate) if material else "")
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
        for collection, configuration in configurations:
            updated = with_ca_bundle(configuration, material.ca_bundle)
            if updated is not None:
                name = configuration["metadata"]["name"]
                await json_request(self.api, "PUT", f"{collection}/{name}", body=updated)
                kind = collection.rsplit("/", 1)[-1]
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
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError, Conflict) as error:
                log.warning("could not check the serving certificate; trying again later: %s", _reason(error))
            except Exception:
                # A bug of ours must not end renewal for the life of the pod; the traceback holds no key material.
                log.exception("checking the serving certificate failed; trying again later")
            tls.poll()


def _reason(error: Exception) -> str:
    # ApiException's text carries the response body, which for a Secret would be its data.
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return str(error) or type(error).__name__
