"""Protection's rules where mutation testing found them untested (docs/mutation.md): ownership cycles, owners the
index does not know, old pods, links shown as the env var they put in place, and the order of the warnings."""

from __future__ import annotations

import pytest

from rules.protection import (
    dormant_warnings,
    referrer_of,
    removed_keys,
    secret_subject,
    usage,
    usage_message,
)
from tests.factories import JsonObject
from tests.unit.test_protection_rules import (
    JOB_RUNNING,
    USING_KEY,
    USING_NOTHING,
    WEB_CURRENT_RS,
    WEB_UNLINKED,
    obj,
    old_rs,
    pod_of,
    referrers,
)


def owned_by(found: JsonObject, owner: JsonObject) -> JsonObject:
    found["metadata"]["ownerReferences"] = [
        {"kind": owner["kind"], "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True}
    ]
    return found


def report_of(*objects: JsonObject, known: tuple[JsonObject, ...] | None = None) -> dict[str, tuple[str, ...]]:
    found = referrers(*objects)
    by_uid = {r.uid: r for r in (referrers(*known) if known is not None else found)}
    return dict(usage("stripe", found, by_uid).report)


def cycle_of_two() -> list[JsonObject]:
    first = obj("ReplicaSet", "a", USING_KEY, replicas=1, status={"replicas": 1})
    second = obj("ReplicaSet", "b", USING_KEY, owner=first, replicas=1, status={"replicas": 1})
    return [owned_by(first, second), second]


def cycle_above_an_old_pod() -> list[JsonObject]:
    """A Pod whose ReplicaSet a no longer has its use, a owned by b, b and c owning each other (a is not in it)."""
    b = obj("ReplicaSet", "b", USING_NOTHING, replicas=1, status={"replicas": 1})
    c = obj("ReplicaSet", "c", USING_NOTHING, owner=b, replicas=1, status={"replicas": 1})
    owned_by(b, c)
    a = obj("ReplicaSet", "a", USING_NOTHING, owner=b, replicas=1, status={"replicas": 1})
    return [pod_of(a, "a-x"), a, b, c]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("objects", "report"),
    [
        pytest.param(
            cycle_of_two(),
            {"replicaset/a": ("env API_KEY",), "replicaset/b": ("env API_KEY",)},
            id="two-objects-that-own-each-other-and-both-use-it-are-each-named",
        ),
        pytest.param(
            cycle_above_an_old_pod(),
            {"replicaset/c": ("1 old pod, running",)},
            id="an-old-pod-below-an-ownership-cycle-is-named-by-the-last-owner-before-the-cycle-closes",
        ),
    ],
)
def test_an_ownership_cycle_never_hangs_or_crashes_the_delete_check(
    objects: list[JsonObject], report: dict[str, tuple[str, ...]]
) -> None:
    assert report_of(*objects) == report


STATEFUL = obj("StatefulSet", "db", USING_NOTHING)
STATEFUL_POD = pod_of(STATEFUL, "db-0")
LINKED_AND_ENV = obj(
    "Deployment",
    "web",
    USING_KEY,
    annotations={"env.secrets.smll.io/API_KEY": "stripe/KEY"},
)
LINKED_OTHER_VAR = obj(
    "Deployment",
    "web",
    USING_KEY,
    annotations={"env.secrets.smll.io/OTHER": "stripe/KEY"},
)


@pytest.mark.parametrize(
    ("objects", "known", "report"),
    [
        pytest.param(
            [WEB_UNLINKED, WEB_CURRENT_RS, pod_of(WEB_CURRENT_RS, "web-1-x")],
            None,
            {"deployment/web": ("1 old pod, running",)},
            id="an-old-pod-of-a-deployment-is-named-by-the-deployment-and-is-running",
        ),
        pytest.param(
            [STATEFUL, STATEFUL_POD],
            None,
            {"statefulset/db": ("1 old pod, rolling out",)},
            id="an-old-pod-of-a-statefulset-is-rolling-out",
        ),
        pytest.param(
            [WEB_UNLINKED, WEB_CURRENT_RS, pod_of(WEB_CURRENT_RS, "web-1-x"), pod_of(WEB_CURRENT_RS, "web-1-y")],
            None,
            {"deployment/web": ("2 old pods, running",)},
            id="old-pods-are-counted-one-by-one",
        ),
        pytest.param(
            [JOB_RUNNING],
            (JOB_RUNNING,),
            {"cronjob/report": ("old Job report-2, 1 pod, not finished",)},
            id="a-job-whose-cronjob-is-not-known-is-an-old-copy",
        ),
        pytest.param(
            [pod_of(WEB_CURRENT_RS, "web-1-x")],
            None,
            {"replicaset/web-1": ("env API_KEY",)},
            id="a-pod-whose-owner-is-not-known-is-named-by-that-owner-as-it-uses-it",
        ),
        pytest.param(
            [old_rs(0, 0, owner=WEB_UNLINKED), pod_of(old_rs(0, 0), "p-1"), pod_of(old_rs(0, 0), "p-2")],
            None,
            {"deployment/web": ("old ReplicaSet web-6c4b599dd2, 2 pods, scaling down",)},
            id="a-replicaset-at-zero-counts-each-of-its-live-pods",
        ),
        pytest.param(
            [LINKED_AND_ENV],
            None,
            {"deployment/web": ("env API_KEY",)},
            id="a-link-is-named-once-as-the-env-var-it-put-in-place",
        ),
        pytest.param(
            [LINKED_OTHER_VAR],
            None,
            {"deployment/web": ("env API_KEY", "link OTHER")},
            id="a-link-to-another-var-is-named-beside-the-env-var",
        ),
    ],
)
def test_how_each_remaining_use_is_named(
    objects: list[JsonObject], known: tuple[JsonObject, ...] | None, report: dict[str, tuple[str, ...]]
) -> None:
    assert report_of(*objects, known=known) == report


