"""The error model of a reconcile: what a failure means for its key, decided once for every loop."""

from __future__ import annotations

import enum

from kubeio.errors import conflict, transient
from kubeio.rest import ApiException
from rules.failures import InvalidSpec


class Failure(enum.Enum):
    CONFLICT = "conflict"  # our cache was behind the object: a quiet retry
    TRANSIENT = "transient"  # the API or a server is briefly away: retried with per-key backoff
    TERMINAL = "terminal"  # refused for good (403, 422, an invalid spec): told on the object, not retried
    UNEXPECTED = "unexpected"  # a bug, or another system's error: logged in full, retried with backoff


def classify(error: BaseException) -> Failure:
    if conflict(error):
        return Failure.CONFLICT
    if transient(error):
        return Failure.TRANSIENT
    if isinstance(error, ApiException | InvalidSpec):
        return Failure.TERMINAL
    return Failure.UNEXPECTED
