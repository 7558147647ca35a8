"""A VPC's registry credentials reach that VPC's repositories only: a real Distribution registry with token auth
against the controller's token endpoint, on the real control plane."""

from __future__ import annotations

import base64
import datetime
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.controller import CONTROLLER_NAMESPACE, LocalController
from devenv.process import free_port
from devenv.registry import LocalRegistry, RegistryClient, TokenAuth, registry_binary
from rules import registry as registry_rules
from rules.certs import KeyPair, make_ca
from tests.conftest import fresh_namespace
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e

LIFETIME = 10  # seconds: short, so that expiry is seen in a test
REGISTRY_LEEWAY = 60  # Distribution 2.8 accepts a token up to a minute past its exp (clock skew)


@dataclass
class Setup:
    registry: LocalRegistry
    controller: LocalController
    token_port: int
    ca_secret: str  # namespace/name


def write_ca(cluster: ControlPlane, secret: str, ca: KeyPair) -> None:
    """The CA Secret the controller signs under (what the chart keeps), created or replaced."""
    namespace, name = secret.split("/")
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {
            "tls.crt": base64.b64encode(ca.cert_pem).decode(),
            "tls.key": base64.b64encode(ca.key_pem).decode(),
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def new_ca(name: str) -> KeyPair:
    return make_ca(name, valid_for=datetime.timedelta(days=30))


@pytest.fixture(scope="module")
def cas() -> tuple[KeyPair, KeyPair]:
    """The CA the controller signs under, and the next one, already in the registry's bundle (rotation's step 1)."""
    return new_ca("smll-secrets registry tokens 1"), new_ca("smll-secrets registry tokens 2")


@pytest.fixture(scope="module")
def setup(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, cas: tuple[KeyPair, KeyPair]
) -> Iterator[Setup]:
    try:
        registry_binary()
    except FileNotFoundError as error:
        pytest.fail(str(error))
    workdir = tmp_path_factory.mktemp("tokens")
    cluster.kubectl("create", "namespace", CONTROLLER_NAMESPACE, check=False)
    ca_secret = f"{CONTROLLER_NAMESPACE}/tokens-ca-{uuid.uuid4().hex[:8]}"
    write_ca(cluster, ca_secret, cas[0])
    bundle = workdir / "bundle.crt"
    bundle.write_bytes(cas[0].cert_pem + cas[1].cert_pem)
    token_port = free_port()
    registry = LocalRegistry(workdir / "registry", auth=False)
    registry.token = TokenAuth(
        realm=f"http://127.0.0.1:{token_port}/token",
        service=registry.host,
        issuer="smll-secrets",
        rootcertbundle=bundle,
    )
    registry.start()
    htpasswd = f"{CONTROLLER_NAMESPACE}/htpasswd-{uuid.uuid4().hex[:8]}"
    controller = LocalController(
        cluster,
        workdir / "controller",
        identity="tokens",
        lease_seconds=6,
        lease_name=f"lease-{uuid.uuid4().hex[:8]}",
        registry_url=registry.url,
        htpasswd_secret=htpasswd,
        extra_args=[
            f"--registry-token-port={token_port}",
            "--registry-token-host=127.0.0.1",
            f"--registry-token-ca={ca_secret}",
            f"--registry-token-seconds={LIFETIME}",
        ],
    )
    controller.start()
    controller.wait_leading()
    wait_for(lambda: "registry tokens: caches synced" in controller.log(), timeout=20, what="the token endpoint")
    try:
        yield Setup(registry, controller, token_port, ca_secret)
    finally:
        controller.stop()
        registry.stop()


@pytest.fixture
def other_namespace(cluster: ControlPlane) -> Iterator[str]:
    with fresh_namespace(cluster) as name:
        yield name


def join_vpc(cluster: ControlPlane, namespace: str, vpc: str) -> RegistryClient:
    """Label the namespace as VPC ``vpc``, wait for its credentials, and return a client logged in with them."""
    cluster.kubectl("label", "namespace", namespace, f"smll.io/vpc={vpc}", "--overwrite")

    def password() -> str | None:
        found = cluster.kubectl("get", "secret", registry_rules.CREDENTIALS, "-n", namespace, "-o", "json", check=False)
        if found.returncode != 0:
            return None
        data = json.loads(found.stdout).get("data") or {}
        return (
            base64.b64decode(data[registry_rules.PASSWORD_KEY]).decode()
            if registry_rules.PASSWORD_KEY in data
            else None
        )

    wait_for(lambda: password() is not None, timeout=30, what=f"registry-credentials in {namespace}")
    secret = password()
    assert secret is not None
    GUARD.register(secret)
    return RegistryClient("", registry_rules.username(namespace), secret)


def client_for(setup: Setup, client: RegistryClient) -> RegistryClient:
    return RegistryClient(setup.registry.url, client.user, client.password)


def vpc_name() -> str:
    return f"v{uuid.uuid4().hex[:8]}"


def test_a_vpc_pushes_and_pulls_its_own_repositories_and_another_vpc_is_refused_both(
    cluster: ControlPlane, setup: Setup, namespace: str, other_namespace: str
) -> None:
    a, b = vpc_name(), vpc_name()
    alice = client_for(setup, join_vpc(cluster, namespace, a))
    bob = client_for(setup, join_vpc(cluster, other_namespace, b))

    assert alice.login() == 200  # docker login with REGISTRY_USER / REGISTRY_PASSWORD
    assert alice.push_image(f"{a}/app", "1") == 201
    assert alice.pull(f"{a}/app", "1") == 200
    assert alice.push_image(f"{a}/team/tool", "1") == 201

    assert bob.login() == 200
    assert bob.pull(f"{a}/app", "1") in (401, 403), "another VPC pulled A's image"
    assert bob.push_image(f"{a}/app", "1", layer=b"bob's layer") in (401, 403), "another VPC pushed over A's image"
    assert bob.push_image(f"{a}/evil", "1") in (401, 403), "another VPC pushed into A's space"
    assert bob.push_image(f"{b}/app", "1") == 201
    assert alice.pull(f"{b}/app", "1") in (401, 403)
    assert alice.pull(f"{a}/app", "1") == 200, "A's image is intact"

    catalog = alice.call("GET", "/v2/_catalog", scope="registry:catalog:*")
    assert catalog.status in (401, 403), "the catalog lists every VPC's repositories"
    wrong = RegistryClient(setup.registry.url, alice.user, (alice.password or "") + "x")
    assert wrong.login() == 401
    anonymous = RegistryClient(setup.registry.url, None, None)
    assert anonymous.pull(f"{a}/app", "1") == 401
    for secret in (alice.password, bob.password):
        assert secret is not None
        assert secret not in setup.controller.log()


def test_a_namespace_that_leaves_its_vpc_is_refused_within_the_token_lifetime(
    cluster: ControlPlane, setup: Setup, namespace: str
) -> None:
    vpc = vpc_name()
    client = client_for(setup, join_vpc(cluster, namespace, vpc))
    assert client.push_image(f"{vpc}/app", "1") == 201
    assert client.pull(f"{vpc}/app", "1") == 200
    held = client.tokens[f"repository:{vpc}/app:pull"]

    cluster.kubectl("label", "namespace", namespace, "smll.io/vpc-")
    left = time.monotonic()

    fresh = RegistryClient(setup.registry.url, client.user, client.password)
    wait_for(lambda: fresh.pull(f"{vpc}/app", "1") in (401, 403), timeout=5, what="a new token to be refused")
    manifest = f"/v2/{vpc}/app/manifests/1"
    wait_for(
        lambda: client.with_token(held, "GET", manifest) == 401,
        timeout=LIFETIME + REGISTRY_LEEWAY + 5,
        what="the token issued before to expire",
    )
    refused_after = time.monotonic() - left
    print(f"the token issued before was refused {refused_after:.0f}s after the namespace left")
    assert refused_after <= LIFETIME + REGISTRY_LEEWAY + 5


def test_moving_a_namespace_to_another_vpc_moves_its_access(
    cluster: ControlPlane, setup: Setup, namespace: str
) -> None:
    first, second = vpc_name(), vpc_name()
    client = client_for(setup, join_vpc(cluster, namespace, first))
    assert client.push_image(f"{first}/app", "1") == 201
    cluster.kubectl("label", "namespace", namespace, f"smll.io/vpc={second}", "--overwrite")

    moved = RegistryClient(setup.registry.url, client.user, client.password)
    wait_for(lambda: moved.pull(f"{first}/app", "1") in (401, 403), timeout=5, what="the old VPC to be refused")
    assert moved.push_image(f"{second}/app", "1") == 201


def x5c_of(token: str) -> list[str]:
    return list(json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["x5c"])


def test_a_signing_key_rotation_does_not_break_a_pull_in_progress(
    cluster: ControlPlane, setup: Setup, namespace: str, cas: tuple[KeyPair, KeyPair]
) -> None:
    """A pull that has its token and its manifest when the controller moves to a new signing key — here a new key
    under the next CA, the bigger rotation of the two: the new CA was in the registry's bundle before it signed —
    fetches its blobs with the token it holds; tokens from the new key work as well. No restart of anything."""
    vpc = vpc_name()
    client = client_for(setup, join_vpc(cluster, namespace, vpc))
    assert client.push_image(f"{vpc}/app", "1") == 201
    manifest = client.manifest(f"{vpc}/app", "1")
    assert manifest.status == 200
    held = client.tokens[f"repository:{vpc}/app:pull"]

    write_ca(cluster, setup.ca_secret, cas[1])

    def rotated() -> bool:
        fresh = RegistryClient(setup.registry.url, client.user, client.password)
        return fresh.login() == 200 and x5c_of(fresh.tokens[""]) != x5c_of(held)

    wait_for(rotated, timeout=10, what="tokens signed by a new key")
    layers = [entry["digest"] for entry in json.loads(manifest.body)["layers"]]
    for digest in layers:
        assert client.with_token(held, "GET", f"/v2/{vpc}/app/blobs/{digest}") == 200, "the pull in progress broke"
    fresh = RegistryClient(setup.registry.url, client.user, client.password)
    assert fresh.pull(f"{vpc}/app", "1") == 200
    assert x5c_of(fresh.tokens[f"repository:{vpc}/app:pull"]) != x5c_of(held)


def test_the_charts_token_ca_is_made_once_and_kept_across_upgrades(cluster: ControlPlane, namespace: str) -> None:
    """The registry's bundle is read at its start: an upgrade that made a new CA would break every token. The CA
    Secret and the bundle ConfigMap hold one certificate, the same after an upgrade."""
    from devenv.incluster import CHART, helm  # the chart as the tests install it

    release = f"t{uuid.uuid4().hex[:6]}"
    values = {"controller": {"registry": {"url": "registry.example.com"}}}
    helm(cluster, "install", release, str(CHART), "-n", namespace, values=values)
    try:
        name = f"{release}-smll-secrets-registry-token-ca"

        def ca() -> tuple[str, str]:
            secret = json.loads(cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json").stdout)
            bundle = json.loads(cluster.kubectl("get", "configmap", name, "-n", namespace, "-o", "json").stdout)
            return base64.b64decode(secret["data"]["tls.crt"]).decode(), bundle["data"]["ca.crt"]

        cert, bundle = ca()
        assert cert.strip() == bundle.strip()
        helm(cluster, "upgrade", release, str(CHART), "-n", namespace, values={**values, "logLevel": "DEBUG"})
        assert ca() == (cert, bundle), "an upgrade made a new token CA"
    finally:
        helm(cluster, "uninstall", release, "-n", namespace)


def credentials_password(cluster: ControlPlane, namespace: str) -> str | None:
    found = cluster.kubectl("get", "secret", registry_rules.CREDENTIALS, "-n", namespace, "-o", "json", check=False)
    if found.returncode != 0:
        return None
    data = json.loads(found.stdout).get("data") or {}
    return base64.b64decode(data[registry_rules.PASSWORD_KEY]).decode() if registry_rules.PASSWORD_KEY in data else None


def credentials_reader(name: str, *, opted_out: bool) -> dict[str, object]:
    """A Deployment with no replicas (its rollout completes without a node) that reads REGISTRY_PASSWORD."""
    ref = {"secretKeyRef": {"name": registry_rules.CREDENTIALS, "key": registry_rules.PASSWORD_KEY}}
    container = {"name": "app", "image": "registry.invalid/app:1", "env": [{"name": "P", "valueFrom": ref}]}
    annotations = {"secrets.smll.io/auto-rollout": "false"} if opted_out else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        },
    }


