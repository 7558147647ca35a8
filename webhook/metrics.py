"""Prometheus metrics of the admission server. Labels carry kinds and outcomes, never names or values."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reviews = Counter(
            "smll_admission_reviews",
            "Admission reviews answered, by webhook, operation and outcome.",
            ["webhook", "operation", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "smll_admission_review_duration_seconds",
            "Time to answer one admission review, from the body read to the response built.",
            ["webhook"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
