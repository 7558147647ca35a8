"""The admission port, played by a tenant: a pod in its own namespace reaches the webhook's Service and its pod's
port, and sends the reviews the apiserver would send. It must get no decision at all: the TLS handshake needs the
apiserver's client certificate (the chart's ``webhook.clientAuth``, which the local install turns on), and the
health port answers nothing but health. The apiserver's own reviews still go through.

On a cluster with a real node: run with ``flock /tmp/smll-node.lock``.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devenv.cluster import ControlPlane
from devenv.incluster import NAMESPACE, RELEASE, Installed, wait_pod_finished
from devenv.webhook import LocalWebhook
from tests.conftest import fresh_namespace

pytestmark = pytest.mark.e2e

SECRET = "bank-db"
REFERRER = "ledger"

# What the tenant's pod runs (the product's image has Python): each review to each target, and what came back.
PROBE = """
import json, ssl, sys, urllib.error, urllib.request
targets, reviews = json.loads(sys.argv[1]), json.loads(sys.argv[2])
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
answers = {}
for target in targets:
    for path, review in reviews.items():
        request = urllib.request.Request(
            target + path, data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                found = {"status": answer.status, "body": answer.read().decode()}
        except urllib.error.HTTPError as error:
            found = {"status": error.code, "body": error.read().decode()}
        except (OSError, ssl.SSLError) as error:
            found = {"refused": repr(error)}
        answers[target + path] = found
print("ANSWERS " + json.dumps(answers))
"""


def review(operation: str, kind: dict[str, str], namespace: str, name: str, **objects: Any) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": {"group": kind["group"], "version": kind["version"], "resource": kind["kind"].lower() + "s"},
            "operation": operation,
            "namespace": namespace,
            "name": name,
            "userInfo": {"username": "system:serviceaccount:kube-system:generic-garbage-collector"},
            **objects,
        },
    }


def forged_reviews(victim: str) -> dict[str, dict[str, Any]]:
    """The DELETE review that would name the victim's referrers, and a /mutate review whose warnings would say
    whether the victim's Secret and a key exist."""
    secret = {"group": "", "version": "v1", "kind": "Secret"}
    deployment = {"group": "apps", "version": "v1", "kind": "Deployment"}
    old = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": victim}}
    spy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "spy",
            "namespace": victim,
            "annotations": {
                "env.secrets.smll.io/GUESS": f"{SECRET}/PASSWORD",
                "env.secrets.smll.io/OTHER": "no-such-secret/KEY",
            },
        },
        "spec": {
            "selector": {"matchLabels": {"app": "spy"}},
            "template": {
                "metadata": {"labels": {"app": "spy"}},
                "spec": {"containers": [{"name": "app", "image": "x"}]},
            },
        },
    }
    return {
        "/validate": review("DELETE", secret, victim, SECRET, oldObject=old),
        "/mutate": review("CREATE", deployment, victim, "spy", object=spy),
    }


def webhook_targets(plane: ControlPlane) -> tuple[list[str], str]:
    """The webhook Service's ClusterIP on 443 and the webhook pod's own admission port; and its health port."""
    service = plane.kubectl(
        "-n", NAMESPACE, "get", "service", f"{RELEASE}-webhook", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    pod = json.loads(
        plane.kubectl(
            "-n", NAMESPACE, "get", "pods", "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "json"
        ).stdout
    )["items"][0]
    ip = pod["status"]["podIP"]
    webhook = next(c for c in pod["spec"]["containers"] if c["name"] == "webhook")
    ports = {p["name"]: p["containerPort"] for p in webhook["ports"]}
    return [f"https://{service}:443", f"https://{ip}:{ports['https']}"], f"http://{ip}:{ports.get('health', 1)}"


@pytest.fixture
def victim(node_cluster: ControlPlane, installed: Installed) -> Iterator[str]:
    """Another tenant: a Secret and a Deployment (no replicas) that reads a key of it."""
    with fresh_namespace(node_cluster, "bank") as name:
        node_cluster.kubectl("-n", name, "create", "secret", "generic", SECRET, "--from-literal=PASSWORD=hunter2-x")
        ledger = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": REFERRER},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": REFERRER}},
                "template": {
                    "metadata": {"labels": {"app": REFERRER}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": installed.test_app_image,
                                "env": [
                                    {
                                        "name": "LEDGER_DB_PASSWORD",
                                        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "PASSWORD"}},
                                    }
                                ],
                            }
                        ]
                    },
                },
            },
        }
        node_cluster.kubectl("-n", name, "apply", "-f", "-", input=json.dumps(ledger))
        yield name


