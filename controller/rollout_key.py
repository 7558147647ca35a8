"""The key of the rollout digests (HMAC-SHA256 of each Secret key, bound to its namespace and Secret): one Secret
in the controller's namespace, made once, so that every replica and every restart computes the same digests."""

from __future__ import annotations

import binascii
import secrets

from kubernetes_asyncio import client

from controller.frame.secrets import secret_body
from kubeio.events import record_event
from kubeio.rest import ApiException, get_or_none, json_request
from rules.names import NAME_LABEL, PRODUCT
from rules.secretdata import decode
from rules.workloads import resource_path

HMAC_SECRET_KEY = "key"
HMAC_KEY_BYTES = 32
HMAC_KEY_MIN_BYTES = 16


class RolloutKeyError(Exception):
    """The rollout key's Secret exists but holds no usable key. Not repaired on its own: a new key changes every
    stored digest, which rolls every service that rolls on changes once; deleting the Secret is that decision."""


async def ensure_rollout_key(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The key of the rollout digests: kept in a Secret so every replica and every restart uses the same one."""
    path = resource_path("Secret", namespace)
    for _ in range(3):
        found = await get_or_none(api, f"{path}/{name}")
        if found is not None:
            problem = rollout_key_problem(found.get("data") or {})
            if problem is None:
                return decode(found["data"][HMAC_SECRET_KEY])
            message = (
                f"the rollout key Secret {namespace}/{name} {problem}. Its digests cannot be checked any more: "
                f"delete it (kubectl -n {namespace} delete secret {name}) and the controller makes a new key; every "
                "service that rolls on changes then rolls once"
            )
            await record_event(
                api,
                api_version="v1",
                kind="Secret",
                name=name,
                namespace=namespace,
                uid=str((found.get("metadata") or {}).get("uid", "")),
                reason="RolloutKeyInvalid",
                message=message,
                warning=True,
            )
            raise RolloutKeyError(message)
        body = secret_body(
            namespace, name, {HMAC_SECRET_KEY: secrets.token_bytes(HMAC_KEY_BYTES)}, labels={NAME_LABEL: PRODUCT}
        )
        try:
            await json_request(api, "POST", path, body=body)
        except ApiException as error:
            if error.status != 409:  # another replica made it first: read theirs
                raise
    raise RuntimeError(f"could not read or create the Secret {namespace}/{name}")


def rollout_key_problem(data: dict[str, str]) -> str | None:
    """What is wrong with the rollout key Secret's data, in words that name entries and never show a value."""
    if HMAC_SECRET_KEY not in data:
        others = ", ".join(sorted(data)) or "none"
        return f'has no "{HMAC_SECRET_KEY}" entry (its entries: {others})'
    try:
        key = decode(data[HMAC_SECRET_KEY])
    except (binascii.Error, ValueError, TypeError):
        return f'has a "{HMAC_SECRET_KEY}" entry that is not base64'
    if len(key) < HMAC_KEY_MIN_BYTES:
        return f'has a "{HMAC_SECRET_KEY}" entry of {len(key)} bytes, fewer than {HMAC_KEY_MIN_BYTES}'
    return None
