"""The write-only API as a hostile tenant plays it (issue 22, attacks 2 to 4): with only the rights a platform
hands out (the built-in ``view``, the chart's viewer role, the writer role, a pipeline's Role limited by
``resourceNames``), through the real aggregation layer (impersonation, as the apiserver authenticates it), on the
product installed by its chart.

Each test but the last is an attack, each seen succeeding (the test failing) on the code before the fix; the last
plays a tenant's pod that reaches the API's port itself.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.incluster import Installed
from tests.conftest import fresh_namespace
from tests.leaks import LeakGuard

pytestmark = pytest.mark.e2e

GROUP_VERSION = "secrets.smll.io/v1alpha1"
WRITER, VIEWER, VIEW, EDIT = "tenant-writer", "tenant-viewer", "tenant-view", "tenant-edit"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "write-only-secrets.md"


@pytest.fixture
def ns(node_cluster: ControlPlane, installed: Installed) -> Iterator[str]:
    """A tenant namespace: the writer role, the viewer role, the built-in ``view`` and ``edit`` bound to one user
    each."""
    with fresh_namespace(node_cluster, "tenant") as name:
        for user, role in ((WRITER, "smll-secrets-secret-writer"), (VIEWER, "smll-secrets-secret-viewer"),
                           (VIEW, "view"), (EDIT, "edit")):  # fmt: skip
            node_cluster.kubectl("-n", name, "create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}")
        yield name


def as_user(plane: ControlPlane, user: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(f"--as={user}", *args, input=input, check=False)


def secret_write(secret: str, **spec: object) -> str:
    return json.dumps({"apiVersion": GROUP_VERSION, "kind": "SecretWrite", "spec": {"secretName": secret, **spec}})


def values(plane: ControlPlane, ns: str, secret: str) -> dict[str, str]:
    """The Secret's values, read as the cluster admin."""
    found = plane.kubectl("-n", ns, "get", "secret", secret, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (json.loads(found.stdout).get("data") or {}).items()}


def test_no_read_path_shows_a_value_to_view_the_viewer_or_the_writer(node_cluster: ControlPlane, ns: str) -> None:
    """Attack 2: ``kubectl apply`` keeps the whole manifest, stringData included, in last-applied-configuration;
    the view copied every annotation. Canaries in data, stringData and annotations, client- and server-side apply;
    every answer of every verb of the API, as each actor, is searched for them."""
    guard = LeakGuard()
    canary = guard.canary
    client_side: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "applied",
            "annotations": {"note.example.com/hint": canary("ann")},
            "labels": {"team": canary("lbl")},
        },
        "stringData": {"PASSWORD": canary("sd")},
        "data": {"TOKEN": base64.b64encode(canary("d").encode()).decode()},
    }
    node_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(client_side))
    server_side = {**client_side, "metadata": {**client_side["metadata"], "name": "applied-ss"},
                   "stringData": {"PASSWORD": canary("ss")}}  # fmt: skip
    node_cluster.kubectl("-n", ns, "apply", "--server-side", "-f", "-", input=json.dumps(server_side))
    node_cluster.kubectl("-n", ns, "create", "secret", "generic", "doomed", f"--from-literal=K={canary('del')}")
    annotations = json.loads(node_cluster.kubectl("-n", ns, "get", "secret", "applied", "-o", "json").stdout)
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations["metadata"]["annotations"]

    answers: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def ask(user: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        answer = as_user(node_cluster, user, "-n", ns, *args, input=input)
        answers.append((f"{user}: kubectl {' '.join(args)}", answer))
        return answer

    for user in (VIEW, VIEWER, WRITER):
        for name in ("applied", "applied-ss"):
            shown = ask(user, "get", "wos", name, "-o", "json")
            assert shown.returncode == 0, shown.stderr
            assert [key["name"] for key in json.loads(shown.stdout)["keys"]] == ["PASSWORD", "TOKEN"]
            ask(user, "get", "wos", name, "-o", "yaml")
            ask(user, "get", "wos", name)
            ask(user, "describe", "wos", name)
        listed = ask(user, "get", "wos", "-o", "json", "--chunk-size=1")
        assert sorted(item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]) == [
            "applied", "applied-ss", "doomed",
        ], listed.stderr  # fmt: skip
        ask(user, "get", "wos", "--chunk-size=2")
        ask(user, "get", "wos", "-o", "wide")
        ask(user, "get", "wos", "-l", "team", "-o", "json")
        ask(user, "get", "wos", "missing", "-o", "json")
        ask(user, "get", "wos", "applied", "-w", "--request-timeout=2s")
        ask(user, "describe", "wos")
    for dry in ([], ["--dry-run=server"]):
        for name in ("applied", "applied-ss"):
            ask(WRITER, "create", "-f", "-", "-o", "json", *dry,
                input=secret_write(name, stringData={"OTHER": "x"}))  # fmt: skip
            ask(WRITER, "create", "-f", "-", "-o", "json", *dry, input=secret_write(name, remove=["NOPE"]))
            ask(WRITER, "create", "-f", "-", "-o", "json", *dry, input=secret_write(name, data={"BAD": "%%%"}))
    ask(VIEW, "create", "-f", "-", "-o", "json", input=secret_write("applied", stringData={"X": "y"}))
    ask(VIEW, "delete", "wos", "doomed")
    ask(WRITER, "delete", "wos", "doomed", "--dry-run=server")
    ask(WRITER, "delete", "wos", "doomed", "-o", "json")
    assert values(node_cluster, ns, "doomed") == {}
    for where, answer in answers:
        guard.scan(answer.stdout + answer.stderr, where)
    assert guard.findings == []


