"""The local control plane is a real one: controllers run, admission webhooks are called, Secrets are encrypted."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import ssl
import uuid
from pathlib import Path

import pytest
from aiohttp import web

from devenv.cluster import ENCRYPTED_PREFIX, ControlPlane, wait_for
from devenv.process import free_port
from rules.certs import make_ca, make_leaf

pytestmark = pytest.mark.e2e


def test_a_deployment_gets_a_replicaset_and_a_pod(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1", "-n", namespace)

    def owned_by(kind: str, owner_kind: str) -> bool:
        items = json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
        return any(ref["kind"] == owner_kind for item in items for ref in item["metadata"].get("ownerReferences", []))

    wait_for(lambda: owned_by("replicasets", "Deployment"), timeout=30, what="a ReplicaSet of the Deployment")
    wait_for(lambda: owned_by("pods", "ReplicaSet"), timeout=30, what="a Pod of the ReplicaSet")


async def test_the_apiserver_calls_a_webhook_registered_by_url_and_honours_its_denial(
    cluster: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    day = datetime.timedelta(days=1)
    ca = make_ca("test webhook CA", valid_for=day)
    serving = make_leaf(ca, "127.0.0.1", valid_for=day, ip_addresses=("127.0.0.1",))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    seen: list[str] = []

    async def deny_forbidden_names(request: web.Request) -> web.Response:
        review = await request.json()
        name = review["request"]["object"]["metadata"]["name"]
        seen.append(name)
        allowed = name != "forbidden"
        response = {"uid": review["request"]["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": "the name 'forbidden' is refused by the test webhook"}
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    app = web.Application()
    app.router.add_post("/validate", deny_forbidden_names)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
    config_name = f"test-{uuid.uuid4().hex[:8]}"
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config_name},
        "webhooks": [
            {
                "name": "deny.test.smll.io",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/validate",
                    "caBundle": base64.b64encode(ca.cert_pem).decode(),
                },
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    try:
        await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", input=json.dumps(configuration))

        async def create(name: str) -> tuple[int, str]:
            result = await asyncio.to_thread(cluster.kubectl, "create", "configmap", name, "-n", namespace, check=False)
            return result.returncode, result.stderr

        # The configuration takes a moment to reach the apiserver's admission chain.
        for _ in range(100):
            code, _ = await create(f"probe-{len(seen)}-{uuid.uuid4().hex[:4]}")
            if seen:
                break
            await asyncio.sleep(0.1)
        assert seen, "the apiserver never called the webhook"

        code, stderr = await create("forbidden")
        assert code != 0
        assert "the name 'forbidden' is refused by the test webhook" in stderr
        code, _ = await create("allowed")
        assert code == 0
    finally:
        await asyncio.to_thread(cluster.kubectl, "delete", "validatingwebhookconfiguration", config_name, check=False)
        await runner.cleanup()


def test_secrets_are_encrypted_at_rest_in_etcd(cluster: ControlPlane, namespace: str) -> None:
    plaintext = f"plain-{uuid.uuid4().hex}"
    cluster.kubectl("create", "secret", "generic", "stripe", f"--from-literal=KEY={plaintext}", "-n", namespace)

    stored = cluster.etcd_get(f"/registry/secrets/{namespace}/stripe")

    assert stored is not None
    assert stored.startswith(ENCRYPTED_PREFIX)
    assert plaintext.encode() not in stored
    assert base64.b64encode(plaintext.encode()) not in stored
    # The control: an object kind that is not encrypted is stored readable, so the read above is a real one.
    cluster.kubectl("create", "configmap", "plain", f"--from-literal=KEY={plaintext}", "-n", namespace)
    configmap = cluster.etcd_get(f"/registry/configmaps/{namespace}/plain")
    assert configmap is not None
    assert plaintext.encode() in configmap


def test_the_apiserver_restarts_on_the_same_data(cluster: ControlPlane, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "kept", "--from-literal=KEY=value", "-n", namespace)
    old_pid = cluster.pids()["kube-apiserver"]

    cluster.stop_apiserver()
    assert cluster.kubectl("get", "namespaces", check=False).returncode != 0
    cluster.start_apiserver()

    assert cluster.pids()["kube-apiserver"] != old_pid
    secret = json.loads(cluster.kubectl("get", "secret", "kept", "-n", namespace, "-o", "json").stdout)
    assert base64.b64decode(secret["data"]["KEY"]) == b"value"
