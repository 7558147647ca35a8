"""Raw JSON requests through a kubernetes-asyncio ApiClient, for any resource path (built-in kinds and CRDs alike).

Plain dicts in and out: the core works on dicts, and skipping the generated models keeps watches cheap. Answers are
decoded with orjson (a list of thousands of objects is decoded at start-up, where every tenth of a second shows).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

__all__ = ["ApiException", "get_or_none", "json_request", "raw_request", "stream_json_lines"]

JSON_PATCH = "application/json-patch+json"
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
) -> Any:
    headers = {"Accept": "application/json", "Content-Type": content_type}
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
) -> bytes:
    """One request; the answer's bytes, undecoded. Raises ApiException on a non-2xx status."""
    response = await _call(api, method, path, query=query, body=body, content_type=content_type, timeout=timeout)
    async with response:
        data: bytes = await response.read()
        _raise_for_status(response.status, response.reason, data)
    return data


async def json_request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str | int | bool] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 30,
) -> dict[str, Any]:
    """One request; the decoded JSON answer. Raises ApiException on a non-2xx status."""
    data = await raw_request(api, method, path, query=query, body=body, content_type=content_type, timeout=timeout)
    decoded = orjson.loads(data) if data else {}
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
    api: client.ApiClient, path: str, *, query: Mapping[str, str | int | bool], timeout: float
) -> AsyncIterator[dict[str, Any]]:
    """A watch: one decoded JSON document a line, however long the line is."""
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
                    yield orjson.loads(line)
