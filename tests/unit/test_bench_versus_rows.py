"""The side-by-side bench's arithmetic: reading Reloader's sync count, and how a row shows values and the ratio."""

from __future__ import annotations

from bench.reloader_compare import Sample, parse_secret_adds, ratio, spread

METRICS = """\
# HELP reloader_events_received_total Total number of events received by type and resource.
# TYPE reloader_events_received_total counter
reloader_events_received_total{event_type="add",resource_type="secrets"} 10004
reloader_events_received_total{event_type="update",resource_type="secrets"} 3
reloader_events_received_total{event_type="add",resource_type="configmaps"} 12
reloader_events_processed_total{event_type="add",resource_type="secrets",result="success"} 7
"""


def test_only_secrets_added_count_as_synced() -> None:
    assert parse_secret_adds(METRICS) == 10004
    assert parse_secret_adds("") == 0


def samples(*values: float | None) -> list[Sample]:
    return [Sample(value, "1.0", "" if value is not None else "3 of 1,000") for value in values]


def test_spread_shows_one_value_or_the_range() -> None:
    assert spread(samples(9.614), "s") == "9.61 s"
    assert spread(samples(2.5, 2.3), "s") == "2.30-2.50 s"
    assert spread(samples(198.2), "s") == "198 s"
    assert spread(samples(106.4, 106.2), "MiB") == "106 MiB"
    assert spread(samples(9.6, None), "s") == "not reached: 3 of 1,000"
    assert spread([], "s") == "—"


def test_ratio_is_reloader_over_smll_secrets_of_the_medians() -> None:
    assert ratio(samples(3.7), samples(198.0)) == "54"
    assert ratio(samples(1.0), samples(10.0)) == "10"
    assert ratio(samples(2.0, 2.4, 2.2), samples(0.5, 0.6)) == "0.25"
    assert ratio(samples(22.3), samples(0.01)) == "0.00045"
    assert ratio(samples(0.0), samples(0.02)) == "20"  # a zero is read as 1 ms, never a division by zero
    assert ratio(samples(9.6), samples(None)) == "—"
    assert ratio(samples(9.6), []) == "—"
