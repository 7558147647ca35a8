"""Faults of the admission server, on the real control plane."""

from __future__ import annotations

import json
import threading
import time

import pytest

from devenv.cluster import ControlPlane
from devenv.webhook import LocalWebhook

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
