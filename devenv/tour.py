"""The demo's tour: what a user sees with kubectl, step by step, each step checked."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg

from devenv.cluster import ControlPlane, wait_for
from devenv.incluster import database_client_pod, wait_pod_finished
from devenv.registry import RegistryClient

NAMESPACE = "demo"
OTHER_NAMESPACE = "demo-other"
REFUSED = (401, 403)


class TourFailed(RuntimeError):
    pass


def tour(
    plane: ControlPlane,
    say: Callable[[str], None],
    *,
    image: str = "registry.invalid/web:1",
    pods_run: bool = False,
    python_image: str | None = None,
    push_private: Callable[[str, str, str], str] | None = None,
) -> None:
    """Walk the features with kubectl. With ``pods_run`` (a cluster with a node) the tour also shows what the
    containers receive: the linked value at startup, and the new value after the rollout. The registry is the one
    the product gives credentials for (``REGISTRY_URL``), with token auth against the product; ``push_private``
    pushes an image the node can run (``repository:tag``, user, password) and returns its reference."""

    def run(*args: str, expect_failure: bool = False, input: str | None = None) -> str:
        say("$ kubectl " + " ".join(args))
        result = plane.kubectl(*args, check=False, input=input)
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
    run("-n", NAMESPACE, "create", "deployment", "web", f"--image={image}")
    run("-n", NAMESPACE, "annotate", "deployment/web", "env.secrets.smll.io/API_KEY=stripe/STRIPE_SECRET_KEY")
    env = run("-n", NAMESPACE, "get", "deployment/web", "-o", "jsonpath={.spec.template.spec.containers[0].env}")
    if json.loads(env)[0]["valueFrom"]["secretKeyRef"] != {"name": "stripe", "key": "STRIPE_SECRET_KEY"}:
        raise TourFailed("the Deployment was not linked")
    if pods_run:
        say("\n==> the container reads its value at startup")
        run("-n", NAMESPACE, "rollout", "status", "deployment/web", "--timeout=120s")
        if run("-n", NAMESPACE, "exec", "deployment/web", "--", "printenv", "API_KEY") != "sk_test_demo":
            raise TourFailed("the container did not get the linked value")
    say("\n==> protection: the Secret is in use, so it cannot be deleted")
    refusal = run("-n", NAMESPACE, "delete", "secret", "stripe", expect_failure=True)
    if "deployment/web (env API_KEY)" not in refusal:
        raise TourFailed("the delete was not refused with the expected message")
    say("\n==> a link to a Secret that does not exist yet is accepted, with a warning (a dry run here: its pods could")
    say("    not start until the Secret exists)")
    warned = run(
        "-n",
        NAMESPACE,
        "annotate",
        "--dry-run=server",
        "deployment/web",
        "env.secrets.smll.io/DB_URL=orders-credentials/DATABASE_URL",
    )
    if "Warning" not in warned:
        raise TourFailed("the link to a missing Secret was not warned about")
    say("\n==> rollouts: change the key web reads; the controller rolls web once, and says why")
    run("-n", NAMESPACE, "patch", "secret", "stripe", "-p", '{"stringData":{"STRIPE_SECRET_KEY":"sk_test_rotated"}}')
    annotation = "jsonpath={.spec.template.metadata.annotations.secrets\\.smll\\.io/restarted-at}"
    wait_for(
        lambda: bool(plane.kubectl("-n", NAMESPACE, "get", "deployment/web", "-o", annotation).stdout),
        timeout=30,
        what="the rollout of web",
    )
    run("-n", NAMESPACE, "get", "deployment/web", "-o", annotation)
    wait_for(
        lambda: "SecretChanged" in plane.kubectl("-n", NAMESPACE, "get", "events").stdout,
        timeout=15,
        what="the rollout Event",
    )
    run("-n", NAMESPACE, "get", "events", "--field-selector=reason=SecretChanged")
    if pods_run:
        say("\n==> the rolled pod reads the new value; the old one is gone")
        run("-n", NAMESPACE, "rollout", "status", "deployment/web", "--timeout=120s")
        if run("-n", NAMESPACE, "exec", "deployment/web", "--", "printenv", "API_KEY") != "sk_test_rotated":
            raise TourFailed("the rolled pod did not get the new value")
        run("-n", NAMESPACE, "get", "replicasets", "-l", "app=web")

    say("\n==> generated credentials: a Database on a real PostgreSQL server")
    database = {
        "apiVersion": "smll.io/v1alpha1",
        "kind": "Database",
        "metadata": {"name": "orders"},
        "spec": {"engine": "postgres", "server": "default", "deletionPolicy": "Delete"},
    }
    run("-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(database))
    ready = "jsonpath={.status.conditions[0].status}"
    wait_for(
        lambda: plane.kubectl("-n", NAMESPACE, "get", "database/orders", "-o", ready, check=False).stdout == "True",
        timeout=60,
        what="the Database to be Ready",
    )
    run("-n", NAMESPACE, "get", "databases")
    run("-n", NAMESPACE, "describe", "secret", "orders-credentials")  # key names and sizes, never values
    url = base64.b64decode(
        plane.kubectl(
            "-n", NAMESPACE, "get", "secret", "orders-credentials", "-o", "jsonpath={.data.DATABASE_URL}"
        ).stdout
    ).decode()
    user, database_name = asyncio.run(_whoami(url))
    say(f"  connected with DATABASE_URL: login {user}, database {database_name}")
    if pods_run and python_image is not None:
        say("\n==> and from inside a pod, with DATABASE_URL from the Secret")
        run(
            "-n",
            NAMESPACE,
            "apply",
            "-f",
            "-",
            input=json.dumps(database_client_pod(python_image, "orders-credentials")),
        )
        wait_pod_finished(plane, NAMESPACE, "db-client")
        if f"connected as {user}" not in run("-n", NAMESPACE, "logs", "db-client"):
            raise TourFailed("the pod could not connect with DATABASE_URL")

    say("\n==> registry credentials: make the namespace a VPC; VPC main owns the repositories main/…")
    run("label", "namespace", NAMESPACE, "smll.io/vpc=main")
    host, user, password = _registry_credentials(plane, NAMESPACE)
    run("-n", NAMESPACE, "get", "secrets", "-l", "smll.io/secret-type=registry")
    run("-n", NAMESPACE, "get", "serviceaccount", "default", "-o", "jsonpath={.imagePullSecrets}")
    client = RegistryClient(f"http://{host}", user, password)
    status = client.login()
    wrong = RegistryClient(client.url, user, "wrong").login()
    say(
        f"  docker login {host} as {user} (GET /v2/ with a token from the product's token endpoint) → {status}; "
        f"with a wrong password → {wrong}"
    )
    if status != 200 or wrong != 401:
        raise TourFailed("the generated registry credentials did not log in, or a wrong password did")
    if pods_run and push_private is not None:
        say("\n==> a private image: pushed as VPC main, run in a pod of main (the kubelet pulls with its pull secret)")
        private = push_private("main/app:1", user, password)
        run("-n", NAMESPACE, "run", "private", f"--image={private}", "--restart=Never")
        run("-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/private", "--timeout=120s")
        run("-n", NAMESPACE, "get", "pod/private", "-o", "jsonpath={.spec.imagePullSecrets}")
    else:
        say("\n==> a private image, pushed and pulled back as VPC main")
        pushed, pulled = client.push_image("main/app", "1"), client.pull("main/app", "1")
        say(f"  push {host}/main/app:1 → {pushed}; pull → {pulled}")
        if (pushed, pulled) != (201, 200):
            raise TourFailed("VPC main could not push and pull its own image")
    say("\n==> another VPC is refused main's images, both ways")
    run("create", "namespace", OTHER_NAMESPACE)
    run("label", "namespace", OTHER_NAMESPACE, "smll.io/vpc=other")
    _, other_user, other_password = _registry_credentials(plane, OTHER_NAMESPACE)
    other = RegistryClient(client.url, other_user, other_password)
    pull = other.pull("main/app", "1")
    push = other.push_image("main/app", "1", layer=b"not main's layer")
    own = other.push_image("other/app", "1")
    say(f"  as {other_user} (VPC other): pull main/app:1 → {pull}; push main/app:1 → {push}; push other/app:1 → {own}")
    if pull not in REFUSED or push not in REFUSED or own != 201:
        raise TourFailed("VPC other reached main's images, or not its own")
    if client.pull("main/app", "1") != 200:
        raise TourFailed("main's image did not stay main's")

    done = "linking, warnings, protection, rollouts, database and registry credentials"
    if pods_run:
        write_only(plane, say, run)
        done += ", write-only keys"
    say(f"\nThe tour passed: {done} work here.")


def write_only(plane: ControlPlane, say: Callable[[str], None], run: Callable[..., str]) -> None:
    """The write-only API (served by the in-cluster webhook behind its APIService): a CI user bound to the writer
    role sets a key with the kubectl plugin, cannot read Secrets, and lists them without values."""
    say("\n==> write-only keys: a CI user with the writer role, and no verb on secrets")
    run("-n", NAMESPACE, "create", "rolebinding", "ci-writer", "--clusterrole=smll-secrets-secret-writer", "--user=ci")
    command = ["smll", "secrets", "set", "stripe", "WEBHOOK_SIGNING=-", "-n", NAMESPACE, "--as=ci"]
    say("$ echo -n whsec_demo | kubectl " + " ".join(command))
    scripts = str(Path(sys.executable).parent)
    result = subprocess.run(  # kubectl takes no flag before a plugin's name: the kubeconfig comes by environment
        [str(plane.binaries.kubectl), *command],
        input="whsec_demo",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(plane.kubeconfig), "PATH": f"{scripts}:{os.environ.get('PATH', '')}"},
    )
    say("  " + (result.stdout + result.stderr).strip())
    if result.returncode != 0:
        raise TourFailed("the write through the write-only API failed")
    run("--as=ci", "-n", NAMESPACE, "get", "secret", "stripe", expect_failure=True)
    listing = run("--as=ci", "-n", NAMESPACE, "get", "writeonlysecrets")
    if "STRIPE_SECRET_KEY,WEBHOOK_SIGNING" not in listing:
        raise TourFailed("the listing does not show the key set through the API")
    run("--as=ci", "-n", NAMESPACE, "describe", "writeonlysecret", "stripe")


def _registry_credentials(plane: ControlPlane, namespace: str) -> tuple[str, str, str]:
    """REGISTRY_URL, REGISTRY_USER and REGISTRY_PASSWORD of a VPC namespace, once the controller wrote them."""
    committed = "jsonpath={.data.REGISTRY_PASSWORD}"
    wait_for(
        lambda: bool(
            plane.kubectl("-n", namespace, "get", "secret", "registry-credentials", "-o", committed, check=False).stdout
        ),
        timeout=60,
        what=f"the registry credentials of {namespace}",
    )
    host, user, password = (
        base64.b64decode(
            plane.kubectl(
                "-n", namespace, "get", "secret", "registry-credentials", "-o", f"jsonpath={{.data.{key}}}"
            ).stdout
        ).decode()
        for key in ("REGISTRY_URL", "REGISTRY_USER", "REGISTRY_PASSWORD")
    )
    return host, user, password


async def _whoami(url: str) -> tuple[str, str]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        row = await connection.fetchrow("SELECT session_user, current_database()")
        return str(row[0]), str(row[1])
    finally:
        await connection.close()