@pytest.mark.parametrize(
    ("status", "idle"),
    [
        pytest.param({"conditions": [{"type": "Failed", "status": "True"}]}, True, id="a-failed-job-is-idle"),
        pytest.param({"conditions": [{"type": "Suspended", "status": "True"}]}, False, id="a-suspended-job-is-not"),
    ],
)
def test_a_job_that_finished_either_way_runs_nothing(status: JsonObject, idle: bool) -> None:
    assert referrer_of(obj("Job", "j", USING_KEY, status=status), "Job").idle is idle


@pytest.mark.parametrize(
    ("kind", "revision"),
    [
        pytest.param("ReplicaSet", "3", id="a-replicaset-keeps-its-revision"),
        pytest.param("Deployment", None, id="a-deployment-has-no-revision-of-its-own"),
    ],
)
def test_only_a_replicaset_is_a_revision(kind: str, revision: str | None) -> None:
    found = obj(kind, "web", USING_KEY, annotations={"deployment.kubernetes.io/revision": "3"})

    assert referrer_of(found, kind).revision == revision


def test_the_uses_of_a_cronjob_are_read_from_its_job_template() -> None:
    cronjob = {
        "kind": "CronJob",
        "metadata": {"name": "report", "namespace": "shop", "uid": "u"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": USING_KEY}}}},
    }

    assert [use.secret for use in referrer_of(cronjob, "CronJob").uses] == ["stripe"]


def dormant(name: str, owner: JsonObject | None, revision: str | None) -> JsonObject:
    annotations = {"deployment.kubernetes.io/revision": revision} if revision is not None else None
    return obj("ReplicaSet", name, USING_KEY, owner=owner, replicas=0, status={"replicas": 0}, annotations=annotations)


API = obj("Deployment", "api", USING_NOTHING)


@pytest.mark.parametrize(
    ("objects", "order"),
    [
        pytest.param(
            [dormant("web-b", WEB_UNLINKED, "1"), dormant("api-a", API, "5")],
            ["api-a", "web-b"],
            id="by-owner-first",
        ),
        pytest.param(
            [dormant("web-a", WEB_UNLINKED, "1"), dormant("web-b", WEB_UNLINKED, None)],
            ["web-b", "web-a"],
            id="a-replicaset-without-a-revision-comes-before-revision-1",
        ),
        pytest.param(
            [dormant("web-a", WEB_UNLINKED, "10"), dormant("web-b", WEB_UNLINKED, "9")],
            ["web-b", "web-a"],
            id="revisions-in-number-order",
        ),
    ],
)
def test_dormant_replicasets_are_listed_by_owner_then_revision(objects: list[JsonObject], order: list[str]) -> None:
    found = referrers(*objects)

    assert [r.name for r in usage("stripe", found, {r.uid: r for r in found}).dormant] == order


def test_a_dormant_replicaset_without_a_revision_is_named_by_its_name() -> None:
    found = referrers(dormant("web-b", WEB_UNLINKED, None))

    assert dormant_warnings(secret_subject("stripe"), found) == [
        'the revision history of deployment/web still names secret "stripe": rolling back with kubectl rollout '
        "undo to ReplicaSet web-b would fail to start"
    ]


def test_the_message_honours_a_smaller_limit() -> None:
    report = {f"deployment/svc-{i}": ("envFrom",) for i in range(3)}

    assert usage_message("it", report, limit=2) == (
        "it is used by deployment/svc-0 (envFrom), deployment/svc-1 (envFrom) and 1 more; remove these references first"
    )


@pytest.mark.parametrize(
    ("old", "new", "removed"),
    [
        pytest.param({"data": {"A": "x", "B": "y"}}, {"data": {"A": "x"}}, {"B"}, id="a-key-gone"),
        pytest.param({"data": {"A": "x"}}, {"data": None}, {"A"}, id="data-set-to-null-removes-every-key"),
        pytest.param({"data": None}, {}, set(), id="no-data-before-removes-nothing"),
    ],
)
def test_which_keys_a_change_removes(old: JsonObject, new: JsonObject, removed: set[str]) -> None:
    assert removed_keys(old, new) == frozenset(removed)


def test_an_object_read_from_a_list_has_no_kind_and_is_read_by_the_kind_given() -> None:
    found = obj("Deployment", "web", USING_KEY)
    del found["kind"]

    assert [use.secret for use in referrer_of(found, "Deployment").uses] == ["stripe"]
