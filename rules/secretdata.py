"""What goes into the Secrets the product writes: values in and out of a Secret's base64 ``data``, passwords from the
OS CSPRNG, and the labels that mark a Secret as the product's."""

from __future__ import annotations

import base64
import binascii
import secrets
import string
from collections.abc import Mapping

from rules.names import COMPONENT_LABEL, MANAGED_BY_LABEL, PRODUCT, SECRET_TYPE_LABEL

# Alphanumeric: ~238 bits, no escaping anywhere (a URL, a libpq URI, htpasswd), well under bcrypt's 72 bytes.
PASSWORD_LENGTH = 40
PASSWORD_ALPHABET = string.ascii_letters + string.digits


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def encode(value: str | bytes) -> str:
    """Base64 text, as a Secret's ``data`` holds it (and a webhook's ``caBundle``, an admission review's patch)."""
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


def decode(value: str) -> bytes:
    """The bytes of a base64 value; ValueError when it is not base64. The same answers as
    ``base64.b64decode(value, validate=True)``, which calls this after a conversion it does not need (the controller
    decodes every key of every Secret at start-up)."""
    return binascii.a2b_base64(value, strict_mode=True)


def decode_data(data: Mapping[str, str]) -> dict[str, str]:
    """A Secret's ``data`` as text; a value that is not base64 (or not UTF-8) reads as empty."""
    decoded = {}
    for key, value in data.items():
        try:
            decoded[key] = decode(value).decode()
        except ValueError:
            decoded[key] = ""
    return decoded


def labels(*, secret_type: str | None = None, component: str | None = None) -> dict[str, str]:
    """The labels of a Secret the product writes: managed by it, and either its ``smll.io/secret-type`` (generated
    credentials that users read) or its component (bookkeeping in the controller's namespace)."""
    found = {MANAGED_BY_LABEL: PRODUCT}
    if secret_type is not None:
        found[SECRET_TYPE_LABEL] = secret_type
    if component is not None:
        found[COMPONENT_LABEL] = component
    return found
