"""Where each kind keeps its pods, by table: when a rollout is complete."""

from __future__ import annotations

from typing import Any

import pytest

from rules.workloads import rollout_complete


def service(kind: str, status: dict[str, Any], *, replicas: int | None = 2, generation: int = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return {"kind": kind, "metadata": {"name": "web", "generation": generation}, "spec": spec, "status": status}


DONE = {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
ONE_DONE = {"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}


def daemons(updated: int, available: int) -> dict[str, Any]:
    """A DaemonSet meant for three nodes."""
    counts = {"desiredNumberScheduled": 3, "updatedNumberScheduled": updated, "numberAvailable": available}
    return service("DaemonSet", {"observedGeneration": 3, **counts})


@pytest.mark.parametrize(
    ("obj", "kind", "complete"),
    [
        pytest.param(service("Deployment", DONE), "Deployment", True, id="deployment-done"),
        pytest.param(
            service("Deployment", {**DONE, "observedGeneration": 2}), "Deployment", False, id="spec-not-yet-seen"
        ),
        pytest.param(
            service("Deployment", {**DONE, "replicas": 3}), "Deployment", False, id="an-old-pod-still-running"
        ),
        pytest.param(service("Deployment", {**DONE, "updatedReplicas": 1}), "Deployment", False, id="not-all-updated"),
        pytest.param(
            service("Deployment", {**DONE, "availableReplicas": 1}), "Deployment", False, id="not-all-available"
        ),
        pytest.param(
            service("Deployment", ONE_DONE, replicas=None),
            "Deployment",
            True,
            id="replicas-default-to-one",
        ),
        pytest.param(
            service("Deployment", {"observedGeneration": 3}, replicas=0), "Deployment", True, id="scaled-to-zero"
        ),
        pytest.param(
            service("StatefulSet", {**DONE, "currentRevision": "web-1", "updateRevision": "web-1"}),
            "StatefulSet",
            True,
            id="statefulset-done",
        ),
        pytest.param(
            service("StatefulSet", {**DONE, "currentRevision": "web-1", "updateRevision": "web-2"}),
            "StatefulSet",
            False,
            id="statefulset-revision-behind",
        ),
        pytest.param(
            daemons(updated=3, available=3),
            "DaemonSet",
            True,
            id="daemonset-done",
        ),
        pytest.param(
            daemons(updated=2, available=3),
            "DaemonSet",
            False,
            id="daemonset-node-not-updated",
        ),
        pytest.param(
            daemons(updated=3, available=2),
            "DaemonSet",
            False,
            id="daemonset-pod-not-available",
        ),
        pytest.param({"kind": "Deployment"}, "Deployment", False, id="no-status-one-replica-wanted"),
    ],
)
def test_a_rollout_is_complete_when_every_pod_runs_the_current_template(
    obj: dict[str, Any], kind: str, complete: bool
) -> None:
    assert rollout_complete(obj, kind) is complete
