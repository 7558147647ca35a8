"""The Helm chart, rendered by a real helm (built from Go modules on first use): lint, every documented option
combination, the webhook configurations as docs/linking.md and docs/protection.md describe them, the schema, the
fail guards, and the flags the chart passes to the real command lines."""

from __future__ import annotations

import base64
import datetime
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import controller.__main__ as controller_cli
from controller.databases.config import load_servers
from controller.frame.settings import Settings
from devenv.binaries import ensure_helm
from devenv.cluster import ADMISSION_CLIENT
from devenv.webhook import configurations as local_configurations
from rules.certs import make_ca
from rules.names import PRODUCT_NAMESPACE
from webhook.__main__ import parser as webhook_parser
from webhook.__main__ import settings_from

CHART = Path(__file__).resolve().parents[2] / "charts" / "smll-secrets"
RELEASE = "smll-secrets"
NAMESPACE = "smll-system"
CA_BUNDLE = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
CLIENT_CA = make_ca("admission-client-ca", valid_for=datetime.timedelta(days=1)).cert_pem.decode()
SERVERS = {"default": {"host": "pg.db.svc", "port": 5432, "sslmode": "require", "adminSecret": "pg-admin"}}

# Every documented option, alone and together (values.yaml says what each one does).
COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cert-manager": {"webhook": {"tls": {"mode": "cert-manager"}}},
    "cert-manager-cluster-issuer": {
        "webhook": {
            "tls": {"mode": "cert-manager", "certManager": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}
        }
    },
    "dev-url": {"webhook": {"url": "https://10.0.0.1:8443", "caBundle": CA_BUNDLE}},
    "one-replica": {"replicaCount": 1},
    "databases": {"controller": {"databases": {"servers": SERVERS}}},
    "registry": {"controller": {"registry": {"url": "registry.example.com", "htpasswdSecret": {"namespace": "reg"}}}},
    "network-policy": {"networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}]}},
    "no-rbac-own-service-account": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "mine"}},
    "client-auth": {
        "webhook": {"clientAuth": {"enabled": True, "caBundle": CLIENT_CA, "allowedNames": [ADMISSION_CLIENT]}},
        "networkPolicy": {"enabled": True, "apiserverCIDRs": ["10.244.0.1/32"]},
    },
    "client-auth-configmap": {"webhook": {"clientAuth": {"enabled": True, "caConfigMap": "apiserver-webhook-ca"}}},
    "no-secret-writer-no-tests": {"secretWriter": {"create": False}, "tests": {"enabled": False}},
    "controller-separate": {
        "controller": {"separate": True, "databases": {"servers": SERVERS}, "registry": {"url": "registry.example.com"}}
    },
    "everything": {
        "replicaCount": 3,
        "logLevel": "DEBUG",
        "logFormat": "json",
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "pull"}],
        "pod": {"priorityClassName": "system-cluster-critical", "nodeSelector": {"pool": "system"}},
        "podDisruptionBudget": {"minAvailable": 2},
        "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
        "webhook": {"excludeNamespaces": ["flux-system"], "tls": {"mode": "cert-manager"}},
        "controller": {
            "settleSeconds": 5,
            "settleMaxSeconds": 45,
            "databases": {"servers": SERVERS},
            "registry": {"url": "registry.example.com"},
        },
        "secretWriter": {"aggregationLabels": {"example.com/aggregate-to-ci": "true"}},
    },
}


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm built from devenv/gomod/helm (a few minutes the first time, cached afterwards)."""
    return ensure_helm()


def run_helm(helm: Path, *args: str, values: dict[str, Any] | None = None, check: bool = True) -> str:
    cmd = [str(helm), *args]
    proc = subprocess.run(
        [*cmd, "-f", "-"] if values is not None else cmd,
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def render(helm: Path, values: dict[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", namespace, values=values or {})
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(helm: Path, values: dict[str, Any]) -> str:
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "-n", NAMESPACE, "-f", "-"],
        input=yaml.safe_dump(values),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0, f"rendered although it should have been refused:\n{proc.stdout[:2000]}"
    return proc.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def definitions(file: str) -> list[dict[str, Any]]:
    loaded = yaml.safe_load((CHART / "files" / file).read_text())
    assert isinstance(loaded, list)
    return loaded


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


@pytest.fixture(params=list(COMBINATIONS), ids=list(COMBINATIONS))
def combination(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return str(request.param), COMBINATIONS[request.param]


# --- lint and render ---------------------------------------------------------------------------------------------


def test_helm_lint_passes_strictly_for_every_combination(helm: Path, combination: tuple[str, dict[str, Any]]) -> None:
    _, values = combination
    run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=values)


def test_every_combination_renders_one_deployment_with_the_webhook_and_its_controller_sidecar(
    helm: Path, combination: tuple[str, dict[str, Any]]
) -> None:
    name, values = combination
    docs = render(helm, values)
    if name == "controller-separate":
        return  # its own test below
    deployment = one(docs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    if name == "dev-url":
        assert [c["name"] for c in containers] == ["controller"]
    else:
        assert [c["name"] for c in containers] == ["webhook", "controller"]
        assert {c["image"] for c in containers} == {container(deployment, "controller")["image"]}
        assert container(deployment, "webhook")["args"][0] == "webhook"
    assert container(deployment, "controller")["args"][0] == "controller"
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, doc["kind"]


def test_a_separate_controller_runs_alone_as_its_own_service_account_with_the_controller_rights(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["controller-separate"])
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    webhook, controller = deployments[RELEASE], deployments[f"{RELEASE}-controller"]
    assert [c["name"] for c in webhook["spec"]["template"]["spec"]["containers"]] == ["webhook"]
    assert [c["name"] for c in controller["spec"]["template"]["spec"]["containers"]] == ["controller"]
    webhook_sa = webhook["spec"]["template"]["spec"]["serviceAccountName"]
    controller_sa = controller["spec"]["template"]["spec"]["serviceAccountName"]
    assert webhook_sa != controller_sa
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"} == {webhook_sa, controller_sa}
    # The webhook Service never selects the controller's pods.
    service = one(docs, "Service", f"{RELEASE}-webhook")
    pod_labels = controller["spec"]["template"]["metadata"]["labels"]
    assert not set(service["spec"]["selector"].items()) <= set(pod_labels.items())
    # The controller's roles are bound to the controller's account alone; the webhook's to the webhook's.
    for doc in docs:
        if doc["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            subjects = {s["name"] for s in doc["subjects"]}
            expected = controller_sa if doc["roleRef"]["name"].endswith("-controller") else webhook_sa
            assert subjects == {expected}, doc["metadata"]["name"]
    volumes = {v["name"] for v in controller["spec"]["template"]["spec"]["volumes"]}
    assert "databases" in volumes
    assert "databases" not in {v["name"] for v in webhook["spec"]["template"]["spec"]["volumes"]}


def test_defaults_render_what_the_issue_asks_for(helm: Path) -> None:
    docs = render(helm)
    assert kinds(docs) == sorted(
        [
            "ClusterRole",  # webhook
            "ClusterRole",  # controller
            "ClusterRole",  # secret writer
            "ClusterRole",  # secret viewer
            "ClusterRole",  # the write-only API's own rights
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",  # the write-only API: auth-delegator
            "ClusterRoleBinding",  # the write-only API: its own rights
            "APIService",  # the write-only API
            "Deployment",
            "MutatingWebhookConfiguration",
            "Pod",  # helm test
            "PodDisruptionBudget",
            "Role",  # webhook TLS
            "Role",  # controller lease
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",  # the write-only API: the front proxy's settings in kube-system
            "Service",
            "ServiceAccount",
            "ValidatingWebhookConfiguration",
        ]
    )
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "smll-secrets",
        "app.kubernetes.io/instance": RELEASE,
    }
    test_pod = one(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_the_pod_runs_without_privileges(helm: Path) -> None:
    spec = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for c in spec["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(("replicas", "expected"), [(1, 0), (2, 1), (3, 1)], ids=["one", "two", "three"])
def test_a_disruption_budget_only_with_more_than_one_replica(helm: Path, replicas: int, expected: int) -> None:
    docs = render(helm, {"replicaCount": replicas})
    assert kinds(docs).count("PodDisruptionBudget") == expected


def test_network_policy_is_optional(helm: Path) -> None:
    assert "NetworkPolicy" not in kinds(render(helm))
    policy = one(render(helm, COMBINATIONS["network-policy"]), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    webhook_rule = policy["spec"]["ingress"][0]
    assert webhook_rule["ports"] == [{"port": "https", "protocol": "TCP"}, {"port": "api", "protocol": "TCP"}]
    assert "from" not in webhook_rule, "the API server's source address differs per cluster: open by default"


# --- the webhook configurations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "file", "path", "timeout"),
    [
        ("MutatingWebhookConfiguration", "mutating-webhooks.yaml", "/mutate", 5),
        ("ValidatingWebhookConfiguration", "validating-webhooks.yaml", "/validate", 10),
    ],
    ids=["mutating", "validating"],
)
@pytest.mark.parametrize("namespace", ["smll-system", "platform"])
def test_webhook_configurations_are_the_chart_files_with_service_and_namespace_selector(
    helm: Path, kind: str, file: str, path: str, timeout: int, namespace: str
) -> None:
    configuration = one(render(helm, namespace=namespace), kind)
    assert configuration["metadata"]["name"] == RELEASE
    hooks = configuration["webhooks"]
    expected = definitions(file)
    assert [h["name"] for h in hooks] == [d["name"] for d in expected]
    for hook, definition in zip(hooks, expected, strict=True):
        for key, value in definition.items():
            assert hook[key] == value, key
        assert hook["matchConditions"], "only objects that opt in are sent"
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == timeout
        [expression] = hook["namespaceSelector"]["matchExpressions"]
        assert expression["key"] == "kubernetes.io/metadata.name"
        assert expression["operator"] == "NotIn"
        assert set(expression["values"]) == {"kube-system", namespace}
        assert hook["clientConfig"] == {
            "service": {"name": f"{RELEASE}-webhook", "namespace": namespace, "path": path, "port": 443}
        }, "self-managed TLS: caBundle is the webhook's to keep, never templated"


def test_more_namespaces_can_be_left_out(helm: Path) -> None:
    docs = render(helm, {"webhook": {"excludeNamespaces": ["flux-system", "kube-system"]}})
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        [expression] = one(docs, kind)["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        assert expression["values"] == ["kube-system", NAMESPACE, "flux-system"]


def test_cert_manager_mode_injects_the_ca_and_serves_the_certificate_files(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["cert-manager"])
    certificate = one(docs, "Certificate")
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": f"{RELEASE}-selfsigned", "kind": "Issuer"}
    assert one(docs, "Issuer")["spec"] == {"selfSigned": {}}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = one(docs, kind)
        annotations = configuration["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{RELEASE}-webhook"
        assert all("caBundle" not in h["clientConfig"] for h in configuration["webhooks"])
    args = container(one(docs, "Deployment"), "webhook")["args"]
    assert "--tls-mode=files" in args
    assert "--cert-file=/var/run/smll-secrets/tls/tls.crt" in args
    assert kinds(docs).count("Role") == 1, "no TLS Role: cert-manager writes the Secret"
    webhook_role = one(docs, "ClusterRole", f"{RELEASE}-webhook")
    assert all("admissionregistration.k8s.io" not in r["apiGroups"] for r in webhook_role["rules"])


def test_cert_manager_with_an_issuer_of_yours_renders_no_issuer(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["cert-manager-cluster-issuer"])
    assert "Issuer" not in kinds(docs)
    assert one(docs, "Certificate")["spec"]["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer"}


def test_development_mode_registers_the_webhooks_by_url(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["dev-url"])
    for kind, path in (("MutatingWebhookConfiguration", "/mutate"), ("ValidatingWebhookConfiguration", "/validate")):
        for hook in one(docs, kind)["webhooks"]:
            assert hook["clientConfig"] == {"url": f"https://10.0.0.1:8443{path}", "caBundle": CA_BUNDLE}
    assert "Service" not in kinds(docs)
    assert "Pod" not in kinds(docs), "no in-cluster webhook to test"
    assert all(not d["metadata"]["name"].endswith("-webhook") for d in docs if d["kind"] == "ClusterRole")


# --- schema and guards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        ({"replicaCont": 3}, "replicaCont"),
        ({"webhook": {"tls": {"mod": "cert-manager"}}}, "mod"),
        ({"controller": {"setleSeconds": 1}}, "setleSeconds"),
        (
            {"controller": {"databases": {"servers": {"default": {"host": "pg", "adminSecret": "a", "sslmod": "x"}}}}},
            "sslmod",
        ),
        ({"webhook": {"tls": {"mode": "vault"}}}, "mode"),
        ({"logLevel": "TRACE"}, "logLevel"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"controller": {"databases": {"servers": {"default": {"host": "pg"}}}}}, "adminSecret"),
    ],
    ids=[
        "misspelled-top",
        "misspelled-nested",
        "misspelled-controller",
        "misspelled-server",
        "bad-mode",
        "bad-level",
        "bad-log-format",
        "no-replicas",
        "server-without-admin-secret",
    ],
)
def test_the_schema_refuses(helm: Path, values: dict[str, Any], mentions: str) -> None:
    assert mentions in refusal(helm, values)


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        (
            {"webhook": {"url": "https://h:8443", "caBundle": CA_BUNDLE, "tls": {"mode": "cert-manager"}}},
            "cert-manager",
        ),
        ({"webhook": {"url": "https://h:8443"}}, "webhook.caBundle"),
        ({"webhook": {"caBundle": CA_BUNDLE}}, "only for webhook.url"),
        ({"webhook": {"tls": {"certManager": {"issuerRef": {"name": "ca"}}}}}, "not cert-manager"),
        ({"controller": {"registry": {"url": "r.example", "htpasswdSecret": {"name": ""}}}}, "htpasswdSecret.name"),
        ({"webhook": {"url": "http://h:8443", "caBundle": CA_BUNDLE}}, "https"),
    ],
    ids=[
        "dev-url-with-cert-manager",
        "dev-url-without-ca",
        "ca-without-dev-url",
        "issuer-without-cert-manager",
        "registry-without-htpasswd",
        "dev-url-plain-http",
    ],
)
def test_contradicting_settings_fail_with_what_to_change(helm: Path, values: dict[str, Any], mentions: str) -> None:
    assert mentions in refusal(helm, values)


# --- what the containers are told --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["defaults", "cert-manager"])
def test_the_webhook_command_line_is_accepted_by_the_webhook(helm: Path, mode: str) -> None:
    args = container(one(render(helm, COMBINATIONS[mode]), "Deployment"), "webhook")["args"]
    arguments = webhook_parser()
    settings = settings_from(arguments.parse_args(args[1:]), arguments)
    if mode == "defaults":
        assert settings.self_managed is not None
        assert settings.self_managed.secret_namespace == NAMESPACE
        assert settings.self_managed.configuration_name == RELEASE
        assert settings.self_managed.directory == Path("/var/run/smll-secrets/tls")
        assert f"{RELEASE}-webhook.{NAMESPACE}.svc" in settings.self_managed.names.dns_names
    else:
        assert settings.self_managed is None


def test_the_controller_command_line_is_accepted_by_the_controller(
    helm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(helm, COMBINATIONS["everything"])
    config = tmp_path / "databases.yaml"
    config.write_text(one(docs, "ConfigMap", f"{RELEASE}-databases")["data"]["databases.yaml"])
    args = [
        f"--database-config={config}" if a.startswith("--database-config=") else a.replace("$(POD_NAME)", "pod-0")
        for a in container(one(docs, "Deployment"), "controller")["args"][1:]
    ]
    seen: list[Settings] = []

    async def run(settings: Settings) -> int:
        seen.append(settings)
        return 0

    monkeypatch.setattr(controller_cli, "run", run)
    assert "--log-format=json" in args
    assert controller_cli.main(args) == 0
    [settings] = seen
    assert settings.namespace == NAMESPACE
    assert settings.identity == "pod-0"
    assert settings.settle_seconds == 5
    assert settings.settle_max_seconds == 45
    assert settings.registry_url == "registry.example.com"
    assert settings.htpasswd_secret == f"{NAMESPACE}/registry-htpasswd"
    assert settings.registry_token_port == 8082
    assert settings.registry_token_ca == f"{NAMESPACE}/{RELEASE}-registry-token-ca"
    assert settings.registry_token_seconds == 60
    assert load_servers(config)["default"].admin_secret == "pg-admin"


def test_database_servers_are_a_mounted_config_map(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["databases"])
    assert yaml.safe_load(one(docs, "ConfigMap")["data"]["databases.yaml"]) == {"servers": SERVERS}
    deployment = one(docs, "Deployment")
    assert "--database-config=/etc/smll-secrets/databases.yaml" in container(deployment, "controller")["args"]
    assert "checksum/databases" in deployment["spec"]["template"]["metadata"]["annotations"]


# --- RBAC --------------------------------------------------------------------------------------------------------


def verbs(role: dict[str, Any], group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in role["rules"]
        if group in rule["apiGroups"] and resource in rule["resources"] and not rule.get("resourceNames")
        for verb in rule["verbs"]
    }


def test_the_webhook_may_watch_but_never_get_or_write_secrets(helm: Path) -> None:
    role = one(render(helm), "ClusterRole", f"{RELEASE}-webhook")
    assert verbs(role, "", "secrets") == {"list", "watch"}
    for resource in ("deployments", "statefulsets", "daemonsets", "replicasets"):
        assert verbs(role, "apps", resource) == {"list", "watch"}
    [configurations] = [r for r in role["rules"] if r.get("resourceNames")]
    assert configurations["resourceNames"] == [RELEASE]
    assert configurations["verbs"] == ["get", "update"]


def test_the_controller_writes_secrets_only_when_it_generates_credentials(helm: Path) -> None:
    plain = one(render(helm), "ClusterRole", f"{RELEASE}-controller")
    assert verbs(plain, "", "secrets") == {"get", "list", "watch"}
    assert verbs(plain, "apps", "deployments") == {"list", "watch", "patch"}
    assert verbs(plain, "smll.io", "databases") == set()
    full = one(render(helm, COMBINATIONS["everything"]), "ClusterRole", f"{RELEASE}-controller")
    assert verbs(full, "", "secrets") == {"get", "list", "watch", "create", "update", "patch", "delete"}
    assert verbs(full, "smll.io", "databases") == {"get", "list", "watch", "patch", "update"}
    assert verbs(full, "smll.io", "databases/finalizers") == {"update"}
    assert verbs(full, "", "serviceaccounts") == {"get", "list", "watch", "patch"}


def test_the_secret_writer_role_writes_and_never_reads(helm: Path) -> None:
    docs = render(helm, COMBINATIONS["everything"])
    role = one(docs, "ClusterRole", "smll-secrets-secret-writer")
    assert role["rules"] == [
        {"apiGroups": ["secrets.smll.io"], "resources": ["secretwrites"], "verbs": ["create"]},
        {
            "apiGroups": ["secrets.smll.io"],
            "resources": ["writeonlysecrets"],
            "verbs": ["get", "list", "delete", "update"],
        },
    ]
    assert role["metadata"]["labels"]["smll.io/aggregate-to-secret-writer"] == "true"
    assert role["metadata"]["labels"]["example.com/aggregate-to-ci"] == "true"
    assert role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    viewer = one(docs, "ClusterRole", "smll-secrets-secret-viewer")
    assert viewer["rules"] == [
        {"apiGroups": ["secrets.smll.io"], "resources": ["writeonlysecrets"], "verbs": ["get", "list"]}
    ]
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for found in (role, viewer):
        assert all(rule["apiGroups"] != [""] for rule in found["rules"]), "no verb on core resources, secrets above all"


def test_the_write_only_api_is_registered_and_served_by_the_webhook_pods(helm: Path) -> None:
    docs = render(helm)
    api_service = one(docs, "APIService")
    assert api_service["metadata"]["name"] == "v1alpha1.secrets.smll.io"
    assert api_service["spec"]["group"] == "secrets.smll.io"
    assert "insecureSkipTLSVerify" not in api_service["spec"]
    port = {p["name"]: p for p in one(docs, "Service")["spec"]["ports"]}["api"]
    assert api_service["spec"]["service"]["port"] == port["port"] == 8444
    webhook = next(
        c for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == "webhook"
    )
    assert {"name": "api", "containerPort": 8444, "protocol": "TCP"} in webhook["ports"]
    assert "--api-port=8444" in webhook["args"]
    assert "--api-service=v1alpha1.secrets.smll.io" in webhook["args"]
    assert "APIService" not in kinds(render(helm, {"secretsApi": {"enabled": False}}))


def test_the_write_only_api_writes_the_secret_types_the_chart_lists(helm: Path) -> None:
    def allowed(values: dict[str, Any] | None) -> frozenset[str]:
        args = container(one(render(helm, values), "Deployment"), "webhook")["args"]
        arguments = webhook_parser()
        return settings_from(arguments.parse_args(args[1:]), arguments).api_allowed_types

    assert allowed(None) == frozenset(), "by default: Opaque and the generated Secrets only"
    listed = ["kubernetes.io/basic-auth", "example.com/token"]
    assert allowed({"secretsApi": {"allowedTypes": listed}}) == frozenset(listed)
    assert "allowedTypes" in refusal(helm, {"secretsApi": {"allowedTypes": ["a b"]}})


def test_the_local_webhook_registers_exactly_what_the_chart_renders_in_development_mode(helm: Path) -> None:
    """devenv/webhook.py builds the configurations the local run registers; field by field they are the chart's
    own (development mode, release namespace smll-system), so the two cannot drift apart. Only the chart's labels
    (and cert-manager's annotation) are the chart's alone: the local run has no release to label."""
    base_url = "https://127.0.0.1:8443"
    docs = render(helm, {"webhook": {"url": base_url, "caBundle": CA_BUNDLE}}, namespace=PRODUCT_NAMESPACE)
    local = local_configurations(base_url, base64.b64decode(CA_BUNDLE), PRODUCT_NAMESPACE)
    assert sorted(c["kind"] for c in local) == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    for configuration in local:
        kind = configuration["kind"]
        rendered = one(docs, kind)
        assert configuration.keys() == rendered.keys(), kind
        assert configuration["apiVersion"] == rendered["apiVersion"], kind
        assert configuration["metadata"] == {"name": rendered["metadata"]["name"]}, kind
        assert [h["name"] for h in configuration["webhooks"]] == [h["name"] for h in rendered["webhooks"]], kind
        for hook, chart_hook in zip(configuration["webhooks"], rendered["webhooks"], strict=True):
            assert hook.keys() == chart_hook.keys(), f"{kind} {hook['name']}"
            for field, value in hook.items():
                assert value == chart_hook[field], f"{kind} {hook['name']}: {field}"


# --- the admission port: who may ask for decisions -------------------------------------------------------------------


def test_probes_and_metrics_have_a_port_of_their_own_and_the_https_port_answers_reviews_only(helm: Path) -> None:
    webhook = container(one(render(helm), "Deployment"), "webhook")
    ports = {p["name"]: p["containerPort"] for p in webhook["ports"]}
    assert ports["health"] == 8081
    for probe in ("readinessProbe", "livenessProbe"):
        assert webhook[probe]["httpGet"]["port"] == "health"
        assert webhook[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"
    arguments = webhook_parser()
    settings = settings_from(arguments.parse_args(webhook["args"][1:]), arguments)
    assert (settings.health_port, settings.client_ca_file) == (8081, None)


@pytest.mark.parametrize("mode", ["client-auth", "client-auth-configmap"])
def test_client_auth_mounts_the_apiserver_s_client_ca_and_the_webhook_requires_it(helm: Path, mode: str) -> None:
    docs = render(helm, COMBINATIONS[mode])
    deployment = one(docs, "Deployment")
    webhook = container(deployment, "webhook")
    arguments = webhook_parser()
    settings = settings_from(arguments.parse_args(webhook["args"][1:]), arguments)
    mount = next(m for m in webhook["volumeMounts"] if m["name"] == "client-ca")
    assert settings.client_ca_file == Path(mount["mountPath"]) / "ca.crt"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "client-ca")
    if mode == "client-auth":
        assert settings.allowed_clients == {ADMISSION_CLIENT}
        configmap = one(docs, "ConfigMap", volume["configMap"]["name"])
        assert configmap["data"]["ca.crt"].strip() == CLIENT_CA.strip()
    else:
        assert settings.allowed_clients == frozenset()
        assert volume["configMap"]["name"] == "apiserver-webhook-ca"
        assert "ConfigMap" not in kinds(docs)


def test_the_network_policy_admits_the_apiserver_s_cidrs_only(helm: Path) -> None:
    policy = one(render(helm, COMBINATIONS["client-auth"]), "NetworkPolicy")
    webhook_rule = policy["spec"]["ingress"][0]
    assert webhook_rule["from"] == [{"ipBlock": {"cidr": "10.244.0.1/32"}}]
    assert {p["port"] for p in webhook_rule["ports"]} == {"https", "api"}
    assert len(policy["spec"]["ingress"]) == 1, "no other port is open without metricsFrom"


@pytest.mark.parametrize(
    ("values", "mentions"),
    [
        ({"webhook": {"clientAuth": {"enabled": True}}}, "needs webhook.clientAuth.caBundle"),
        (
            {"webhook": {"clientAuth": {"enabled": True, "caBundle": CLIENT_CA, "caConfigMap": "x"}}},
            "not both",
        ),
        ({"webhook": {"clientAuth": {"caBundle": CLIENT_CA}}}, "only with webhook.clientAuth.enabled"),
        (
            {
                "webhook": {
                    "url": "https://h:8443",
                    "caBundle": CA_BUNDLE,
                    "clientAuth": {"enabled": True, "caBundle": CLIENT_CA},
                }
            },
            "for the in-cluster webhook",
        ),
        ({"webhook": {"healthPort": 8080}}, "webhook.healthPort must differ"),
        ({"webhook": {"clientAuth": {"enabled": True, "caBundle": "not a certificate"}}}, "caBundle"),
    ],
    ids=["no-ca", "two-cas", "ca-while-off", "dev-url", "port-clash", "not-pem"],
)
def test_contradicting_admission_port_settings_fail_with_what_to_change(
    helm: Path, values: dict[str, Any], mentions: str
) -> None:
    assert mentions in refusal(helm, values)


@pytest.mark.parametrize("separate", [False, True], ids=["sidecar", "separate"])
def test_the_registry_token_endpoint_has_a_service_a_ca_and_the_registry_bundle(helm: Path, separate: bool) -> None:
    """The token Service selects the pods that run the controller, on its port; the CA is a kubernetes.io/tls
    Secret the controller names, and the registry's bundle (a ConfigMap) is its certificate alone."""
    values = {"controller": {"separate": separate, "registry": {"url": "registry.example.com"}}}
    docs = render(helm, values)
    name = f"{RELEASE}-registry-token-ca"
    secret, bundle = one(docs, "Secret", name), one(docs, "ConfigMap", name)
    assert secret["type"] == "kubernetes.io/tls"
    cert = base64.b64decode(secret["data"]["tls.crt"]).decode()
    assert bundle["data"]["ca.crt"].strip() == cert.strip()
    assert "PRIVATE KEY" not in bundle["data"]["ca.crt"]
    service = one(docs, "Service", f"{RELEASE}-registry-tokens")
    assert service["spec"]["ports"][0]["targetPort"] == "tokens"
    running = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and any(c["name"] == "controller" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    [deployment] = running
    assert set(service["spec"]["selector"].items()) <= set(deployment["spec"]["template"]["metadata"]["labels"].items())
    controller = container(deployment, "controller")
    assert {"name": "tokens", "containerPort": 8082, "protocol": "TCP"} in controller["ports"]
    assert f"--registry-token-ca={NAMESPACE}/{name}" in controller["args"]
    others = [d for d in docs if d["kind"] == "Deployment" and d is not deployment]
    for other in others:
        assert not set(service["spec"]["selector"].items()) <= set(
            other["spec"]["template"]["metadata"]["labels"].items()
        )


def test_registry_tokens_off_render_no_token_objects_and_a_node_port_when_asked(helm: Path) -> None:
    off = render(helm, {"controller": {"registry": {"url": "r.example", "tokens": {"enabled": False}}}})
    assert not [d for d in off if "registry-token" in d["metadata"]["name"]]
    assert not any("--registry-token" in a for a in container(one(off, "Deployment"), "controller")["args"])
    tokens = {"serviceType": "NodePort", "nodePort": 30082}
    node_port = render(helm, {"controller": {"registry": {"url": "r.example", "tokens": tokens}}})
    service = one(node_port, "Service", f"{RELEASE}-registry-tokens")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"][0]["nodePort"] == 30082
