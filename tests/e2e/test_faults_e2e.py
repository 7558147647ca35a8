"""Faults of the admission server, on the real control plane."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import LocalController
from devenv.webhook import LocalWebhook
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e


def test_while_the_webhook_restarts_applies_fail_clearly_and_nothing_is_admitted_unmutated(
    cluster: ControlPlane, namespace: str, webhook: LocalWebhook
) -> None:
    outcomes: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def apply_in_a_loop() -> None:
        i = 0
        while not stop.is_set():
            name = f"web-{i}"
            body = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "annotations": {"env.secrets.smll.io/API_KEY": "stripe/KEY"}},
                "spec": {
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                    },
                },
            }
            result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False)
            outcomes.append((name, result.returncode, result.stderr))
            i += 1

    loop = threading.Thread(target=apply_in_a_loop)
    loop.start()
    try:
        time.sleep(2)
        webhook.stop()
        time.sleep(3)
        webhook.restart()
        time.sleep(2)
    finally:
        stop.set()
        loop.join()

    failures = [stderr for _, code, stderr in outcomes if code != 0]
    created = [name for name, code, _ in outcomes if code == 0]
    assert failures, "some applies must have met the webhook down"
    assert created, "applies before and after the restart must succeed"
    for stderr in failures:
        assert 'failed calling webhook "link.secrets.smll.io"' in stderr
    for name in created:
        stored = json.loads(cluster.kubectl("get", f"deployment/{name}", "-n", namespace, "-o", "json").stdout)
        env = stored["spec"]["template"]["spec"]["containers"][0].get("env", [])
        assert env == [{"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "stripe", "key": "KEY"}}}], name


def test_a_rollout_key_secret_without_its_key_stops_the_controller_saying_what_is_wrong(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    # The controller runs with this test's namespace as its own: its Lease and its rollout key Secret live there.
    value = GUARD.canary("not-a-rollout-key")
    cluster.kubectl(
        "create", "secret", "generic", "smll-secrets-rollout-key", "-n", namespace, f"--from-literal=other={value}"
    )
    controller = LocalController(
        cluster, tmp_path, identity="broken-key", lease_name="broken-key", extra_args=[f"--namespace={namespace}"]
    )
    controller.start()
    try:
        component = controller.component
        assert component is not None
        wait_for(lambda: not component.alive(), timeout=60, what="the controller to exit")
        assert component.process is not None
        code = component.process.returncode
    finally:
        controller.stop()

    assert code == 1
    assert f'the rollout key Secret {namespace}/smll-secrets-rollout-key has no "key" entry (its entries: other)' in (
        controller.log()
    )
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert [(e["reason"], e["type"], e["involvedObject"]["kind"]) for e in events] == [
        ("RolloutKeyInvalid", "Warning", "Secret")
    ]
    stored = cluster.kubectl("get", "secret", "smll-secrets-rollout-key", "-n", namespace, "-o", "json").stdout
    assert set(json.loads(stored)["data"]) == {"other"}  # never overwritten: deleting it is the operator's decision
