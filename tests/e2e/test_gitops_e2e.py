"""GitOps and plain kubectl as users work: their own manifest, applied again and again, and `kubectl diff`.

The user's Deployment carries only the link annotation; the webhook adds the env entry and its record, the
controller its rollout annotations. None of that may show as drift or be removed by the next apply, whether the
manifest is applied client-side (`kubectl apply`, Argo CD's default sync), server-side (`kubectl apply
--server-side`), or server-side under the field managers of Flux's kustomize-controller and Argo CD's ServerSideApply,
none of them with --force-conflicts: the apply must not even conflict with the product's fields.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import LocalController
from rules.names import MANAGED_ENV, RESTARTED_AT, ROLLOUT_STATE
from tests.leaks import GUARD

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("webhook")]

SETTLE = 0.5
LINK = {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY"}}}
PLAIN = {"name": "PLAIN", "value": "1"}


@dataclass(frozen=True)
class Flow:
    """How a tool applies the user's manifest and asks what an apply would change."""

    name: str
    apply: tuple[str, ...]
    diff: tuple[str, ...]


FLOWS = [
    Flow("kubectl-client-side", ("apply",), ("diff",)),
    Flow("kubectl-server-side", ("apply", "--server-side"), ("diff", "--server-side")),
    Flow(
        "flux-kustomize-controller",
        ("apply", "--server-side", "--field-manager=kustomize-controller"),
        ("diff", "--server-side", "--field-manager=kustomize-controller"),
    ),
    Flow(
        "argocd-server-side-apply",
        ("apply", "--server-side", "--field-manager=argocd-controller"),
        ("diff", "--server-side", "--field-manager=argocd-controller"),
    ),
]


def manifest(
    *,
    linked: bool = True,
    image: str = "registry.invalid/web:1",
    labels: dict[str, str] | None = None,
    env: bool = False,
) -> dict[str, Any]:
    """The user's Deployment as it sits in Git: the link annotation, and no env entry for it."""
    container: dict[str, Any] = {"name": "web", "image": image}
    if env:
        container["env"] = [PLAIN]
    metadata: dict[str, Any] = {"name": "web", "labels": {"app": "web", **(labels or {})}}
    if linked:
        metadata["annotations"] = {"env.secrets.smll.io/API_KEY": "stripe/KEY"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
        },
    }


def apply(cluster: ControlPlane, namespace: str, flow: Flow, obj: dict[str, Any]) -> str:
    """Apply as the flow does; kubectl's answer line. A conflict with the product's fields fails here."""
    return cluster.kubectl(*flow.apply, "-n", namespace, "-f", "-", input=json.dumps(obj)).stdout.strip()


def diff(cluster: ControlPlane, namespace: str, flow: Flow, obj: dict[str, Any]) -> tuple[int, str]:
    """`kubectl diff`'s exit code (0: no change, 1: a change, more: an error) and its output."""
    result = cluster.kubectl(*flow.diff, "-n", namespace, "-f", "-", input=json.dumps(obj), check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, result.stdout


def live(cluster: ControlPlane, namespace: str) -> Any:
    shown = cluster.kubectl("get", "deployment/web", "-n", namespace, "-o", "json", "--show-managed-fields")
    return json.loads(shown.stdout)


def owners(obj: Any, field: str) -> list[tuple[str, str]]:
    """The field managers (name, operation) whose managed fields name ``field`` (a FieldsV1 key such as
    ``f:secrets.smll.io/restarted-at`` or ``k:{"name":"API_KEY"}``)."""
    return [
        (entry["manager"], entry["operation"])
        for entry in obj["metadata"].get("managedFields") or []
        if json.dumps(field)[1:-1] in json.dumps(entry.get("fieldsV1"))
    ]


def env_of(obj: Any) -> list[Any]:
    return list(obj["spec"]["template"]["spec"]["containers"][0].get("env", []))


def template_annotations(obj: Any) -> dict[str, str]:
    return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})


