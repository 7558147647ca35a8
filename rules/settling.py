"""The settling window: when a burst of changes to what one service reads is rolled out. Times are plain seconds.

A change opens a window for the service (unless one is open); every change pushes the run back to ``settle``
seconds after it — a sliding window — but never beyond ``settle_max`` seconds after the change that opened the
window. So changes that keep coming less than ``settle`` apart become one rollout, however long the burst, up to
``settle_max``; a burst longer than that is rolled at ``settle_max`` and what follows opens a new window. A window
closes when its run starts: a change seen after that opens the next one (docs/rollouts.md, "Coalescing").
"""

from __future__ import annotations


def settle_max_of(settle: float, settle_max: float) -> float:
    """The longest a window stays open: ``settle_max``, and never less than the window itself."""
    return max(settle, settle_max)


def settle_due(opened: float | None, now: float, settle: float, settle_max: float) -> tuple[float, float]:
    """For a change seen at ``now`` when the service's open window began at ``opened`` (None: none is open):
    (when the window began, when its run is due)."""
    start = now if opened is None else opened
    return start, min(now + settle, start + settle_max_of(settle, settle_max))
