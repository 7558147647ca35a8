"""Prometheus metrics of the controller. Labels carry kinds, never names or values."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class ControllerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.rollouts = Counter(
            "smll_rollouts", "Services rolled out because a Secret they read changed.", ["kind"], registry=self.registry
        )
        self.reconcile_errors = Counter(
            "smll_reconcile_errors", "Reconciles that failed and were retried.", ["controller"], registry=self.registry
        )
        self.reconcile_duration = Histogram(
            "smll_reconcile_duration_seconds",
            "Time of one reconcile.",
            ["controller"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queue_depth = Gauge(
            "smll_queue_depth", "Keys waiting in the work queue.", ["controller"], registry=self.registry
        )
        self.leader = Gauge("smll_leader", "1 while this replica holds the leader lease.", registry=self.registry)