def test_a_tenant_pod_gets_no_admission_decision_and_the_apiserver_still_does(
    node_cluster: ControlPlane, installed: Installed, victim: str
) -> None:
    plane = node_cluster
    targets, health = webhook_targets(plane)
    reviews = forged_reviews(victim)
    with fresh_namespace(plane, "shop") as tenant:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "forger"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "forger",
                        "image": installed.product_image,
                        "command": ["python", "-c", PROBE, json.dumps([*targets, health]), json.dumps(reviews)],
                    }
                ],
            },
        }
        plane.kubectl("-n", tenant, "apply", "-f", "-", input=json.dumps(pod))
        log = wait_pod_finished(plane, tenant, "forger")
    lines = [line for line in log.splitlines() if line.startswith("ANSWERS ")]
    assert lines, log
    answers: dict[str, dict[str, Any]] = json.loads(lines[0].removeprefix("ANSWERS "))

    # Whatever a target answered, it never carries a decision about the victim.
    for url, answer in answers.items():
        body = answer.get("body", "")
        assert REFERRER not in body, f"{url} named the referrers: {body}"
        assert "LEDGER_DB_PASSWORD" not in body, f"{url} named the referrers: {body}"
        assert '"allowed"' not in body, f"{url} gave a decision: {body}"
    # The admission port refuses the handshake itself, on the Service and on the pod's own address.
    for target in targets:
        for path in reviews:
            assert "refused" in answers[target + path], f"{target}{path} answered: {answers[target + path]}"
    # The health port serves health only: a review sent there is not judged.
    for path in reviews:
        assert answers[health + path].get("status") in (404, 405), answers[health + path]

    # The apiserver's own review still goes through, with the decision the user is owed.
    refused = plane.kubectl("-n", victim, "delete", "secret", SECRET, check=False)
    assert refused.returncode != 0
    assert f"deployment/{REFERRER} (env LEDGER_DB_PASSWORD)" in refused.stderr, refused.stderr


def test_the_local_webhook_answers_the_apiserver_only(
    cluster: ControlPlane, namespace: str, webhook: LocalWebhook
) -> None:
    """The same on the control plane without a node: the host-process webhook the other e2e tests use requires the
    apiserver's certificate too, and the apiserver's own reviews (every other e2e test) go through."""
    cluster.kubectl("-n", namespace, "create", "secret", "generic", SECRET, "--from-literal=PASSWORD=hunter2-y")
    cluster.kubectl("-n", namespace, "create", "deployment", REFERRER, "--image=registry.invalid/x", "--replicas=0")
    cluster.kubectl("-n", namespace, "set", "env", f"deployment/{REFERRER}", f"--from=secret/{SECRET}")
    context = webhook.ssl_context()  # a client that trusts the webhook's certificate, but has none of its own
    for path, forged in forged_reviews(namespace).items():
        answer = post(webhook.base_url + path, forged, context)
        # An alert (CERTIFICATE_REQUIRED) or a connection closed unanswered, depending on when the client reads.
        assert "refused" in answer, f"{path} answered a client without the apiserver's certificate: {answer}"

    denied = cluster.kubectl("-n", namespace, "delete", "secret", SECRET, check=False)
    assert denied.returncode != 0
    assert f"deployment/{REFERRER} (env PASSWORD)" in denied.stderr, denied.stderr


def post(url: str, body: dict[str, Any], context: ssl.SSLContext) -> dict[str, str]:
    """What a client without a certificate of its own gets: an answer, or the reason it got none."""
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)  # noqa: S310 - https
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310 - https only
            return {"status": str(answer.status), "body": answer.read().decode()}
    except urllib.error.HTTPError as error:
        return {"status": str(error.code), "body": error.read().decode()}
    except (urllib.error.URLError, ssl.SSLError, ConnectionError) as error:
        return {"refused": repr(error)}


def test_deleting_every_secret_at_once_keeps_the_one_in_use(
    cluster: ControlPlane, namespace: str, webhook: LocalWebhook
) -> None:
    """A deletecollection (what a namespace's deletion and a DELETE on the collection send; `kubectl delete --all`
    deletes one by one) is reviewed Secret by Secret with no name in the review, only in oldObject: each one is
    still judged by its own name."""
    cluster.kubectl("-n", namespace, "create", "secret", "generic", SECRET, "--from-literal=PASSWORD=hunter2-z")
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "unused", "--from-literal=K=v")
    cluster.kubectl("-n", namespace, "create", "deployment", REFERRER, "--image=registry.invalid/x", "--replicas=0")
    cluster.kubectl("-n", namespace, "set", "env", f"deployment/{REFERRER}", f"--from=secret/{SECRET}")

    result = cluster.kubectl("delete", "--raw", f"/api/v1/namespaces/{namespace}/secrets", check=False)

    assert f"deployment/{REFERRER} (env PASSWORD)" in result.stderr, result.stderr
    left = cluster.kubectl("-n", namespace, "get", "secrets", "-o", "name").stdout.split()
    assert f"secret/{SECRET}" in left