WRITES = {"list writeonlysecrets", "create secretwrites", "update writeonlysecrets", "delete writeonlysecrets"}


@pytest.mark.parametrize(
    ("user", "granted"),
    [
        (VIEW, {"list writeonlysecrets"}),
        (VIEWER, {"list writeonlysecrets"}),
        (WRITER, WRITES),
        # edit holds the writer's verbs (aggregated) and Kubernetes' own verbs on secrets: the API is no boundary
        # for it in its own namespace.
        (EDIT, WRITES | {"get secrets"}),
    ],
)  # fmt: skip
def test_what_each_tenant_role_may_ask(node_cluster: ControlPlane, ns: str, user: str, granted: set[str]) -> None:
    asked = ("list writeonlysecrets", "create secretwrites", "update writeonlysecrets", "delete writeonlysecrets",
             "get secrets", "list secrets", "watch secrets")  # fmt: skip
    found = set()
    for question in asked:
        verb, resource = question.split()
        group = "" if resource == "secrets" else ".secrets.smll.io"
        answer = as_user(node_cluster, user, "-n", ns, "auth", "can-i", verb, f"{resource}{group}")
        if answer.stdout.strip() == "yes":
            found.add(question)
    assert found == granted | ({"list secrets", "watch secrets"} if "get secrets" in granted else set())


def test_a_dry_run_answers_the_same_for_a_right_and_a_wrong_guess(node_cluster: ControlPlane, ns: str) -> None:
    """Attack 3: a dry-run SecretWrite answered ``unchanged`` for the stored value and ``set`` for any other."""
    stored = LeakGuard().canary("oracle")
    for name in ("right", "wrong"):
        node_cluster.kubectl("-n", ns, "create", "secret", "generic", name, f"--from-literal=PIN={stored}")

    def answer(name: str, guess: str, *dry: str) -> dict[str, object]:
        done = as_user(node_cluster, WRITER, "-n", ns, "create", "-f", "-", "-o", "json", *dry,
                       input=secret_write(name, stringData={"PIN": guess}))  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        found["metadata"].pop("name", None)
        found["spec"].pop("secretName", None)
        return found  # type: ignore[no-any-return]

    assert answer("right", stored, "--dry-run=server") == answer("wrong", "1234", "--dry-run=server")
    assert values(node_cluster, ns, "right") == values(node_cluster, ns, "wrong") == {"PIN": stored}

    def view(name: str) -> dict[str, object]:
        shown = json.loads(as_user(node_cluster, WRITER, "-n", ns, "get", "wos", name, "-o", "json").stdout)
        for field in ("name", "uid", "creationTimestamp"):
            shown["metadata"].pop(field, None)
        for key in shown["keys"]:
            key.pop("lastChanged")
        return shown  # type: ignore[no-any-return]

    assert view("right") == view("wrong")
    # Written for real: the right guess and the wrong one get the same answer, and leave the same trace.
    written_from = time.time() - 1
    assert answer("right", stored) == answer("wrong", "1234")
    assert view("right") == view("wrong")
    for name in ("right", "wrong"):
        shown = json.loads(as_user(node_cluster, WRITER, "-n", ns, "get", "wos", name, "-o", "json").stdout)
        changed = datetime.datetime.fromisoformat(shown["keys"][0]["lastChanged"]).timestamp()
        assert changed >= written_from, (name, shown["keys"], "the key is stamped as changed either way")


