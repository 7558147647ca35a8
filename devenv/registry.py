"""A real Distribution registry on loopback (Debian's ``docker-registry``): open, with basic auth from an htpasswd
file, or with token auth against the product's token endpoint.

- Basic auth (``auth=True``): in a cluster the registry mounts the controller's htpasswd Secret as a file and the
  kubelet refreshes it. Here ``sync_htpasswd`` plays the kubelet: it reads the Secret through the API and writes the
  file (atomically: write, then rename). Distribution 2.8 checks the file's modification time on every request and
  re-reads it when it changed, so the registry needs no restart; a test syncs before each assertion.
- Token auth (``token=TokenAuth(...)``): the registry reads nothing of the product's but the CA bundle, once at
  start; clients fetch their tokens from the realm. ``RegistryClient`` is such a client: the OCI distribution API
  over HTTP with the bearer-token dance, enough to push a small image and pull it back.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devenv.cluster import ControlPlane
from devenv.process import Component, free_port

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
INSTALL_HINT = "apt-get install -y docker-registry (or run .ci/install-system-packages)"


def registry_binary() -> Path:
    found = shutil.which("docker-registry")
    if found:
        return Path(found)
    if REGISTRY_BINARY.exists():
        return REGISTRY_BINARY
    raise FileNotFoundError(f"docker-registry is not installed: {INSTALL_HINT}")


@dataclass(frozen=True)
class TokenAuth:
    """Distribution's ``auth: token``: where clients get tokens, the names the tokens must carry, the CAs trusted."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass
class LocalRegistry:
    workdir: Path
    port: int = field(default_factory=free_port)
    realm: str = "smll-registry"
    # Where it listens: loopback, or the node bridge's gateway address so that pods (the controller) reach it too.
    address: str = "127.0.0.1"
    # Basic auth from the htpasswd file; an open registry (for the product's own images) has none.
    auth: bool = True
    token: TokenAuth | None = None  # token auth instead of basic auth
    name: str = "docker-registry"
    component: Component | None = None

    @property
    def host(self) -> str:
        """What `docker login` and image references name: host and port."""
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def htpasswd(self) -> Path:
        return self.workdir / "htpasswd"

    def start(self, *, timeout: float = 30, detach: bool = False) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.htpasswd.exists():
            self.write_htpasswd("")
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.workdir / "data")}},
            "http": {"addr": self.host},
            **({"auth": self.auth_config()} if self.auth or self.token else {}),
        }
        path = self.workdir / "config.yml"
        path.write_text(yaml.safe_dump(config))
        self.component = Component(
            self.name, [str(registry_binary()), "serve", str(path)], self.workdir / "registry.log"
        )
        self.component.start(detach=detach)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.component.alive():
                raise RuntimeError(f"docker-registry exited:\n{self.component.log_tail()}")
            if self.status(None, None) == (401 if self.auth or self.token else 200):
                return
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer within {timeout:.0f}s:\n{self.component.log_tail()}")

    def auth_config(self) -> dict[str, object]:
        if self.token is not None:
            token = self.token
            return {
                "token": {
                    "realm": token.realm,
                    "service": token.service,
                    "issuer": token.issuer,
                    "rootcertbundle": str(token.rootcertbundle),
                }
            }
        return {"htpasswd": {"realm": self.realm, "path": str(self.htpasswd)}}

    def client(self, user: str | None, password: str | None) -> RegistryClient:
        return RegistryClient(self.url, user, password)

    def stop(self) -> None:
        if self.component is not None:
            self.component.stop(sig=signal.SIGTERM)

    def write_htpasswd(self, text: str) -> None:
        """Replace the file in one rename, so the registry never reads half of it. The registry notices a change by
        the modification time alone: two writes within one clock tick must still differ in it."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        before = self.htpasswd.stat().st_mtime_ns if self.htpasswd.exists() else 0
        fd, temporary = tempfile.mkstemp(dir=self.workdir, prefix=".htpasswd-")
        with os.fdopen(fd, "w") as file:
            file.write(text)
        after = os.stat(temporary).st_mtime_ns
        if after <= before:
            os.utime(temporary, ns=(before + 1_000_000, before + 1_000_000))
        os.replace(temporary, self.htpasswd)

    def sync_htpasswd(self, plane: ControlPlane, secret: str) -> str:
        """Copy the ``htpasswd`` key of Secret ``namespace/name`` into the registry's file (empty when absent)."""
        namespace, name = secret.split("/", 1)
        found = plane.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
        text = ""
        if found.returncode == 0:
            encoded = (json.loads(found.stdout).get("data") or {}).get("htpasswd", "")
            text = base64.b64decode(encoded).decode()
        if not self.htpasswd.exists() or self.htpasswd.read_text() != text:
            self.write_htpasswd(text)
        return text

    def status(self, user: str | None, password: str | None) -> int:
        """The HTTP status of ``GET /v2/`` with these credentials (none: anonymous)."""
        request = urllib.request.Request(f"{self.url}/v2/")
        if user is not None and password is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0


MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# What a pull accepts: the Docker manifest pushed here, and the OCI one buildah pushes.
ACCEPT = f"{MANIFEST_TYPE}, application/vnd.oci.image.manifest.v1+json"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class RegistryClient:
    """The OCI distribution API as docker or buildah speak it: a 401 with a Bearer challenge sends the client to the
    realm with Basic credentials for the scope it names, and the request is made again with the token. ``tokens``
    keeps the last token per scope, as clients do, so that a test can go on using one after something changed."""

    url: str
    user: str | None
    password: str | None = field(repr=False)
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def _request(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Answer:
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=15) as answer:
                return Answer(int(answer.status), answer.read(), dict(answer.headers))
        except urllib.error.HTTPError as error:
            return Answer(int(error.code), error.read(), dict(error.headers))

    def fetch_token(self, challenge: str) -> tuple[int, str | None]:
        """(status of the realm's answer, the token) for a ``WWW-Authenticate: Bearer …`` challenge."""
        fields = dict(_CHALLENGE.findall(challenge))
        query = {key: fields[key] for key in ("service", "scope") if key in fields}
        if self.user:
            query["account"] = self.user
        headers: dict[str, str] = {}
        if self.user is not None and self.password is not None:
            basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        url = f"{fields['realm']}?{urllib.parse.urlencode(query)}"
        answer = self._request("GET", url, None, headers)
        if answer.status != 200:
            return answer.status, None
        return 200, str(json.loads(answer.body)["token"])

    def call(
        self, method: str, path: str, *, scope: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One API call: with the token kept for this scope, else the one the challenge leads to. A refused token
        is the answer (the test decides what it means); a refused login too."""
        url = path if path.startswith("http") else f"{self.url}{path}"
        sent = dict(headers or {})
        if scope in self.tokens:
            sent["Authorization"] = f"Bearer {self.tokens[scope]}"
            answer = self._request(method, url, body, sent)
            if answer.status != 401:
                return answer
        else:
            answer = self._request(method, url, body, sent)
        challenge = answer.headers.get("Www-Authenticate") or answer.headers.get("WWW-Authenticate") or ""
        if answer.status == 401 and challenge.startswith("Basic ") and self.user is not None:
            basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return self._request(method, url, body, {**sent, "Authorization": f"Basic {basic}"})
        if answer.status != 401 or not challenge.startswith("Bearer "):
            return answer
        status, token = self.fetch_token(challenge)
        if token is None:
            return Answer(status, b"", {})
        self.tokens[scope] = token
        sent["Authorization"] = f"Bearer {token}"
        return self._request(method, url, body, sent)

    def with_token(self, token: str, method: str, path: str) -> int:
        """One call with exactly this token, never another: the status."""
        url = path if path.startswith("http") else f"{self.url}{path}"
        return self._request(method, url, None, {"Authorization": f"Bearer {token}", "Accept": ACCEPT}).status

    def login(self) -> int:
        """What ``docker login`` checks: ``GET /v2/`` with a token from the realm."""
        return self.call("GET", "/v2/", scope="").status

    def push_blob(self, repository: str, data: bytes) -> int:
        scope = f"repository:{repository}:pull,push"
        started = self.call("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, body=b"")
        if started.status != 202:
            return started.status
        location = started.headers.get("Location", "")
        if not location.startswith("http"):
            location = f"{self.url}{location}"
        separator = "&" if "?" in location else "?"
        done = self.call(
            "PUT",
            f"{location}{separator}digest={digest_of(data)}",
            scope=scope,
            body=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return done.status

    def push_image(self, repository: str, tag: str, *, layer: bytes = b"smll-secrets test layer") -> int:
        """A small image (one layer, a config) under ``repository:tag``; the status of the last step (201: pushed)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        for blob in (layer, config):
            status = self.push_blob(repository, blob)
            if status != 201:
                return status
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": digest_of(config)},
                "layers": [{"mediaType": LAYER_TYPE, "size": len(layer), "digest": digest_of(layer)}],
            }
        ).encode()
        answer = self.call(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull,push",
            body=manifest,
            headers={"Content-Type": MANIFEST_TYPE},
        )
        return answer.status

    def manifest(self, repository: str, tag: str) -> Answer:
        return self.call(
            "GET",
            f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        )

    def blob(self, repository: str, digest: str) -> Answer:
        return self.call("GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull")

    def pull(self, repository: str, tag: str) -> int:
        """Manifest, then every blob it names; the first status that is not 200, else 200."""
        manifest = self.manifest(repository, tag)
        if manifest.status != 200:
            return manifest.status
        document = json.loads(manifest.body)
        for descriptor in [document["config"], *document["layers"]]:
            blob = self.blob(repository, descriptor["digest"])
            if blob.status != 200:
                return blob.status
            if digest_of(blob.body) != descriptor["digest"]:
                raise RuntimeError(f"blob {descriptor['digest']} of {repository} came back different")
        return 200


