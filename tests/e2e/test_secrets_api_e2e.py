"""The write-only Secrets API through the real aggregation layer: the product installed by its chart on a cluster with
a node, the apiserver proxying ``secrets.smll.io`` to the webhook pod with its front-proxy certificate, and a
subject that holds only the chart's writer role (by impersonation, as the apiserver authenticates it).

Every answer — success, refusal, conflict — and the product's logs are searched for the values written.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from devenv.cluster import ControlPlane, wait_for
from devenv.incluster import NAMESPACE, Installed
from tests.conftest import fresh_namespace
from tests.leaks import GUARD

pytestmark = pytest.mark.e2e

WRITER = "ci-writer"
GROUP_VERSION = "secrets.smll.io/v1alpha1"
SEEN: list[str] = []  # every answer this module got, scanned for values at the end


@pytest.fixture
def ns(node_cluster: ControlPlane, installed: Installed) -> Iterator[str]:
    """A namespace where the writer role is bound to WRITER, and nothing else."""
    with fresh_namespace(node_cluster, "api") as name:
        node_cluster.kubectl(
            "-n",
            name,
            "create",
            "rolebinding",
            "writer",
            "--clusterrole=smll-secrets-secret-writer",
            f"--user={WRITER}",
        )
        yield name


@pytest.fixture(scope="module", autouse=True)
def nothing_shows_a_value(node_cluster: ControlPlane, installed: Installed) -> Iterator[None]:
    """At the end: no answer, and no log line of the webhook or the controller, carries a value written here."""
    yield
    for container in ("webhook", "controller"):
        logs = node_cluster.kubectl("-n", NAMESPACE, "logs", "deploy/smll-secrets", "-c", container, check=False)
        SEEN.append(logs.stdout)
    before = len(GUARD.findings)
    for number, text in enumerate(SEEN):
        GUARD.scan(text, f"answer or log {number}")
    assert GUARD.findings[before:] == []


def as_writer(plane: ControlPlane, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    result = plane.kubectl(f"--as={WRITER}", *args, input=input, check=False)
    SEEN.extend((result.stdout, result.stderr))
    return result


def plugin(plane: ControlPlane, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``kubectl smll …`` as the writer: the console script pip installs, run through kubectl's plugin lookup."""
    scripts = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{scripts}:{plane.binaries.kubectl.parent}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [str(plane.binaries.kubectl), "smll", *args, f"--as={WRITER}"],  # kubectl takes no flag before a plugin
        input=stdin,
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": str(plane.kubeconfig)},
        timeout=60,
        check=False,
    )
    SEEN.extend((result.stdout, result.stderr))
    return result


def secret_write(secret: str, **spec: object) -> str:
    return json.dumps({"apiVersion": GROUP_VERSION, "kind": "SecretWrite", "spec": {"secretName": secret, **spec}})


def data(plane: ControlPlane, ns: str, secret: str) -> dict[str, str]:
    """The Secret's values, read as the cluster admin (the writer cannot)."""
    found = plane.kubectl("-n", ns, "get", "secret", secret, "-o", "json", check=False)
    if found.returncode != 0:
        return {}
    return {k: base64.b64decode(v).decode() for k, v in (json.loads(found.stdout).get("data") or {}).items()}


def test_the_writer_role_holds_no_verb_on_secrets(node_cluster: ControlPlane, ns: str) -> None:
    for verb in ("get", "list", "watch", "patch", "create", "update", "delete"):
        answer = node_cluster.kubectl("-n", ns, "auth", "can-i", verb, "secrets", f"--as={WRITER}", check=False)
        assert answer.stdout.strip() == "no", verb
    for verb, resource in (("create", "secretwrites"), ("list", "writeonlysecrets"), ("delete", "writeonlysecrets")):
        answer = node_cluster.kubectl(
            "-n", ns, "auth", "can-i", verb, f"{resource}.secrets.smll.io", f"--as={WRITER}", check=False
        )
        assert answer.stdout.strip() == "yes", (verb, resource)
    for read in (("get", "secrets"), ("get", "secrets", "-w", "--request-timeout=2s")):
        refused = as_writer(node_cluster, "-n", ns, *read)
        assert "Forbidden" in refused.stderr


