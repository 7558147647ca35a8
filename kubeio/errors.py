"""The one definition of a transient failure, for every caught exception of the product (see rules.failures)."""

from __future__ import annotations

import json
import socket

import aiohttp

from kubeio.rest import ApiException
from rules.failures import CONFLICT, transient_status


def transient(error: BaseException) -> bool:
    """Worth retrying as it is: a broken or timed-out connection, 408/409/425/429, a 5xx. Everything else — a
    terminal API answer, an invalid spec, a bug of ours — is not."""
    if isinstance(error, ApiException):
        return transient_status(error.status)
    # Not every OSError: a missing file or a failed TLS handshake stays failed. A name that does not resolve may
    # resolve in a moment (a Service just created, DNS restarting). aiohttp's errors include a server that
    # disconnects mid-answer and a payload cut short.
    return isinstance(error, TimeoutError | ConnectionError | socket.gaierror | aiohttp.ClientError)


def conflict(error: BaseException) -> bool:
    """Our copy of the object was stale: a quiet retry, not something to report."""
    return isinstance(error, ApiException) and error.status == CONFLICT


def describe_error(error: BaseException) -> str:
    """What went wrong, for a log line, a status condition or an Event. Never an ApiException's body as a whole
    (for a Secret it would carry the data): its status, and the apiserver's one-line message."""
    if isinstance(error, ApiException):
        message = status_message(error)
        return f"HTTP {error.status} {error.reason}" + (f": {message}" if message else "")
    text = str(error).splitlines()[0][:300] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def status_message(error: ApiException) -> str:
    """The ``message`` of the Status the apiserver (or an admission webhook) answered with, on one line."""
    try:
        found = json.loads(error.body or b"{}")
    except ValueError:
        return ""
    message = found.get("message") if isinstance(found, dict) else None
    return str(message).splitlines()[0][:300] if message else ""