# ---- the registry in the cluster (make demo) ----------------------------------------------------------------

REGISTRY_NODE_PORT = 30500
TOKENS_NODE_PORT = 30501
TOKEN_ISSUER = "smll-secrets"


@dataclass(frozen=True)
class ClusterRegistry:
    """Distribution in a Deployment, as a platform runs it: token auth against the product's token endpoint, the
    CA bundle from the chart's ConfigMap, reached on the node's address through NodePorts — by the kubelet's
    containerd, by pods and by a person on the host alike. ``node_address`` is the node bridge's gateway."""

    node_address: str
    namespace: str
    token_ca_configmap: str
    name: str = "registry"

    @property
    def host(self) -> str:
        """REGISTRY_URL: what docker login and image references take."""
        return f"{self.node_address}:{REGISTRY_NODE_PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def realm(self) -> str:
        return f"http://{self.node_address}:{TOKENS_NODE_PORT}/token"

    def chart_values(self) -> dict[str, object]:
        """What the chart's controller.registry takes for this registry."""
        return {
            "url": self.url,
            "tokens": {
                "enabled": True,
                "serviceType": "NodePort",
                "nodePort": TOKENS_NODE_PORT,
                "issuer": TOKEN_ISSUER,
            },
        }

    def config(self) -> dict[str, object]:
        return {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": "/var/lib/registry"}, "delete": {"enabled": False}},
            "http": {"addr": ":5000"},
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.host,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": "/etc/registry/token/ca.crt",
                }
            },
        }

    def manifests(self, image: str) -> list[dict[str, Any]]:
        labels = {"app.kubernetes.io/name": self.name}
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "labels": labels}
        config: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {**meta, "name": f"{self.name}-config"},
            "data": {"config.yml": yaml.safe_dump(self.config())},
        }
        container = {
            "name": "registry",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "args": ["serve", "/etc/registry/config.yml"],
            "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/registry/config.yml", "subPath": "config.yml"},
                {"name": "token-ca", "mountPath": "/etc/registry/token", "readOnly": True},
                {"name": "data", "mountPath": "/var/lib/registry"},
            ],
        }
        deployment: dict[str, Any] = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "containers": [container],
                        "volumes": [
                            {"name": "config", "configMap": {"name": f"{self.name}-config"}},
                            {"name": "token-ca", "configMap": {"name": self.token_ca_configmap}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        }
        service: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": "NodePort",
                "selector": labels,
                "ports": [{"name": "http", "port": 5000, "targetPort": "http", "nodePort": REGISTRY_NODE_PORT}],
            },
        }
        return [config, deployment, service]

    def deploy(self, plane: ControlPlane, image: str, *, timeout: float = 180) -> None:
        """Apply, wait for the rollout, and wait until the registry answers on the node's address (401: token auth
        is on)."""
        document = {"apiVersion": "v1", "kind": "List", "items": self.manifests(image)}
        plane.kubectl("apply", "-f", "-", input=json.dumps(document))
        plane.kubectl(
            "-n", self.namespace, "rollout", "status", f"deployment/{self.name}", f"--timeout={int(timeout)}s"
        )
        deadline = time.monotonic() + 60
        last = ""
        while time.monotonic() < deadline:  # kube-proxy programs the NodePort a moment after the Service appears
            try:
                status = RegistryClient(self.url, None, None).login()
            except OSError as error:
                last = str(error)
            else:
                if status == 401:
                    return
                last = f"HTTP {status}"
            time.sleep(0.5)
        raise RuntimeError(f"the registry in the cluster does not answer on {self.url}: {last}")


def ensure_token_ca(plane: ControlPlane, secret: str, *, common_name: str = "smll-secrets registry tokens") -> bytes:
    """The token CA Secret (``namespace/name``, kubernetes.io/tls) the chart would keep, made if absent; returns
    its certificate (what the registry's bundle holds)."""
    from rules.certs import make_ca  # the product's own CA maker

    namespace, name = secret.split("/", 1)
    found = plane.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if found.returncode == 0:
        return base64.b64decode(json.loads(found.stdout)["data"]["tls.crt"])
    ca = make_ca(common_name, valid_for=datetime.timedelta(days=3650))
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": base64.b64encode(ca.cert_pem).decode(), "tls.key": base64.b64encode(ca.key_pem).decode()},
    }
    plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    return ca.cert_pem