def test_the_writer_cannot_rewrite_a_helm_record_a_token_or_a_tls_key(node_cluster: ControlPlane, ns: str) -> None:
    """Attack 4: a writer rewrote a helm.sh/release.v1 Secret (Helm applies it on rollback with the deployer's
    rights); service-account tokens and TLS keys were open the same way."""
    guard = LeakGuard()
    record = guard.canary("helm")
    node_cluster.kubectl("-n", ns, "create", "secret", "generic", "sh.helm.release.v1.shop.v1",
                         "--type=helm.sh/release.v1", f"--from-literal=release={record}")  # fmt: skip
    node_cluster.kubectl("-n", ns, "create", "secret", "generic", "shop-tls", "--type=kubernetes.io/tls",
                         f"--from-literal=tls.crt={guard.canary('crt')}",
                         f"--from-literal=tls.key={guard.canary('key')}")  # fmt: skip
    token = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "default-token", "annotations": {"kubernetes.io/service-account.name": "default"}},
    }
    node_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(token))
    pull = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "pull"},
        "stringData": {".dockerconfigjson": json.dumps({"auths": {"r.example": {"auth": guard.canary("pull")}}})},
    }
    node_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(pull))
    targets = {
        "sh.helm.release.v1.shop.v1": ("helm.sh/release.v1", "release"),
        "shop-tls": ("kubernetes.io/tls", "tls.key"),
        "default-token": ("kubernetes.io/service-account-token", "token"),
        "pull": ("kubernetes.io/dockerconfigjson", ".dockerconfigjson"),
    }
    before = {name: values(node_cluster, ns, name) for name in targets if name != "default-token"}
    for name, (kind, key) in targets.items():
        for dry in ([], ["--dry-run=server"]):
            for spec in ({"stringData": {key: "forged"}}, {"stringData": {key: "forged"}, "allowGenerated": True},
                         {"remove": [key]}):  # fmt: skip
                refused = as_user(node_cluster, WRITER, "-n", ns, "create", "-f", "-", *dry,
                                  input=secret_write(name, **spec))  # fmt: skip
                assert refused.returncode != 0, (name, spec, refused.stdout)
                assert f"of type {kind}" in refused.stderr, refused.stderr
                assert "Forbidden" in refused.stderr, refused.stderr
        deleted = as_user(node_cluster, WRITER, "-n", ns, "delete", "wos", name)
        assert deleted.returncode != 0, (name, deleted.stdout)
        assert f"of type {kind}" in deleted.stderr, deleted.stderr
    assert {name: values(node_cluster, ns, name) for name in before} == before
    assert values(node_cluster, ns, "default-token").get("token") != "forged"  # the token controller may fill it
    # The namespace controller deletes writeonlysecrets too, and is refused these: the namespace still goes away
    # (it deletes the Secrets themselves).
    node_cluster.kubectl("delete", "namespace", ns, "--wait=false")
    wait_for(
        lambda: node_cluster.kubectl("get", "namespace", ns, check=False).returncode != 0,
        timeout=120,
        what=f"namespace {ns} to be deleted",
    )


def _pipeline_role(ns: str) -> str:
    """The Role and RoleBinding docs/write-only-secrets.md shows for a CI pipeline, in this namespace."""
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    (block,) = [str(b) for b in blocks if "resourceNames" in b and "kind: RoleBinding" in b]
    return block.replace("namespace: shop", f"namespace: {ns}")


