"""When a Lease may be taken: judged by this replica's own clock, never by another replica's timestamps.

Another replica's ``renewTime`` is written by its clock, which may be minutes off ours. So, as client-go does,
a candidate remembers when *it* last saw the Lease record change, on its own monotonic clock, and takes the Lease
only when the record has not changed for ``leaseDurationSeconds`` of that clock. A holder that renews changes
the record every few seconds, however wrong its wall clock is; a holder that stopped leaves it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def lease_free(spec: Mapping[str, Any], *, identity: str, observed_at: float, now: float, default_seconds: int) -> bool:
    """Whether ``identity`` may write itself into the Lease: nobody holds it, it holds it already, or the record
    has not changed since ``observed_at`` for the lease's duration (``now`` and ``observed_at`` on the same
    monotonic clock)."""
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    try:
        duration = int(spec.get("leaseDurationSeconds") or default_seconds)
    except (TypeError, ValueError):
        duration = default_seconds
    return now - observed_at >= max(duration, 1)