def test_set_update_remove_and_delete_without_ever_reading(node_cluster: ControlPlane, ns: str) -> None:
    first, second, piped = GUARD.canary("api1"), GUARD.canary("api2"), GUARD.canary("api3")
    made = plugin(node_cluster, "secrets", "set", "stripe", f"STRIPE_SECRET_KEY={first}", "KEY=x", "-n", ns)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "secret/stripe created: set KEY, STRIPE_SECRET_KEY"
    assert data(node_cluster, ns, "stripe") == {"STRIPE_SECRET_KEY": first, "KEY": "x"}

    updated = plugin(node_cluster, "secrets", "set", "stripe", f"STRIPE_SECRET_KEY={second}", "-n", ns)
    assert updated.stdout.strip() == "secret/stripe updated: set STRIPE_SECRET_KEY", updated.stderr
    from_stdin = plugin(node_cluster, "secrets", "set", "stripe", "WEBHOOK_SIGNING=-", "-n", ns, stdin=piped)
    assert from_stdin.returncode == 0, from_stdin.stderr
    again = plugin(node_cluster, "secrets", "set", "stripe", f"STRIPE_SECRET_KEY={second}", "-n", ns)
    # The value it holds, sent again: answered as any other value is (the answer is no oracle for the stored one).
    assert again.stdout.strip() == "secret/stripe updated: set STRIPE_SECRET_KEY", again.stderr
    assert data(node_cluster, ns, "stripe") == {"STRIPE_SECRET_KEY": second, "KEY": "x", "WEBHOOK_SIGNING": piped}

    # The listing: types, key names, change times and advice; no value, no data field at all.
    listed = as_writer(node_cluster, "-n", ns, "get", "writeonlysecrets", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (item,) = json.loads(listed.stdout)["items"]
    assert item["kind"] == "WriteOnlySecret"
    assert item["type"] == "custom"
    assert "data" not in item
    assert [key["name"] for key in item["keys"]] == ["KEY", "STRIPE_SECRET_KEY", "WEBHOOK_SIGNING"]
    assert all(key["lastChanged"].endswith("Z") and key["usedBy"] == [] for key in item["keys"])
    assert item["advice"] == ["KEY says little of what it holds: use descriptive key names"]
    table = as_writer(node_cluster, "-n", ns, "get", "wos")
    assert table.stdout.split()[:7] == ["NAME", "TYPE", "KEYS", "USERS", "CHANGED", "ADVICE", "AGE"]
    assert "KEY,STRIPE_SECRET_KEY,WEBHOOK_SIGNING" in table.stdout
    described = as_writer(node_cluster, "-n", ns, "describe", "wos", "stripe")
    assert "WEBHOOK_SIGNING" in described.stdout
    assert "use descriptive key names" in described.stdout

    removed = plugin(node_cluster, "secrets", "unset", "stripe", "KEY", "-n", ns)
    assert removed.stdout.strip() == "secret/stripe updated: removed KEY", removed.stderr
    assert set(data(node_cluster, ns, "stripe")) == {"STRIPE_SECRET_KEY", "WEBHOOK_SIGNING"}

    deleted = plugin(node_cluster, "secrets", "delete", "stripe", "-n", ns)
    assert deleted.returncode == 0, deleted.stderr
    assert "deleted" in deleted.stdout
    assert data(node_cluster, ns, "stripe") == {}


def test_bad_input_gets_a_clear_error_and_changes_nothing(node_cluster: ControlPlane, ns: str) -> None:
    value = GUARD.canary("bad")
    bad_key = as_writer(node_cluster, "-n", ns, "create", "-f", "-", input=secret_write("s", stringData={"a b": value}))
    assert "is not a valid Secret key" in bad_key.stderr
    missing = plugin(node_cluster, "secrets", "unset", "nothing-here", "KEY", "-n", ns)
    assert 'secret "nothing-here" not found' in missing.stderr
    too_big = as_writer(
        node_cluster, "-n", ns, "create", "-f", "-", input=secret_write("big", stringData={"BLOB": "x" * (1 << 20)})
    )
    assert "a Secret holds at most 1048576 (1 MiB)" in too_big.stderr
    # A generated Secret (the label says so): refused key by key unless asked, and never given a new key.
    node_cluster.kubectl(
        "-n", ns, "create", "secret", "generic", "orders-credentials", f"--from-literal=POSTGRES_PASSWORD={value}"
    )
    node_cluster.kubectl("-n", ns, "label", "secret", "orders-credentials", "smll.io/secret-type=database")
    generated = plugin(node_cluster, "secrets", "set", "orders-credentials", "POSTGRES_PASSWORD=new", "-n", ns)
    assert "is generated by smll-secrets" in generated.stderr
    assert "--allow-generated" in generated.stderr
    extra = plugin(node_cluster, "secrets", "set", "orders-credentials", "EXTRA=1", "--allow-generated", "-n", ns)
    assert "holds exactly its contract keys" in extra.stderr
    assert data(node_cluster, ns, "orders-credentials") == {"POSTGRES_PASSWORD": value}
    assert data(node_cluster, ns, "s") == {}
    assert data(node_cluster, ns, "big") == {}


def test_protection_and_rollouts_apply_as_for_direct_writes(
    node_cluster: ControlPlane, installed: Installed, ns: str
) -> None:
    first, second = GUARD.canary("roll1"), GUARD.canary("roll2")
    assert plugin(node_cluster, "secrets", "set", "stripe", f"STRIPE_SECRET_KEY={first}", "-n", ns).returncode == 0
    web = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"env.secrets.smll.io/API_KEY": "stripe/STRIPE_SECRET_KEY"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": installed.test_app_image}],
                },
            },
        },
    }
    node_cluster.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(web))
    node_cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=120s")

    view = json.loads(as_writer(node_cluster, "-n", ns, "get", "wos", "stripe", "-o", "json").stdout)
    assert view["keys"][0]["usedBy"] == ["deployment/web (env API_KEY)"]

    # The same refusal, in the same words, as a direct removal by the cluster admin would get.
    direct = node_cluster.kubectl(
        "-n", ns, "patch", "secret", "stripe", "--dry-run=server", "-p", '{"data":{"STRIPE_SECRET_KEY":null}}',
        check=False,
    )  # fmt: skip
    through_api = plugin(node_cluster, "secrets", "unset", "stripe", "STRIPE_SECRET_KEY", "-n", ns)
    words = 'key STRIPE_SECRET_KEY of secret "stripe" is used by deployment/web (env API_KEY)'
    assert words in direct.stderr
    assert words in through_api.stderr
    refused = plugin(node_cluster, "secrets", "delete", "stripe", "-n", ns)
    assert 'secret "stripe" is used by deployment/web (env API_KEY)' in refused.stderr
    assert data(node_cluster, ns, "stripe") == {"STRIPE_SECRET_KEY": first}

    # A change through the API rolls the user once; its new pod reads the new value.
    assert plugin(node_cluster, "secrets", "set", "stripe", f"STRIPE_SECRET_KEY={second}", "-n", ns).returncode == 0
    restarted = "jsonpath={.spec.template.metadata.annotations.secrets\\.smll\\.io/restarted-at}"
    wait_for(
        lambda: bool(node_cluster.kubectl("-n", ns, "get", "deployment/web", "-o", restarted).stdout),
        timeout=60,
        what="the controller to roll web",
    )
    node_cluster.kubectl("-n", ns, "rollout", "status", "deployment/web", "--timeout=120s")
    wait_for(
        lambda: (
            node_cluster.kubectl("-n", ns, "exec", "deploy/web", "--", "printenv", "API_KEY", check=False).stdout
            == f"{second}\n"
        ),
        timeout=60,
        what="the new pod to read the new value",
    )
    events = json.loads(
        node_cluster.kubectl("-n", ns, "get", "events", "--field-selector=reason=SecretChanged", "-o", "json").stdout
    )
    assert [e["message"] for e in events["items"]] == ["Rolled out: secret 'stripe' changed keys STRIPE_SECRET_KEY"]


