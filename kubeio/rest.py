"""Raw JSON requests through a kubernetes-asyncio ApiClient, for any resource path (built-in kinds and CRDs alike).

Plain dicts in and out: the core works on dicts, and skipping the generated models keeps watches cheap. Answers are
decoded with orjson (a list of thousands of objects is decoded at start-up, where every tenth of a second shows).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import orjson
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = [
    "ApiException",
    "get_or_none",
    "json_request",
    "raw_request",
    "stream_json_lines",
    "without_managed_fields",
]

MERGE_PATCH = "application/merge-patch+json"


async def _call(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None,
    body: Any,
    content_type: str,
    timeout: float | None,
    accept: str = "application/json",
) -> Any:
    headers = {"Accept": accept, "Content-Type": content_type}
    return await api.call_api(
        path,
        method,
        query_params=list((query or {}).items()),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
        _preload_content=False,
        _request_timeout=timeout,
    )


def _raise_for_status(status: int, reason: str | None, body: bytes) -> None:
    if not 200 <= status < 300:
        error = ApiException(status=status, reason=reason)
        error.body = body
        raise error


async def raw_request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 30,
    accept: str = "application/json",
) -> bytes:
    """One request; the answer's bytes, undecoded. Raises ApiException on a non-2xx status."""
    response = await _call(
        api, method, path, query=query, body=body, content_type=content_type, timeout=timeout, accept=accept
    )
    async with response:
        data: bytes = await response.read()
        _raise_for_status(response.status, response.reason, data)
    return data


_MANAGED_FIELDS = b',"managedFields":['
_AFTER_METADATA = b']},"'


def without_managed_fields(data: bytes) -> bytes:
    """The JSON text of objects (one, a list, a watch event) without their ``metadata.managedFields``, cut out
    before decoding: they are most of a Deployment's bytes, nothing an informer of rollouts reads, and the API has
    no way to leave them out.

    Why the cut is exact: in JSON text a ``"`` inside a string is always escaped, so ``,"managedFields":[`` is a key,
    and ``]},"`` can only be structure. ObjectMeta's last field is managedFields (the apiserver writes fields in
    their declared order), its entries hold no arrays, so the first ``]},"`` after it closes that array and the
    metadata, and a field of the object follows. Text that does not fit (no end found, or one past the start of
    another object: an object whose metadata is its last field) is returned whole; a caller that cannot decode the
    result decodes the original (``prepare`` below)."""
    parts = []
    at = 0
    while (begin := data.find(_MANAGED_FIELDS, at)) >= 0:
        end = data.find(_AFTER_METADATA, begin)
        if end < 0 or data.find(b'"metadata":', begin, end) >= 0:  # no end, or it is another object's
            return data
        parts.append(data[at:begin])
        at = end + 1
    if not parts:
        return data
    parts.append(data[at:])
    return b"".join(parts)


def _decode(data: bytes, prepare: Callable[[bytes], bytes] | None) -> Any:
    if prepare is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            return orjson.loads(prepare(data))
    return orjson.loads(data)


async def json_request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 30,
    prepare: Callable[[bytes], bytes] | None = None,
) -> dict[str, Any]:
    """One request; the decoded JSON answer (its text passed through ``prepare`` first, if given, such as
    ``without_managed_fields``). Raises ApiException on a non-2xx status."""
    data = await raw_request(api, method, path, query=query, body=body, content_type=content_type, timeout=timeout)
    decoded = _decode(data, prepare) if data else {}
    return decoded if isinstance(decoded, dict) else {}


async def get_or_none(api: client.ApiClient, path: str) -> dict[str, Any] | None:
    """GET one object; None when it does not exist."""
    try:
        return await json_request(api, "GET", path)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def stream_json_lines(
    api: client.ApiClient,
    path: str,
    *,
    query: Mapping[str, str | int | bool],
    timeout: float,
    prepare: Callable[[bytes], bytes] | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """A watch: one decoded JSON document a line, however long the line is (each passed through ``prepare``
    first, as for ``json_request``)."""
    response = await _call(api, "GET", path, query=query, body=None, content_type="application/json", timeout=timeout)
    async with response:
        if not 200 <= response.status < 300:
            _raise_for_status(response.status, response.reason, await response.read())
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    yield _decode(line, prepare)
