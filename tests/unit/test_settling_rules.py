"""The settling window's rule, by table: when a service's run is due after a change."""

from __future__ import annotations

import pytest

from rules.settling import settle_due, settle_max_of


@pytest.mark.parametrize(
    ("opened", "now", "settle", "settle_max", "expected"),
    [
        pytest.param(None, 100.0, 2, 30, (100.0, 102.0), id="a-first-change-opens-a-window"),
        pytest.param(100.0, 101.5, 2, 30, (100.0, 103.5), id="each-change-slides-the-run-back"),
        pytest.param(100.0, 127.0, 2, 30, (100.0, 129.0), id="up-to-the-maximum"),
        pytest.param(100.0, 129.5, 2, 30, (100.0, 130.0), id="never-beyond-the-maximum-after-the-first-change"),
        pytest.param(None, 100.0, 0, 30, (100.0, 100.0), id="no-window-runs-now"),
        pytest.param(100.0, 101.0, 5, 1, (100.0, 105.0), id="a-maximum-below-the-window-is-the-window"),
    ],
)
def test_when_the_run_is_due(
    opened: float | None, now: float, settle: float, settle_max: float, expected: tuple[float, float]
) -> None:
    assert settle_due(opened, now, settle, settle_max) == expected


def test_the_maximum_is_never_less_than_the_window() -> None:
    assert settle_max_of(2, 30) == 30
    assert settle_max_of(60, 30) == 60
