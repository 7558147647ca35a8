"""When a Lease may be taken: by this replica's own monotonic clock, never another replica's renewTime."""

from __future__ import annotations

from typing import Any

import pytest

from rules.lease import lease_free

HELD = {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": "2020-01-01T00:00:00.000000Z"}


@pytest.mark.parametrize(
    ("spec", "seen_for", "expected"),
    [
        pytest.param({}, 0.0, True, id="no-lease-holder"),
        pytest.param({**HELD, "holderIdentity": ""}, 0.0, True, id="released"),
        pytest.param({**HELD, "holderIdentity": "me"}, 0.0, True, id="ours"),
        pytest.param(HELD, 0.0, False, id="just-seen-change-even-with-an-ancient-renew-time"),
        pytest.param(HELD, 14.9, False, id="unchanged-just-under-its-duration"),
        pytest.param(HELD, 15.0, True, id="unchanged-for-exactly-its-duration"),
        pytest.param({**HELD, "leaseDurationSeconds": 60}, 30.0, False, id="the-records-own-duration-counts"),
        pytest.param({**HELD, "leaseDurationSeconds": None}, 15.0, True, id="no-duration-uses-ours"),
        pytest.param({**HELD, "leaseDurationSeconds": "x"}, 14.0, False, id="odd-duration-uses-ours"),
    ],
)
def test_a_lease_is_free_only_when_unchanged_for_its_duration_on_our_clock(
    spec: dict[str, Any], seen_for: float, expected: bool
) -> None:
    assert lease_free(spec, identity="me", observed_at=1000.0, now=1000.0 + seen_for, default_seconds=15) is expected