def test_a_pipeline_role_with_resource_names_reaches_only_its_secret(node_cluster: ControlPlane, ns: str) -> None:
    """Attack 4, the other half: the access review carried no Secret name, so a Role with ``resourceNames`` could not
    limit a pipeline to the Secret it owns (it was refused everywhere, so a platform granted the whole namespace)."""
    node_cluster.kubectl("-n", ns, "create", "serviceaccount", "deploy-bot")
    node_cluster.kubectl("apply", "-f", "-", input=_pipeline_role(ns))
    bot = f"system:serviceaccount:{ns}:deploy-bot"
    node_cluster.kubectl("-n", ns, "create", "secret", "generic", "payments", "--from-literal=OTHER=theirs")

    own = as_user(node_cluster, bot, "-n", ns, "create", "-f", "-", input=secret_write("stripe",
                  stringData={"STRIPE_SECRET_KEY": "sk_test_1"}))  # fmt: skip
    assert own.returncode == 0, own.stderr
    again = as_user(node_cluster, bot, "-n", ns, "create", "-f", "-",
                    input=secret_write("stripe", stringData={"STRIPE_SECRET_KEY": "sk_test_2"}))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert values(node_cluster, ns, "stripe") == {"STRIPE_SECRET_KEY": "sk_test_2"}
    shown = as_user(node_cluster, bot, "-n", ns, "get", "wos", "stripe", "-o", "json")
    assert shown.returncode == 0, shown.stderr

    other = as_user(node_cluster, bot, "-n", ns, "create", "-f", "-",
                    input=secret_write("payments", stringData={"OTHER": "mine"}))  # fmt: skip
    assert other.returncode != 0
    assert 'writeonlysecrets.secrets.smll.io "payments" is forbidden' in other.stderr, other.stderr
    assert f'User "{bot}" cannot update resource "writeonlysecrets"' in other.stderr, other.stderr
    assert 'a SecretWrite to secret "payments" needs update on writeonlysecrets "payments"' in other.stderr
    assert values(node_cluster, ns, "payments") == {"OTHER": "theirs"}
    for refused in (
        as_user(node_cluster, bot, "-n", ns, "get", "wos", "payments"),
        as_user(node_cluster, bot, "-n", ns, "delete", "wos", "payments"),
        as_user(node_cluster, bot, "-n", ns, "get", "wos"),
    ):
        assert refused.returncode != 0
        assert "Forbidden" in refused.stderr or "forbidden" in refused.stderr, refused.stderr
    assert values(node_cluster, ns, "payments") == {"OTHER": "theirs"}


# What the tenant's pod runs (the product's image has Python): the API's requests, sent straight to the webhook
# pod's API port with the front proxy's headers forged (the apiserver's cluster admin), and what came back.
PROBE = """
import json, ssl, sys, urllib.error, urllib.request
base, namespace = sys.argv[1], sys.argv[2]
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
forged = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters", "Content-Type": "application/json"}
api = "/apis/secrets.smll.io/v1alpha1/namespaces/" + namespace
write = {"apiVersion": "secrets.smll.io/v1alpha1", "kind": "SecretWrite",
         "spec": {"secretName": "bank-db", "stringData": {"PASSWORD": "forged"}}}
answers = {}
for method, path, body in (("GET", api + "/writeonlysecrets", None), ("GET", api + "/writeonlysecrets/bank-db", None),
                           ("POST", api + "/secretwrites", json.dumps(write).encode()), ("GET", "/apis", None)):
    request = urllib.request.Request(base + path, data=body, method=method, headers=forged)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            found = {"status": answer.status, "body": answer.read().decode()}
    except urllib.error.HTTPError as error:
        found = {"status": error.code, "body": error.read().decode()}
    except (OSError, ssl.SSLError) as error:
        found = {"refused": repr(error)}
    answers[method + " " + path] = found
print("ANSWERS " + json.dumps(answers))
"""


def test_a_tenant_pod_that_reaches_the_api_port_gets_no_answer(
    node_cluster: ControlPlane, installed: Installed, ns: str
) -> None:
    """The API port answers the apiserver's front proxy only: a pod that reaches it and forges the front proxy's
    headers (as the cluster admin) is refused at the TLS handshake, before any header is read."""
    plane = node_cluster
    bank_db = LeakGuard().canary("bank")
    with fresh_namespace(plane, "bank") as bank:
        plane.kubectl("-n", bank, "create", "secret", "generic", "bank-db", f"--from-literal=PASSWORD={bank_db}")
        pod = json.loads(
            plane.kubectl(
                "-n", "smll-system", "get", "pods", "-l", "app.kubernetes.io/instance=smll-secrets", "-o", "json"
            ).stdout
        )["items"][0]
        webhook = next(c for c in pod["spec"]["containers"] if c["name"] == "webhook")
        port = {p["name"]: p["containerPort"] for p in webhook["ports"]}["api"]
        base = f"https://{pod['status']['podIP']}:{port}"
        probe = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "prober"},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "prober", "image": installed.product_image, "command": ["python", "-c", PROBE, base, bank]}
                ],
            },
        }
        plane.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(probe))
        wait_for(
            lambda: (
                plane.kubectl("-n", ns, "get", "pod", "prober", "-o", "jsonpath={.status.phase}").stdout
                in ("Succeeded", "Failed")
            ),
            timeout=120,
            what="the prober pod to finish",
        )
        log = plane.kubectl("-n", ns, "logs", "prober").stdout
        lines = [line for line in log.splitlines() if line.startswith("ANSWERS ")]
        assert lines, log
        answers = json.loads(lines[0].removeprefix("ANSWERS "))
        assert len(answers) == 4
        for request, answer in answers.items():
            assert "refused" in answer, f"{request} answered: {answer}"
        assert values(plane, bank, "bank-db") == {"PASSWORD": bank_db}
