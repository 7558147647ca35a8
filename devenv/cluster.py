"""A real control plane on loopback: etcd, kube-apiserver and kube-controller-manager, each its own process.

Everything lives in one throwaway directory: data, PKI, kubeconfig, encryption config and the components' logs.
Each component listens on a free loopback port. Without a node (the default) Pods stay Pending, which most tests
want: they are quick and touch nothing on the host. With ``with_node=True`` the plane also runs kube-scheduler and a
real node (devenv/node.py: containerd, kubelet, kube-proxy); the apiserver then listens on the node bridge's gateway
address instead of loopback, so that pods reach it through the ``kubernetes`` Service.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv.binaries import Binaries, ensure_binaries, ensure_node_binaries
from devenv.node import GATEWAY, Node, clean_host
from devenv.process import Component, free_port, write_kubeconfig
from rules.certs import make_ca, make_leaf

SERVICE_CIDR = "10.0.0.0/24"
FRONT_PROXY_CLIENT = "front-proxy-client"
# The client certificate the apiserver presents to admission webhooks (its admission configuration's kubeConfigFile):
# the product's admission port requires it (the chart's webhook.clientAuth; docs/operations.md).
ADMISSION_CLIENT = "kube-apiserver-admission-client"
ENCRYPTION_KEY_NAME = "key1"
ENCRYPTED_PREFIX = b"k8s:enc:secretbox:v1:" + ENCRYPTION_KEY_NAME.encode() + b":"


class KubectlError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    """A control plane in ``workdir``. ``start()`` brings it up; ``stop()`` ends every process it started."""

    workdir: Path
    binaries: Binaries
    detach: bool = False
    with_node: bool = False
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    controller_manager_port: int = field(default_factory=free_port)
    scheduler_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)
    node: Node | None = None
    # What kubectl printed on stderr: webhook denials and warnings land there, so tests can check them for leaks.
    stderr_seen: list[str] = field(default_factory=list)

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def host(self) -> str:
        """Where the apiserver listens: loopback, or the node bridge's gateway address when there is a node."""
        return GATEWAY if self.with_node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_pem(self) -> bytes:
        return (self.pki / "ca.crt").read_bytes()

    @property
    def admission_client_ca(self) -> Path:
        """The CA of the client certificate the apiserver presents to webhooks: what the product's admission port
        trusts."""
        return self.pki / "admission-client-ca.crt"

    # ---- set-up -------------------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        year = datetime.timedelta(days=365)
        ca = make_ca("smll-secrets local CA", valid_for=year)
        serving = make_leaf(
            ca,
            "kube-apiserver",
            valid_for=year,
            ip_addresses=("127.0.0.1", "10.0.0.1", GATEWAY),
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        )
        admin = make_leaf(ca, "admin", valid_for=year, organization="system:masters", client=True)
        service_accounts = make_ca("service-account-signer", valid_for=year)
        # The front proxy: its own CA (as kubeadm does); the apiserver presents the client certificate to aggregated
        # API servers (the product's write-only Secrets API), which trust the CA from extension-apiserver-
        # authentication in kube-system.
        front_proxy_ca = make_ca("front-proxy-ca", valid_for=year)
        front_proxy = make_leaf(front_proxy_ca, FRONT_PROXY_CLIENT, valid_for=year, client=True)
        for name, pair in (
            ("ca", ca),
            ("apiserver", serving),
            ("admin", admin),
            ("sa", service_accounts),
            ("front-proxy-ca", front_proxy_ca),
            ("front-proxy-client", front_proxy),
        ):
            (self.pki / f"{name}.crt").write_bytes(pair.cert_pem)
            (self.pki / f"{name}.key").write_bytes(pair.key_pem)
            (self.pki / f"{name}.key").chmod(0o600)
        # The service-account signing key: kube-apiserver wants the public half, the controller-manager the private.
        write_kubeconfig(self.kubeconfig, server=self.server, ca_pem=ca.cert_pem, client=admin, user="admin")
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        encryption = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "EncryptionConfiguration",
            "resources": [
                {
                    "resources": ["secrets"],
                    "providers": [
                        {"secretbox": {"keys": [{"name": ENCRYPTION_KEY_NAME, "secret": key}]}},
                        {"identity": {}},
                    ],
                }
            ],
        }
        path = self.pki / "encryption-config.yaml"
        path.write_text(yaml.safe_dump(encryption))
        path.chmod(0o600)

    def _write_admission_client(self) -> None:
        """The apiserver's admission configuration: every webhook it calls is offered a client certificate from a
        CA of its own (not the cluster's: that one would log its holder in to the apiserver). The kubeconfig's user
        ``*`` matches every webhook, by Service (``<svc>.<ns>.svc``) or by url (``127.0.0.1:<port>``); a webhook
        that asks for no certificate is sent none."""
        year = datetime.timedelta(days=365)
        ca = make_ca("admission-client-ca", valid_for=year)
        client = make_leaf(ca, ADMISSION_CLIENT, valid_for=year, client=True)
        self.admission_client_ca.write_bytes(ca.cert_pem)
        (self.pki / "admission-client.crt").write_bytes(client.cert_pem)
        (self.pki / "admission-client.key").write_bytes(client.key_pem)
        (self.pki / "admission-client.key").chmod(0o600)
        user = {
            "client-certificate": str(self.pki / "admission-client.crt"),
            "client-key": str(self.pki / "admission-client.key"),
        }
        kubeconfig = {"apiVersion": "v1", "kind": "Config", "users": [{"name": "*", "user": user}]}
        (self.pki / "admission-kubeconfig.yaml").write_text(yaml.safe_dump(kubeconfig))
        webhooks = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": str(self.pki / "admission-kubeconfig.yaml"),
        }
        admission = {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "AdmissionConfiguration",
            "plugins": [
                {"name": plugin, "configuration": webhooks}
                for plugin in ("ValidatingAdmissionWebhook", "MutatingAdmissionWebhook")
            ],
        }
        (self.pki / "admission-config.yaml").write_text(yaml.safe_dump(admission))

    def _components(self) -> dict[str, Component]:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        pki = self.pki
        etcd = [
            str(self.binaries.etcd),
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]
        apiserver = [
            str(self.binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.crt'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--encryption-provider-config={pki / 'encryption-config.yaml'}",
            f"--admission-control-config-file={pki / 'admission-config.yaml'}",
            # With a node, the `kubernetes` Service points at the gateway address; without, pods never run.
            f"--endpoint-reconciler-type={'lease' if self.with_node else 'none'}",
            "--enable-aggregator-routing=true",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-uid-headers=X-Remote-Uid",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            # `kubectl logs` and `exec` reach the kubelet by its address: its name does not resolve here.
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki / 'admin.crt'}",
            f"--kubelet-client-key={pki / 'admin.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--v=1",
        ]
        controller_manager = [
            str(self.binaries.kube_controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            f"--cert-dir={self.workdir / 'kcm-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=false",
            "--profiling=false",
            "--v=1",
        ]
        scheduler = [
            str(self.binaries.kube_scheduler),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.scheduler_port}",
            "--leader-elect=false",
            "--v=1",
        ]
        components = [("etcd", etcd), ("kube-apiserver", apiserver), ("kube-controller-manager", controller_manager)]
        if self.with_node:
            components.append(("kube-scheduler", scheduler))
        return {name: Component(name, args, logs / f"{name}.log") for name, args in components}

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.kubeconfig.exists():
            self._write_pki()
        if not (self.pki / "admission-config.yaml").exists():  # also a plane made before it had one
            self._write_admission_client()
        self.components = self._components()
        if self.with_node:
            node = Node(
                self.workdir / "node",
                self.binaries,
                ensure_node_binaries(),
                pki=self.pki,
                server=self.server,
                service_cidr=SERVICE_CIDR,
                detach=self.detach,
            )
            # Refused while another node runs: this plane then owns no node, so its stop() leaves that one's host
            # settings (bridge, nftables, cgroups) alone.
            node.prepare_host()
            self.node = node
        try:
            self._start("etcd", self._etcd_ready, timeout=30)
            self.start_apiserver()
            self._start("kube-controller-manager", self._controller_manager_ready, timeout=60)
            if self.node is not None:
                self._start("kube-scheduler", lambda: self._healthy(self.scheduler_port), timeout=60)
                self.node.start(lambda *args: self.kubectl(*args, check=False).stdout)
        except BaseException:
            self.stop()
            raise

    def start_apiserver(self) -> None:
        self._start("kube-apiserver", self._apiserver_ready, timeout=90)

    def stop_apiserver(self, *, sig: int = signal.SIGTERM) -> None:
        self.components["kube-apiserver"].stop(sig=sig)

    def stop(self) -> None:
        # The node's processes first, the control plane next, the host last: the apiserver still reaches its own
        # address (on the node's bridge) while it drains.
        if self.node is not None:
            self.node.stop_processes()
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()
        if self.node is not None:
            clean_host(self.node.workdir)

    def pids(self) -> dict[str, int]:
        pids = {name: c.process.pid for name, c in self.components.items() if c.process is not None}
        return {**pids, **(self.node.pids() if self.node is not None else {})}

    def _start(self, name: str, ready: Callable[[], bool], *, timeout: float) -> None:
        self.components[name].start_and_wait(ready, detach=self.detach, timeout=timeout)

    # ---- readiness ----------------------------------------------------------------------------------------

    def _etcd_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def get(self, path: str) -> tuple[int, bytes]:
        """A GET on the apiserver as admin, for readiness checks and tests."""
        try:
            with urllib.request.urlopen(self.server + path, context=self._admin_ssl_context(), timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self.get("/readyz")
        except OSError:
            return False
        return status == 200

    def _controller_manager_ready(self) -> bool:
        return self._healthy(self.controller_manager_port)

    @staticmethod
    def _healthy(port: int) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            url = f"https://127.0.0.1:{port}/healthz"
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # ---- helpers for tests and the demo ------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.stderr:
            self.stderr_seen.append(result.stderr)
        if check and result.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def etcd_get(self, key: str) -> bytes | None:
        """Read one key straight from etcd through its JSON gateway, bypassing the apiserver."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        request = urllib.request.Request(f"{self.etcd_url}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            kvs = json.load(response).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]) if kvs else None


@contextlib.contextmanager
def running_control_plane(workdir: Path | None = None, *, with_node: bool = False) -> Iterator[ControlPlane]:
    """Build (if needed) and start a control plane; stop it and remove its directory afterwards."""
    binaries = ensure_binaries()
    owned = workdir is None
    directory = Path(tempfile.mkdtemp(prefix="smll-cp-")) if workdir is None else workdir
    plane = ControlPlane(directory, binaries, with_node=with_node)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
