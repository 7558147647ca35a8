"""Where each kind keeps its pods, by table: when a rollout is complete."""

from __future__ import annotations

from typing import Any

import pytest

from rules.workloads import (
    KINDS,
    POD_KINDS,
    annotations_of,
    dict_or_empty,
    dicts_in,
    is_terminating,
    labels_of,
    pod_template,
    resource_path,
    rollout_complete,
)


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


@pytest.mark.parametrize(
    ("kind", "namespace", "name", "path"),
    [
        pytest.param("Deployment", None, None, "/apis/apps/v1/deployments", id="apps-everywhere"),
        pytest.param("CronJob", "shop", None, "/apis/batch/v1/namespaces/shop/cronjobs", id="batch-in-a-namespace"),
        pytest.param("Pod", "shop", "web-1", "/api/v1/namespaces/shop/pods/web-1", id="core-one-object"),
        pytest.param("Namespace", None, "shop", "/api/v1/namespaces/shop", id="a-namespace"),
        pytest.param("Database", "shop", "orders", "/apis/smll.io/v1alpha1/namespaces/shop/databases/orders", id="crd"),
    ],
)
def test_every_api_path_comes_from_the_table_of_kinds(
    kind: str, namespace: str | None, name: str | None, path: str
) -> None:
    assert resource_path(kind, namespace, name) == path


def test_the_kinds_that_run_pods_have_a_pod_template_and_a_pod_is_its_own() -> None:
    assert {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"} == POD_KINDS
    cronjob = {"spec": {"jobTemplate": {"spec": {"template": {"metadata": {"name": "t"}}}}}}
    pod = {"kind": "Pod", "spec": {}}
    assert pod_template(cronjob, "CronJob") == {"metadata": {"name": "t"}}
    assert pod_template(pod) is pod
    assert pod_template({"data": {}}, "Secret") is None
    assert all(KINDS[kind].template is None for kind in KINDS.keys() - POD_KINDS)


@pytest.mark.parametrize(
    ("namespace", "terminating"),
    [
        pytest.param({"metadata": {"name": "a"}, "status": {"phase": "Active"}}, False, id="active"),
        pytest.param({"metadata": {"deletionTimestamp": "2026-11-27T00:00:00Z"}}, True, id="deleted"),
        pytest.param({"metadata": {}, "status": {"phase": "Terminating"}}, True, id="terminating-phase"),
        pytest.param({}, False, id="empty"),
    ],
)
def test_a_namespace_is_terminating_once_deleted(namespace: dict[str, Any], terminating: bool) -> None:
    assert is_terminating(namespace) is terminating


def test_malformed_objects_read_as_empty() -> None:
    assert dict_or_empty(["not", "a", "dict"]) == {}
    assert dicts_in([{"a": 1}, "x", None, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert dicts_in({"a": 1}) == []
    obj = {"metadata": {"labels": {"a": "1", "n": 2}, "annotations": "not-a-dict"}}
    assert labels_of(obj) == {"a": "1"}
    assert annotations_of(obj) == {}
    assert labels_of(None) == {}


@pytest.mark.parametrize(
    ("namespace", "name", "problem"),
    [
        pytest.param("../kube-system", None, "namespace '../kube-system' holds '/'", id="namespace-up"),
        pytest.param("shop", "a/b", "name 'a/b' holds '/'", id="name-slash"),
        pytest.param("shop", "..", "name '..' is a relative path", id="name-dotdot"),
        pytest.param("", None, "namespace '' is empty", id="namespace-empty"),
        pytest.param("shop", "x%2Fy", "name 'x%2Fy' holds '%'", id="name-escaped"),
        pytest.param("shop", "x?watch=1", "name 'x?watch=1' holds '?'", id="name-query"),
    ],
)
def test_no_name_reaches_another_api_path(namespace: str, name: str | None, problem: str) -> None:
    with pytest.raises(ValueError, match="no API path for a Secret") as refused:
        resource_path("Secret", namespace, name)
    assert problem in str(refused.value)