def test_two_writers_never_lose_each_others_keys(node_cluster: ControlPlane, ns: str) -> None:
    values = {f"KEY_{n}": GUARD.canary(f"c{n}") for n in range(6)}
    answers: dict[str, subprocess.CompletedProcess[str]] = {}

    def write(key: str) -> None:
        answers[key] = as_writer(
            node_cluster, "-n", ns, "create", "-f", "-", input=secret_write("shared", stringData={key: values[key]})
        )

    threads = [threading.Thread(target=write, args=(key,)) for key in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert all(answer.returncode == 0 for answer in answers.values()), [a.stderr for a in answers.values()]
    assert data(node_cluster, ns, "shared") == values

    # A set and a remove of one key at once: one of the two wins whole; the old value never survives.
    newer = GUARD.canary("race")

    def set_it() -> None:
        as_writer(
            node_cluster, "-n", ns, "create", "-f", "-", input=secret_write("shared", stringData={"KEY_0": newer})
        )

    def remove_it() -> None:
        as_writer(node_cluster, "-n", ns, "create", "-f", "-", input=secret_write("shared", remove=["KEY_0"]))

    racers = [threading.Thread(target=set_it), threading.Thread(target=remove_it)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(timeout=90)
    final = data(node_cluster, ns, "shared")
    assert final.get("KEY_0") in (None, newer)
    assert {k: v for k, v in final.items() if k != "KEY_0"} == {k: v for k, v in values.items() if k != "KEY_0"}
