"""Which failures are worth retrying as they are, and which are not. Plain values in, plain answers out.

A failure is *transient* when the same request may well succeed later without anyone changing anything: the
connection broke or timed out, the server was busy (429) or failing (5xx), or our copy was stale (409, a conflict
on a resourceVersion). Anything else the API refuses — 400, 401, 403, 404, 422… — is *terminal*: the same request
fails the same way until a person changes the object, the RBAC, or the configuration. The edge's one
``kubeio.errors.transient`` decides every caught exception by this table, so the controller's work queue, the
leader election, the informers and the webhook all agree.
"""

from __future__ import annotations

REQUEST_TIMEOUT = 408
CONFLICT = 409
TOO_EARLY = 425
TOO_MANY_REQUESTS = 429
TRANSIENT_CLIENT_STATUSES = frozenset({REQUEST_TIMEOUT, CONFLICT, TOO_EARLY, TOO_MANY_REQUESTS})


class InvalidSpec(ValueError):
    """An object asks for something that cannot be done as written: retrying changes nothing, the user must."""


def transient_status(status: int | None) -> bool:
    """Whether an HTTP answer with this status is worth the same request again. No status at all (0 or None)
    means the answer never came: transient."""
    if not status:
        return True
    return status in TRANSIENT_CLIENT_STATUSES or status >= 500