def workload_annotations(obj: Any) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def version(obj: Any) -> tuple[int, str]:
    """The generation (moves with the spec, and for a Deployment with its annotations) and the resourceVersion
    (moves with any write at all)."""
    return int(obj["metadata"]["generation"]), str(obj["metadata"]["resourceVersion"])


def settled(cluster: ControlPlane, namespace: str) -> Any:
    """The Deployment once kube-controller-manager has stopped writing its status (no node: its pods stay Pending,
    so the status settles): what an apply writes after this is the apply's."""
    seen: list[Any] = []

    def still() -> bool:
        obj = live(cluster, namespace)
        seen.append(obj)
        status = obj.get("status") or {}
        if status.get("observedGeneration") != obj["metadata"]["generation"] or len(seen) < 2:
            return False
        return version(seen[-2]) == version(obj)

    wait_for(still, timeout=30, what="the Deployment's status to settle", interval=1)
    return seen[-1]


def changed_lines(shown: str) -> list[str]:
    """The lines a diff adds or removes (not its context, nor the file headers)."""
    return [line for line in shown.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def added(var: str, shown: str) -> bool:
    return re.search(rf"^\+\s+- name: {var}$", shown, re.M) is not None


def removed(var: str, shown: str) -> bool:
    return re.search(rf"^-\s+- name: {var}$", shown, re.M) is not None


def stripe(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={GUARD.canary()}", "-n", namespace)


@pytest.fixture
def controllers(cluster: ControlPlane, tmp_path: Path) -> Iterator[list[LocalController]]:
    started: list[LocalController] = []
    yield started
    for controller in started:
        GUARD.scan(controller.metrics() if controller.leading() else "", f"metrics of {controller.identity}")
        controller.stop()


def start_controller(cluster: ControlPlane, controllers: list[LocalController], tmp_path: Path) -> LocalController:
    controller = LocalController(
        cluster, tmp_path / "c1", settle_seconds=SETTLE, lease_seconds=6, lease_name=f"lease-{uuid.uuid4().hex[:8]}"
    )
    controllers.append(controller)
    controller.start()
    controller.wait_leading()
    return controller


def rollout_events(cluster: ControlPlane, namespace: str) -> list[str]:
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e["message"] for e in events if e["reason"] == "SecretChanged"]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_applying_the_users_manifest_again_changes_nothing_and_keeps_the_link(
    cluster: ControlPlane, namespace: str, flow: Flow
) -> None:
    stripe(cluster, namespace)
    apply(cluster, namespace, flow, manifest())
    first = settled(cluster, namespace)
    assert env_of(first) == [LINK]
    assert template_annotations(first)[MANAGED_ENV] == '{"web":["API_KEY"]}'
    # What the webhook wrote belongs to no field manager (the apiserver records ownership before admission), so no
    # server-side apply of a manifest without it removes it, and none conflicts with it.
    assert owners(first, 'k:{"name":"API_KEY"}') == []
    assert owners(first, f"f:{MANAGED_ENV}") == []

    assert diff(cluster, namespace, flow, manifest()) == (0, "")
    answer = apply(cluster, namespace, flow, manifest())

    again = live(cluster, namespace)
    assert version(again) == version(first), "re-applying the same manifest wrote the Deployment"
    assert env_of(again) == [LINK]
    assert template_annotations(again) == template_annotations(first)
    assert diff(cluster, namespace, flow, manifest()) == (0, "")
    if flow.name == "kubectl-client-side":
        assert answer == "deployment.apps/web unchanged"  # kubectl's own no-change answer: its patch was empty


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_a_manifest_with_env_entries_of_its_own_keeps_them_in_place_and_shows_no_change(
    cluster: ControlPlane, namespace: str, flow: Flow
) -> None:
    stripe(cluster, namespace)
    apply(cluster, namespace, flow, manifest(env=True))
    first = settled(cluster, namespace)
    assert env_of(first) == [PLAIN, LINK]

    assert diff(cluster, namespace, flow, manifest(env=True)) == (0, "")
    apply(cluster, namespace, flow, manifest(env=True))

    again = live(cluster, namespace)
    assert version(again) == version(first)
    assert env_of(again) == [PLAIN, LINK]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_diff_of_a_manifest_that_adds_a_link_shows_the_env_entry_the_webhook_will_add(
    cluster: ControlPlane, namespace: str, flow: Flow
) -> None:
    """The webhook mutates the dry-run too (sideEffects: None): that is why a diff shows what the apply will store,
    and why the stored link is no drift afterwards."""
    stripe(cluster, namespace)
    apply(cluster, namespace, flow, manifest(linked=False))

    code, shown = diff(cluster, namespace, flow, manifest())

    assert code == 1
    assert added("API_KEY", shown), shown
    assert "secretKeyRef" in shown
    assert env_of(live(cluster, namespace)) == [], "a dry-run linked the stored Deployment"


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_removing_the_annotation_from_the_manifest_removes_exactly_the_env_entry(
    cluster: ControlPlane, namespace: str, flow: Flow
) -> None:
    stripe(cluster, namespace)
    apply(cluster, namespace, flow, manifest(env=True))
    assert env_of(live(cluster, namespace)) == [PLAIN, LINK]

    code, shown = diff(cluster, namespace, flow, manifest(linked=False, env=True))
    assert code == 1
    assert removed("API_KEY", shown), shown
    apply(cluster, namespace, flow, manifest(linked=False, env=True))

    unlinked = live(cluster, namespace)
    assert env_of(unlinked) == [PLAIN]
    assert MANAGED_ENV not in template_annotations(unlinked)
    assert "env.secrets.smll.io/API_KEY" not in workload_annotations(unlinked)
    assert diff(cluster, namespace, flow, manifest(linked=False, env=True)) == (0, "")


@pytest.mark.parametrize("flow", FLOWS, ids=lambda flow: flow.name)
def test_after_a_rollout_the_users_apply_keeps_the_restart_and_the_recorded_state(
    cluster: ControlPlane, namespace: str, flow: Flow, controllers: list[LocalController], tmp_path: Path
) -> None:
    stripe(cluster, namespace)
    apply(cluster, namespace, flow, manifest())
    start_controller(cluster, controllers, tmp_path)
    wait_for(
        lambda: ROLLOUT_STATE in workload_annotations(live(cluster, namespace)), timeout=20, what="the recorded state"
    )

    secret = {"stringData": {"KEY": GUARD.canary("v2")}}
    cluster.kubectl("patch", "secret", "stripe", "-n", namespace, "-p", json.dumps(secret))
    wait_for(lambda: RESTARTED_AT in template_annotations(live(cluster, namespace)), timeout=20, what="the rollout")
    wait_for(lambda: len(rollout_events(cluster, namespace)) == 1, timeout=10, what="the rollout Event")
    rolled = settled(cluster, namespace)
    stamp, state = template_annotations(rolled)[RESTARTED_AT], workload_annotations(rolled)[ROLLOUT_STATE]
    # The controller's two annotations are its own field manager's (a PATCH: an Update), never the user's.
    (controller,) = owners(rolled, f"f:{RESTARTED_AT}")
    assert owners(rolled, f"f:{ROLLOUT_STATE}") == [controller]
    assert controller == ("smll-secrets-controller", "Update")
    assert controller[0] not in {"kubectl", "kubectl-client-side-apply", "kustomize-controller", "argocd-controller"}

    # The same manifest: no change, nothing written, the rollout's annotations kept.
    assert diff(cluster, namespace, flow, manifest()) == (0, "")
    apply(cluster, namespace, flow, manifest())
    again = live(cluster, namespace)
    assert version(again) == version(rolled), "re-applying the same manifest after a rollout wrote the Deployment"
    assert template_annotations(again)[RESTARTED_AT] == stamp
    assert workload_annotations(again)[ROLLOUT_STATE] == state

    # A change of the user's own (a new image, a label): that change, and only that.
    changed = manifest(image="registry.invalid/web:2", labels={"tier": "front"})
    code, shown = diff(cluster, namespace, flow, changed)
    assert code == 1
    lines = changed_lines(shown)
    assert any("registry.invalid/web:2" in line for line in lines), shown
    assert [line for line in lines if RESTARTED_AT in line or ROLLOUT_STATE in line or "API_KEY" in line] == []
    apply(cluster, namespace, flow, changed)
    after = live(cluster, namespace)
    assert after["metadata"]["generation"] == rolled["metadata"]["generation"] + 1
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/web:2"
    assert after["metadata"]["labels"]["tier"] == "front"
    assert env_of(after) == [LINK]
    assert template_annotations(after)[RESTARTED_AT] == stamp
    assert workload_annotations(after)[ROLLOUT_STATE] == state
    assert diff(cluster, namespace, flow, changed) == (0, "")

    # The user's change rolls nothing more, and the controller writes nothing more.
    time.sleep(SETTLE + 3)
    assert rollout_events(cluster, namespace) == ["Rolled out: secret 'stripe' changed keys KEY"]
    last = live(cluster, namespace)
    assert last["metadata"]["generation"] == after["metadata"]["generation"]
    assert (template_annotations(last)[RESTARTED_AT], workload_annotations(last)[ROLLOUT_STATE]) == (stamp, state)


def pod_spec(restart: str) -> dict[str, Any]:
    return {"restartPolicy": restart, "containers": [{"name": "web", "image": "registry.invalid/web:1"}]}


def of_kind(kind: str) -> dict[str, Any]:
    """A user's manifest of each kind that links, with the link annotation on the object and no env entry."""
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels}, "spec": pod_spec("Always")}
    run_once = {"metadata": {"labels": labels}, "spec": pod_spec("Never")}
    specs: dict[str, tuple[str, Any]] = {
        "StatefulSet": ("apps/v1", {"selector": {"matchLabels": labels}, "serviceName": "web", "template": template}),
        "DaemonSet": ("apps/v1", {"selector": {"matchLabels": labels}, "template": template}),
        "ReplicaSet": ("apps/v1", {"selector": {"matchLabels": labels}, "template": template}),
        "Job": ("batch/v1", {"template": run_once}),
        "CronJob": ("batch/v1", {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": run_once}}}),
        "Pod": ("v1", pod_spec("Never")),
    }
    api_version, spec = specs[kind]
    annotations = {"env.secrets.smll.io/API_KEY": "stripe/KEY"}
    metadata = {"name": "web", "labels": labels, "annotations": annotations}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}


def containers_of(obj: Any) -> list[Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]["template"]["spec"]
    elif "template" in spec:
        spec = spec["template"]["spec"]
    return list(spec["containers"])


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"])
@pytest.mark.parametrize("flow", FLOWS[:2], ids=lambda flow: flow.name)
def test_every_kind_that_links_shows_no_change_when_its_manifest_is_applied_again(
    cluster: ControlPlane, namespace: str, flow: Flow, kind: str
) -> None:
    stripe(cluster, namespace)
    obj = of_kind(kind)
    apply(cluster, namespace, flow, obj)

    def stored() -> Any:
        return json.loads(cluster.kubectl("get", f"{kind.lower()}/web", "-n", namespace, "-o", "json").stdout)

    first = stored()
    assert containers_of(first)[0]["env"] == [LINK]

    assert diff(cluster, namespace, flow, obj) == (0, "")
    apply(cluster, namespace, flow, obj)

    again = stored()
    assert containers_of(again)[0]["env"] == [LINK]
    assert again["metadata"].get("generation") == first["metadata"].get("generation")
    assert diff(cluster, namespace, flow, obj) == (0, "")