def rotate(cluster: ControlPlane, namespace: str, old: str) -> str:
    cluster.kubectl("annotate", "namespace", namespace, f"secrets.smll.io/rotate={uuid.uuid4().hex}", "--overwrite")
    wait_for(lambda: credentials_password(cluster, namespace) not in (None, old), timeout=30, what="the new password")
    new = credentials_password(cluster, namespace)
    assert new is not None
    GUARD.register(new)
    return new


def test_rotation_keeps_the_old_password_for_tokens_until_the_readers_have_rolled(
    cluster: ControlPlane, setup: Setup, namespace: str
) -> None:
    vpc = vpc_name()
    client = client_for(setup, join_vpc(cluster, namespace, vpc))
    assert client.push_image(f"{vpc}/app", "1") == 201
    # A reader that the controller does not roll (auto-rollout "false"): it keeps the old password until its owner
    # lets it roll.
    reader = credentials_reader("api", opted_out=True)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(reader))
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "deployment/api", "-n", namespace, "-o", "jsonpath={.status.observedGeneration}"
            ).stdout
            == "1"
        ),
        timeout=20,
        what="the Deployment controller to see api",
    )
    old = client.password
    assert old is not None
    new = rotate(cluster, namespace, old)

    fresh = RegistryClient(setup.registry.url, client.user, new)
    assert fresh.pull(f"{vpc}/app", "1") == 200, "the new password pulls at once"
    time.sleep(2)  # a few of the reconcile's rounds: the old entry is still kept
    stale = RegistryClient(setup.registry.url, client.user, old)
    assert stale.login() == 200, "the old password was refused while a reader has not rolled"
    assert stale.pull(f"{vpc}/app", "1") == 200
    wrong = RegistryClient(setup.registry.url, client.user, old + "x")
    assert wrong.login() == 401

    # The reader opts back in: the rollout feature rolls it to the Secret's current data, then the old goes.
    cluster.kubectl("annotate", "deployment/api", "-n", namespace, "secrets.smll.io/auto-rollout-")
    wait_for(
        lambda: RegistryClient(setup.registry.url, client.user, old).login() == 401,
        timeout=30,
        what="the old password to be refused once the reader rolled",
    )
    assert RegistryClient(setup.registry.url, client.user, new).pull(f"{vpc}/app", "1") == 200
    for secret in (old, new):
        assert secret not in setup.controller.log()


