"""Self-managed TLS, the decisions: does this pair need renewing at time T, what should the Secret hold next, what
``caBundle`` should a webhook configuration carry. Plain functions over certificates and dicts (the time is an
argument), tested by table; webhook/selfmanaged.py is the edge that reads, applies one decision and writes.
"""

from __future__ import annotations

import copy
import datetime
import enum
import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from rules.certs import KeyPair, make_ca, make_leaf
from rules.secretdata import decode, encode

YEAR = datetime.timedelta(days=365)
# The keys of the Secret that holds the pair and its CA.
CERT_FILE, KEY_FILE, CA_FILE, CA_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"


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
        return encode(self.bundle_pem)

    def secret_data(self) -> dict[str, str]:
        return {
            CERT_FILE: encode(self.serving.cert_pem),
            KEY_FILE: encode(self.serving.key_pem),
            CA_FILE: encode(self.bundle_pem),
            CA_KEY: encode(self.ca.key_pem),
        }

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> Material:
        """Raises ValueError (or KeyError) when the data is not a complete, readable set."""
        raw = {key: decode(data[key]) for key in (CERT_FILE, KEY_FILE, CA_FILE, CA_KEY)}
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
        return x509.load_pem_x509_certificates(decode(ca_bundle))
    except ValueError:
        return []


def _client_configs(configuration: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where the object keeps its caBundle: each webhook's clientConfig, or an APIService's spec."""
    if configuration.get("kind") == "APIService":
        return [configuration.setdefault("spec", {})] if isinstance(configuration, dict) else []
    return [hook.setdefault("clientConfig", {}) for hook in configuration.get("webhooks") or []]


def trusts(configuration: Mapping[str, Any], ca: x509.Certificate) -> bool:
    """Every webhook of the configuration (or the APIService) has ``ca`` in its caBundle."""
    wanted = fingerprint(ca)
    return all(
        wanted in {fingerprint(c) for c in _bundle_certs(config.get("caBundle") or "")}
        for config in _client_configs(copy.deepcopy(dict(configuration)))
    )


def with_ca_bundle(configuration: Mapping[str, Any], ca_bundle: str) -> dict[str, Any] | None:
    """The configuration with ``ca_bundle`` on every webhook (or the APIService), or None when it carries it."""
    if all(config.get("caBundle") == ca_bundle for config in _client_configs(copy.deepcopy(dict(configuration)))):
        return None
    updated = copy.deepcopy(dict(configuration))
    for config in _client_configs(updated):
        config["caBundle"] = ca_bundle
    return updated


def describe_certificate(cert: x509.Certificate) -> str:
    """For logs: which certificate, never what is secret."""
    until = f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, valid until {until})"
