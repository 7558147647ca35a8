"""Protection's pure rules, by table: which objects run pods, and how each use of a Secret is named."""

from __future__ import annotations

from typing import Any

import pytest

from rules.protection import Referrer, dormant_warnings, referrer_of, usage, usage_message
from rules.text import LIMIT
from tests.factories import JsonObject, container, pod_spec, workload


def env_ref(var: str, secret: str, key: str) -> JsonObject:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


USING_KEY = pod_spec(container("web", env=[env_ref("API_KEY", "stripe", "KEY")]))
USING_OTHER_KEY = pod_spec(container("web", env=[env_ref("API_KEY", "stripe", "NEW_KEY")]))
USING_NOTHING = pod_spec(container("web"))


def obj(
    kind: str,
    name: str,
    spec: JsonObject,
    *,
    owner: JsonObject | None = None,
    replicas: int | None = None,
    status: JsonObject | None = None,
    generation: int | None = None,
    annotations: dict[str, str] | None = None,
) -> JsonObject:
    found = workload(kind, name, spec=spec, annotations=annotations)
    found["metadata"]["uid"] = f"uid-{name}"
    if owner is not None:
        found["metadata"]["ownerReferences"] = [
            {
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    if replicas is not None:
        found["spec"]["replicas"] = replicas
    if status is not None:
        found["status"] = status
    if generation is not None:
        found["metadata"]["generation"] = generation
    return found


def referrers(*objects: JsonObject) -> list[Referrer]:
    return [referrer_of(o, o["kind"]) for o in objects]


WEB_UNLINKED = obj("Deployment", "web", USING_NOTHING)
WEB_LINKED = obj("Deployment", "web", USING_KEY)


def old_rs(
    replicas: int,
    pods: int,
    *,
    owner: JsonObject = WEB_UNLINKED,
    revision: str = "2",
    generation: int | None = None,
    **extra: Any,
) -> JsonObject:
    return obj(
        "ReplicaSet",
        f"web-6c4b599dd{revision}",
        USING_KEY,
        owner=owner,
        replicas=replicas,
        status={"replicas": pods, **extra},
        generation=generation,
        annotations={"deployment.kubernetes.io/revision": revision},
    )


def pod_of(owner: JsonObject, name: str, spec: JsonObject = USING_KEY, **status: Any) -> JsonObject:
    return obj("Pod", name, spec, owner=owner, status=status or None)


RS_RUNNING = old_rs(1, 1)
RS_IDLE = old_rs(0, 0)
REPORT = obj("CronJob", "report", USING_NOTHING)
JOB_DONE = obj(
    "Job",
    "report-1",
    USING_KEY,
    owner=REPORT,
    status={"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1},
)
JOB_RUNNING = obj("Job", "report-2", USING_KEY, owner=REPORT, status={"active": 1})
DB = obj("StatefulSet", "db", USING_NOTHING)
WEB_LINKED_RS = old_rs(1, 1, owner=WEB_LINKED)
WEB_CURRENT_RS = obj("ReplicaSet", "web-1", USING_NOTHING, owner=WEB_UNLINKED)
WEB_NEW_KEY = obj("Deployment", "web", USING_OTHER_KEY)


@pytest.mark.parametrize(
    ("objects", "report"),
    [
        pytest.param([WEB_UNLINKED, RS_IDLE], {}, id="revision-history-at-zero-replicas-never-blocks"),
        pytest.param(
            [WEB_UNLINKED, RS_RUNNING, pod_of(RS_RUNNING, "web-6c4b599dd2-x")],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 1 pod, rolling out",)},
            id="old-replicaset-mid-rollout-is-named-as-such",
        ),
        pytest.param(
            [WEB_UNLINKED, RS_IDLE, pod_of(RS_IDLE, "web-6c4b599dd2-x")],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 1 pod, scaling down",)},
            id="scaled-to-zero-but-its-pod-is-still-terminating",
        ),
        pytest.param(
            [WEB_UNLINKED, old_rs(0, 0, terminatingReplicas=2)],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 2 pods, scaling down",)},
            id="scaled-to-zero-with-terminating-replicas-in-its-status",
        ),
        pytest.param(
            [WEB_UNLINKED, old_rs(0, 1)],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 1 pod, scaling down",)},
            id="scaled-to-zero-but-its-controller-has-not-removed-the-pod-yet",
        ),
        pytest.param(
            [WEB_UNLINKED, old_rs(0, 0, observedGeneration=1, generation=2)],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 0 pods, scaling down",)},
            id="a-status-older-than-the-spec-is-not-believed",
        ),
        pytest.param(
            [WEB_LINKED, WEB_LINKED_RS, pod_of(WEB_LINKED_RS, "web-x")],
            {"deployment/web": ("env API_KEY",)},
            id="current-replicaset-and-pods-are-the-deployment-itself",
        ),
        pytest.param(
            [WEB_LINKED, old_rs(1, 1, owner=WEB_LINKED, revision="1"), old_rs(1, 1, owner=WEB_LINKED, revision="3")],
            {"deployment/web": ("env API_KEY",)},
            id="an-old-replicaset-with-the-same-use-adds-nothing",
        ),
        pytest.param(
            [WEB_NEW_KEY, old_rs(1, 1, owner=WEB_NEW_KEY)],
            {"deployment/web": ("env API_KEY", "old ReplicaSet web-6c4b599dd2, 1 pod, rolling out")},
            id="same-var-other-key-is-a-different-use",
        ),
        pytest.param(
            [RS_RUNNING],
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 1 pod, rolling out",)},
            id="owner-not-in-the-read-does-not-use-the-secret",
        ),
        pytest.param(
            [REPORT, JOB_DONE, pod_of(JOB_DONE, "report-1-x", phase="Succeeded")], {}, id="finished-job-never-blocks"
        ),
        pytest.param(
            [REPORT, JOB_RUNNING, pod_of(JOB_RUNNING, "report-2-x", phase="Running")],
            {"cronjob/report": ("old Job report-2, 1 pod, not finished",)},
            id="a-job-still-running-an-old-template",
        ),
        pytest.param(
            [
                REPORT,
                obj(
                    "Job",
                    "report-3",
                    USING_KEY,
                    owner=REPORT,
                    status={"conditions": [{"type": "Failed", "status": "True"}], "terminating": 1},
                ),
            ],
            {"cronjob/report": ("old Job report-3, 1 pod, not finished",)},
            id="a-failed-job-whose-pod-is-still-terminating",
        ),
        pytest.param([obj("Pod", "tool", USING_KEY, status={"phase": "Succeeded"})], {}, id="finished-bare-pod"),
        pytest.param(
            [obj("Pod", "tool", USING_KEY, status={"phase": "Pending"})], {"pod/tool": ("env API_KEY",)}, id="bare-pod"
        ),
        pytest.param(
            [DB, pod_of(DB, "db-0"), pod_of(DB, "db-1"), pod_of(DB, "db-2", USING_NOTHING)],
            {"statefulset/db": ("2 old pods, rolling out",)},
            id="statefulset-pods-of-an-old-revision",
        ),
        pytest.param(
            [
                WEB_UNLINKED,
                WEB_CURRENT_RS,
                pod_of(WEB_CURRENT_RS, "web-1-x", pod_spec(container("web"), imagePullSecrets=[{"name": "stripe"}])),
            ],
            {"deployment/web": ("imagePullSecrets",)},
            id="a-pull-secret-from-the-service-account",
        ),
        pytest.param(
            [obj("ReplicaSet", "bare", USING_KEY, replicas=0, status={"replicas": 0})], {}, id="bare-replicaset-at-zero"
        ),
    ],
)
def test_who_blocks_a_delete_and_how_it_is_named(objects: list[JsonObject], report: dict[str, tuple[str, ...]]) -> None:
    found = referrers(*objects)

    assert usage("stripe", found, {r.uid: r for r in found}).report == report


def test_a_key_removal_is_judged_on_what_still_runs() -> None:
    found = referrers(WEB_NEW_KEY, old_rs(1, 1, owner=WEB_NEW_KEY), old_rs(0, 0, owner=WEB_NEW_KEY, revision="1"))

    judged = usage("stripe", found, {r.uid: r for r in found}, keys=frozenset({"KEY"}))

    assert judged.report == {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 1 pod, rolling out",)}
    assert judged.needed == {"KEY"}
    assert [r.name for r in judged.dormant] == ["web-6c4b599dd1"]


def test_an_allowed_delete_warns_about_the_revisions_that_would_fail_on_rollback() -> None:
    found = referrers(
        WEB_UNLINKED,
        old_rs(0, 0, revision="10"),
        old_rs(0, 0, revision="9"),
        obj("ReplicaSet", "bare", USING_KEY, replicas=0, status={"replicas": 0}),
        JOB_DONE,
    )

    judged = usage("stripe", found, {r.uid: r for r in found})

    assert judged.report == {}
    assert dormant_warnings('secret "stripe"', judged.dormant) == [
        'replicaset/bare is scaled to 0 but still names secret "stripe"; scaling it up would start pods that fail',
        'the revision history of deployment/web still names secret "stripe": rolling back with kubectl rollout undo '
        "to revision 9 (ReplicaSet web-6c4b599dd9) or revision 10 (ReplicaSet web-6c4b599dd10) would fail to start",
    ]


@pytest.mark.parametrize(
    ("kind", "spec_replicas", "status", "generation", "pods", "idle"),
    [
        pytest.param("ReplicaSet", 0, {"replicas": 0}, None, 0, True, id="rs-at-zero"),
        pytest.param("ReplicaSet", None, {"replicas": 0}, None, 0, False, id="rs-replicas-default-to-one"),
        pytest.param("ReplicaSet", 0, {"replicas": 0, "observedGeneration": 3}, 3, 0, True, id="rs-observed"),
        pytest.param("ReplicaSet", 0, {"replicas": 0, "observedGeneration": 2}, 3, 0, False, id="rs-not-observed"),
        pytest.param("ReplicaSet", 0, None, 1, 0, False, id="rs-without-status"),
        pytest.param("ReplicaSet", 2, {"replicas": 2}, None, 2, False, id="rs-running"),
        pytest.param("Job", None, {"active": 2, "terminating": 1}, None, 3, False, id="job-running"),
        pytest.param(
            "Job",
            None,
            {"conditions": [{"type": "Complete", "status": "False"}]},
            None,
            0,
            False,
            id="job-condition-not-true",
        ),
        pytest.param(
            "Job", None, {"conditions": [{"type": "Complete", "status": "True"}]}, None, 0, True, id="job-done"
        ),
        pytest.param("Pod", None, {"phase": "Failed"}, None, 0, True, id="pod-failed"),
        pytest.param("Pod", None, {"phase": "Running"}, None, 1, False, id="pod-running"),
        pytest.param("Pod", None, None, None, 1, False, id="pod-without-status"),
        pytest.param("Deployment", 0, {"replicas": 0}, None, 0, False, id="a-deployment-can-always-scale-up"),
    ],
)
def test_which_objects_run_pods(
    kind: str, spec_replicas: int | None, status: JsonObject | None, generation: int | None, pods: int, idle: bool
) -> None:
    found = referrer_of(obj(kind, "x", USING_KEY, replicas=spec_replicas, status=status, generation=generation), kind)

    assert (found.pods, found.idle) == (pods, idle)


@pytest.mark.parametrize(
    ("referrers", "shown", "more"),
    [
        pytest.param(4, 4, "", id="four"),
        pytest.param(5, 5, "", id="exactly-five-are-all-named"),
        pytest.param(6, 5, " and 1 more", id="six-name-five-and-1-more"),
        pytest.param(12, 5, " and 7 more", id="twelve"),
    ],
)
def test_the_message_names_at_most_five_referrers_and_counts_the_rest(referrers: int, shown: int, more: str) -> None:
    report = {f"deployment/svc-{i:02}": ("envFrom",) for i in range(referrers)}

    message = usage_message('secret "shared"', report)

    named = ", ".join(f"deployment/svc-{i:02} (envFrom)" for i in range(shown))
    assert LIMIT == 5
    assert message == f'secret "shared" is used by {named}{more}; remove these references first'
