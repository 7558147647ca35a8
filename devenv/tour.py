"""The demo's tour: what a user sees with kubectl, step by step, each step checked."""

from __future__ import annotations

import json
from collections.abc import Callable

from devenv.cluster import ControlPlane

NAMESPACE = "demo"


class TourFailed(RuntimeError):
    pass


def tour(plane: ControlPlane, say: Callable[[str], None]) -> None:
    def run(*args: str, expect_failure: bool = False) -> str:
        say("$ kubectl " + " ".join(args))
        result = plane.kubectl(*args, check=False)
        output = (result.stdout + result.stderr).strip()
        if output:
            say("  " + output.replace("\n", "\n  "))
        if (result.returncode != 0) != expect_failure:
            raise TourFailed(f"kubectl {' '.join(args)} {'succeeded' if expect_failure else 'failed'} unexpectedly")
        return output

    say("\n==> the cluster")
    run("get", "namespaces")
    say("\n==> linking: a Secret, a Deployment, one annotation")
    run("create", "namespace", NAMESPACE)
    run("-n", NAMESPACE, "create", "secret", "generic", "stripe", "--from-literal=STRIPE_SECRET_KEY=sk_test_demo")
    run("-n", NAMESPACE, "create", "deployment", "web", "--image=registry.invalid/web:1")
    run("-n", NAMESPACE, "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY")
    env = run("-n", NAMESPACE, "get", "deployment/web", "-o", "jsonpath={.spec.template.spec.containers[0].env}")
    if json.loads(env)[0]["valueFrom"]["secretKeyRef"] != {"name": "stripe", "key": "STRIPE_SECRET_KEY"}:
        raise TourFailed("the Deployment was not linked")
    say("\n==> protection: the Secret is in use, so it cannot be deleted")
    refusal = run("-n", NAMESPACE, "delete", "secret", "stripe", expect_failure=True)
    if "deployment/web (env API_KEY)" not in refusal:
        raise TourFailed("the delete was not refused with the expected message")
    say("\n==> a link to a Secret that does not exist yet is accepted, with a warning")
    run("-n", NAMESPACE, "annotate", "deployment/web", "env.secrets.smll.io/DB_URL=orders-credentials/DATABASE_URL")
    say("\nThe tour passed: linking, warnings and protection work on this control plane.")