def test_rotation_with_no_readers_drops_the_old_password_at_once_and_leaving_drops_both(
    cluster: ControlPlane, setup: Setup, namespace: str
) -> None:
    vpc = vpc_name()
    client = client_for(setup, join_vpc(cluster, namespace, vpc))
    assert client.push_image(f"{vpc}/app", "1") == 201
    old = client.password
    assert old is not None
    new = rotate(cluster, namespace, old)
    wait_for(
        lambda: RegistryClient(setup.registry.url, client.user, old).login() == 401,
        timeout=10,
        what="the old password to be refused (no reader to wait for)",
    )
    assert RegistryClient(setup.registry.url, client.user, new).pull(f"{vpc}/app", "1") == 200

    # A reader that never rolls keeps the next old password; leaving the VPC drops both at once.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(credentials_reader("api", opted_out=True)))
    newer = rotate(cluster, namespace, new)
    assert RegistryClient(setup.registry.url, client.user, new).login() == 200
    cluster.kubectl("label", "namespace", namespace, "smll.io/vpc-")
    for password in (new, newer):
        wait_for(
            lambda password=password: RegistryClient(setup.registry.url, client.user, password).login() == 401,  # type: ignore[misc]
            timeout=5,
            what="no token once the namespace left its VPC",
        )
    secret = setup.controller.htpasswd_secret
    assert secret is not None

    def kept() -> bool:
        found = cluster.kubectl("get", "secret", secret.split("/")[1], "-n", CONTROLLER_NAMESPACE, "-o", "json")
        data = json.loads(found.stdout).get("data") or {}
        return any(f"{client.user}:" in base64.b64decode(value).decode() for value in data.values())

    wait_for(lambda: not kept(), timeout=10, what="no entry, current or previous, of a namespace that left")
