"""A real node for the local cluster: containerd (with runc and the CNI bridge plugin), the kubelet and kube-proxy.

One node per machine: its bridge, its nftables table, its ``kubepods`` cgroups and the kernel settings the kubelet
and the bridge plugin change are the host's. Everything it creates is listed here, so that ``stop()`` (and
``clean_host()``, which also runs before a start, after a crash) removes it and puts back every setting it found:

- the bridge ``smll0`` with the gateway address; pods get addresses from ``POD_CIDR`` on it, in network namespaces
  that containerd mounts under the node's own state directory;
- an nftables table ``smll-node`` that drops whatever a pod would send beyond the bridge (the network rules of this
  machine: pods reach only the host's bridge address and each other); kube-proxy's own table ``kube-proxy``;
- cgroups ``/kubepods`` in every cgroup v1 hierarchy;
- the sysctls the kubelet sets (panic, overcommit, keys) and ``net.ipv4.ip_forward`` (set by the bridge plugin);
- the kubelet's symlinks in ``/var/log/containers`` and the host directories that containerd, the CNI library and the
  kubelet create when they are missing.
Its original values live in ``HOST_STATE`` until they are put back, so a crash never loses them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv.binaries import Binaries, NodeBinaries
from devenv.images import PAUSE_IMAGE, export_pause_image
from devenv.process import Component, free_port, write_kubeconfig
from rules.certs import KeyPair, make_leaf

NODE_NAME = "smll-node"
BRIDGE = "smll0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
NFT_TABLE = "smll-node"
KUBE_PROXY_TABLE = "kube-proxy"
RUNC = Path("/usr/sbin/runc")
CNI_BIN_DIR = Path("/usr/lib/cni")
INSTALL_HINT = "run .ci/install-system-packages (runc, containernetworking-plugins, iptables, nftables)"

HOST_STATE_DIR = Path("/run/smll-secrets")
HOST_STATE = HOST_STATE_DIR / "node.json"
# Where sockets live, a unix socket's path being short (104 bytes; 42 for containerd's shims): the kubelet's root
# (its pod-resources socket, and the pods' volumes) and containerd's sockets, not under a deep work directory.
SHIM_SOCKETS = HOST_STATE_DIR / "shims"
KUBELET_ROOT = HOST_STATE_DIR / "kubelet"
# Kernel settings the kubelet (setupKernelTunables) and the bridge plugin (isGateway) change.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
)
# Host directories that the kubelet, containerd's shims and the CNI library create when they are missing.
HOST_DIRS = (
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
    Path("/var/lib/kubelet"),
    Path("/etc/cni"),
    Path("/opt/cni"),
    Path("/opt/containerd"),
    Path("/run/netns"),
    Path("/var/run/netns"),
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"

NODE_COMPONENTS = ("kube-proxy", "kubelet", "containerd")  # in the order they stop
KubectlFn = Callable[..., str]  # runs kubectl with these arguments, returns stdout ("" on failure)
ReadyFn = Callable[[], bool]


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def missing_tools() -> list[str]:
    wanted = {"runc": RUNC, "bridge plugin": CNI_BIN_DIR / "bridge", "host-local plugin": CNI_BIN_DIR / "host-local"}
    missing = [name for name, path in wanted.items() if not path.exists()]
    missing += [tool for tool in ("ip", "nft", "iptables") if shutil.which(tool) is None]
    return missing


# ---- the host: what the node changes, recorded first and put back after -------------------------------------


def _record_host_state(owner: Path) -> None:
    """Write down the host's settings before the node changes them; keep an older record (a crashed run's)."""
    HOST_STATE_DIR.mkdir(parents=True, exist_ok=True)
    if HOST_STATE.exists():
        state = json.loads(HOST_STATE.read_text())
    else:
        state = {
            "sysctls": {name: _sysctl_path(name).read_text().strip() for name in SYSCTLS},
            "existing_dirs": [str(path) for path in HOST_DIRS if path.exists()],
        }
    state["owner"] = str(owner)
    HOST_STATE.write_text(json.dumps(state))


def node_owner() -> Path | None:
    """The work directory of the node that runs (or ran and was not cleaned up) on this machine."""
    if not HOST_STATE.exists():
        return None
    return Path(json.loads(HOST_STATE.read_text())["owner"])


def _kill_cgroup_tree() -> None:
    """SIGKILL every process left in the pods' cgroups (containers whose shim is gone), then remove the cgroups,
    deepest first."""
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / KUBEPODS
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / KUBEPODS
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        with contextlib.suppress(FileNotFoundError):
            top.rmdir()


def _unmount_under(root: Path) -> None:
    """Unmount everything mounted at or below ``root`` (container root filesystems, shm, network namespaces, and the
    kubelet's root, which it bind-mounts onto itself)."""
    for _ in range(5):
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4] == str(root) or line.split()[4].startswith(str(root) + "/")
        ]
        if not mounts:
            return
        for mount in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", mount, check=False)


def _kill_processes_using(marker: str) -> None:
    """SIGKILL processes whose command line names ``marker`` (containerd's shims, which outlive containerd)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)


def _processes_named(names: tuple[str, ...]) -> list[str]:
    """Running (not zombie) processes whose program is one of ``names``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            status = (proc / "status").read_text()
            program = status.split("\n", 1)[0].removeprefix("Name:").strip()
            if program.startswith(names) and "\nState:\tZ" not in status:
                found.append(f"{proc.name} {program}")
    return found


def clean_host(workdir: Path | None = None) -> list[str]:
    """Remove everything a node made on this host and put its settings back. Safe to run twice, and after a
    crash. Returns what it removed, for the record."""
    removed: list[str] = []
    state = json.loads(HOST_STATE.read_text()) if HOST_STATE.exists() else None
    workdir = workdir or (Path(state["owner"]) if state else None)
    # containerd's shims outlive it; they name its socket on their command line.
    _kill_processes_using(f"-address\0{HOST_STATE_DIR / 'containerd.sock'}")
    if (CGROUP_ROOT / "memory" / KUBEPODS).exists() or (CGROUP_ROOT / "pids" / KUBEPODS).exists():
        _kill_cgroup_tree()
        removed.append("kubepods cgroups")
    if workdir is not None and workdir.exists():
        _unmount_under(workdir)
    if KUBELET_ROOT.exists():
        _unmount_under(KUBELET_ROOT)
        shutil.rmtree(KUBELET_ROOT, ignore_errors=True)
    for family in ("ip", "ip6"):
        for table in (NFT_TABLE, KUBE_PROXY_TABLE):
            if _run("nft", "list", "table", family, table, check=False).returncode == 0:
                _run("nft", "delete", "table", family, table)
                removed.append(f"nftables table {family} {table}")
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        _run("ip", "link", "delete", BRIDGE)
        removed.append(f"bridge {BRIDGE}")
    logs = Path("/var/log/containers")
    if logs.is_dir() and workdir is not None:
        for link in logs.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(workdir)):
                link.unlink()
    if state is not None:
        for name, value in state["sysctls"].items():
            path = _sysctl_path(name)
            if path.read_text().strip() != value:
                path.write_text(value)
                removed.append(f"sysctl {name} put back to {value}")
        existing = set(state["existing_dirs"])
        for path in HOST_DIRS:
            if str(path) not in existing and path.exists() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"directory {path}")
        HOST_STATE.unlink()
    shutil.rmtree(SHIM_SOCKETS, ignore_errors=True)
    for socket in HOST_STATE_DIR.glob("containerd.sock*"):
        socket.unlink()
    with contextlib.suppress(OSError):
        HOST_STATE_DIR.rmdir()
    return removed


def leftovers() -> list[str]:
    """What a node left on this host: empty after ``clean_host``. Tests assert on it."""
    found: list[str] = []
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        found.append(f"bridge {BRIDGE}")
    for family in ("ip", "ip6"):
        for table in (NFT_TABLE, KUBE_PROXY_TABLE):
            if _run("nft", "list", "table", family, table, check=False).returncode == 0:
                found.append(f"nftables table {family} {table}")
    found += [f"cgroup {h / KUBEPODS}" for h in CGROUP_ROOT.iterdir() if (h / KUBEPODS).exists()]
    iptables = _run("iptables-save", check=False).stdout
    found += [f"iptables: {line}" for line in iptables.splitlines() if "KUBE-" in line or "CNI-" in line]
    netns = _run("ip", "netns", "list", check=False).stdout.strip()
    if netns:
        found.append(f"network namespaces: {netns}")
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    found += [f"mount {m}" for m in mounts if str(HOST_STATE_DIR) in m or "io.containerd" in m or "/kubelet/pods/" in m]
    found += [f"process {p}" for p in _processes_named(("containerd-shim", "kubelet", "kube-proxy"))]
    if HOST_STATE.exists():
        found.append(f"{HOST_STATE} (settings not yet put back)")
    return found


# ---- the node ---------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """containerd, kubelet and kube-proxy for the control plane whose PKI is in ``pki`` and whose API is at
    ``server`` (the apiserver listens on the bridge's gateway address, so pods reach it)."""

    workdir: Path
    binaries: Binaries
    node_binaries: NodeBinaries
    pki: Path
    server: str
    service_cidr: str
    detach: bool = False
    kubelet_port: int = field(default_factory=free_port)
    kubelet_healthz_port: int = field(default_factory=free_port)
    proxy_metrics_port: int = field(default_factory=free_port)
    proxy_healthz_port: int = field(default_factory=free_port)
    components: dict[str, Component] = field(default_factory=dict)

    @property
    def containerd_dir(self) -> Path:
        return self.workdir / "containerd"

    @property
    def socket(self) -> Path:
        """A short path: unix sockets may not be longer than 104 bytes, and work directories can be deep."""
        return HOST_STATE_DIR / "containerd.sock"

    @property
    def registry_hosts(self) -> Path:
        """containerd's per-registry host configuration (``<host:port>/hosts.toml``), read at every pull."""
        return self.containerd_dir / "certs.d"

    def trust_plain_http_registry(self, host: str) -> None:
        """Let the node pull from a local registry that serves plain HTTP (no TLS on loopback and the bridge)."""
        directory = self.registry_hosts / host
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    # ---- configuration ------------------------------------------------------------------------------------

    def _client_kubeconfig(self, name: str, common_name: str, organization: str | None) -> Path:
        ca = KeyPair((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())
        pair = make_leaf(
            ca, common_name, valid_for=datetime.timedelta(days=365), organization=organization, client=True
        )
        path = self.workdir / f"{name}.kubeconfig"
        write_kubeconfig(path, server=self.server, ca_pem=ca.cert_pem, client=pair, user=common_name)
        return path

    def _write_config(self) -> dict[str, list[str]]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ca = KeyPair((self.pki / "ca.crt").read_bytes(), (self.pki / "ca.key").read_bytes())
        serving = make_leaf(ca, NODE_NAME, valid_for=datetime.timedelta(days=365), ip_addresses=(GATEWAY, "127.0.0.1"))
        (self.workdir / "kubelet.crt").write_bytes(serving.cert_pem)
        (self.workdir / "kubelet.key").write_bytes(serving.key_pem)
        (self.workdir / "kubelet.key").chmod(0o600)
        kubelet_kubeconfig = self._client_kubeconfig("kubelet", f"system:node:{NODE_NAME}", "system:nodes")
        proxy_kubeconfig = self._client_kubeconfig("kube-proxy", "system:kube-proxy", None)

        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "smll",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(cni / "ipam"),
                        "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                        # No default route: a pod reaches its bridge (the host's gateway address, other pods) and
                        # the Service range, nothing else.
                        "routes": [{"dst": self.service_cidr}],
                    },
                }
            ],
        }
        (cni / "net.d" / "10-smll.conflist").write_text(json.dumps(conflist, indent=2))

        containerd = self.containerd_dir
        containerd.mkdir(parents=True, exist_ok=True)
        self.registry_hosts.mkdir(parents=True, exist_ok=True)
        state = containerd / "state"
        disabled = [
            "io.containerd.internal.v1.opt",
            "io.containerd.nri.v1.nri",
            "io.containerd.image-verifier.v1.bindir",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ]
        (containerd / "config.toml").write_text(
            f"""version = 4
root = '{containerd / "root"}'
state = '{state}'
imports = []
disabled_plugins = {json.dumps(disabled)}

[plugins.'io.containerd.server.v1.grpc']
  address = '{self.socket}'

[plugins.'io.containerd.server.v1.ttrpc']
  address = '{HOST_STATE_DIR / "containerd.sock.ttrpc"}'

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '{SHIM_SOCKETS}'

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # This machine's root may not lower its oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{RUNC}'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN_DIR}']
    conf_dir = '{cni / "net.d"}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{PAUSE_IMAGE}'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '{self.registry_hosts}'

[plugins.'io.containerd.transfer.v1.local']
  config_path = '{self.registry_hosts}'

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""
        )

        resolv = self.workdir / "resolv.conf"
        # Pods get no name server: nothing they do may leave the machine.
        resolv.write_text("# smll-secrets local node: no DNS\n")
        kubelet_config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": "/",
            "enforceNodeAllocatable": [],
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": GATEWAY,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": self.kubelet_healthz_port,
            "tlsCertFile": str(self.workdir / "kubelet.crt"),
            "tlsPrivateKeyFile": str(self.workdir / "kubelet.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(self.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.workdir / "pod-logs"),
            "resolvConf": str(resolv),
            "failSwapOn": False,
            # The kubelet leaves the host's iptables alone: kube-proxy (nftables) serves Services.
            "makeIPTablesUtilChains": False,
            "localStorageCapacityIsolation": False,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "registerNode": True,
            "maxPods": 64,
            "shutdownGracePeriod": "0s",
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config))
        proxy_config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(proxy_kubeconfig)},
            "hostnameOverride": NODE_NAME,
            "bindAddress": "127.0.0.1",
            "clusterCIDR": POD_CIDR,
            "healthzBindAddress": f"127.0.0.1:{self.proxy_healthz_port}",
            "metricsBindAddress": f"127.0.0.1:{self.proxy_metrics_port}",
            "nodePortAddresses": [f"{GATEWAY}/32"],
            # Zero leaves the host's conntrack settings as they are.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (self.workdir / "kube-proxy.yaml").write_text(yaml.safe_dump(proxy_config))

        return {
            "containerd": [str(self.node_binaries.containerd), f"--config={containerd / 'config.toml'}"],
            "kubelet": [
                str(self.binaries.kubelet),
                f"--config={self.workdir / 'kubelet.yaml'}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={KUBELET_ROOT}",
                f"--cert-dir={self.workdir / 'kubelet-certs'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--v=1",
            ],
            "kube-proxy": [str(self.binaries.kube_proxy), f"--config={self.workdir / 'kube-proxy.yaml'}", "--v=1"],
        }

    # ---- the host network -------------------------------------------------------------------------------

    def _bridge_and_guard(self) -> None:
        """The bridge with the gateway address (the apiserver listens there), and a guard: a pod's packet is
        forwarded only back onto the bridge, never to another interface."""
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        prefix = POD_CIDR.split("/")[1]
        _run("ip", "addr", "add", f"{GATEWAY}/{prefix}", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        rules = f"""table ip {NFT_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{BRIDGE}" oifname != "{BRIDGE}" drop
    ip saddr {POD_CIDR} oifname != "{BRIDGE}" drop
  }}
}}
"""
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True, capture_output=True, timeout=30)

    def prepare_host(self) -> None:
        """Before the apiserver starts: clean what an earlier run left, record the settings, make the bridge."""
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"the node needs {', '.join(missing)}: {INSTALL_HINT}")
        owner = node_owner()
        if owner is not None and owner != self.workdir and self._owner_running(owner):
            raise RuntimeError(
                f"a local node already runs on this machine (its files: {owner}); one node per machine: "
                "stop it first (`make down` stops the demo's)"
            )
        clean_host(owner)
        _record_host_state(self.workdir)
        self._bridge_and_guard()

    @staticmethod
    def _owner_running(owner: Path) -> bool:
        pid_file = owner / "kubelet.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (ProcessLookupError, ValueError):
            return False
        return True

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self, kubectl: KubectlFn, *, timeout: float = 120) -> None:
        """Start containerd, the kubelet and kube-proxy; return once the node is Ready."""
        args = self._write_config()
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env_path = f"{self.node_binaries.bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.components = {name: Component(name, argv, logs / f"{name}.log") for name, argv in args.items()}
        try:
            self._start("containerd", self._cri_serving, env_path, timeout=30)
            self._import_image(export_pause_image())
            self._start("kubelet", lambda: True, env_path, timeout=5)
            process = self.components["kubelet"].process
            assert process is not None
            (self.workdir / "kubelet.pid").write_text(str(process.pid))
            self._start("kube-proxy", lambda: True, env_path, timeout=5)
            self.wait_ready(kubectl, timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, ready: ReadyFn, env_path: str, *, timeout: float) -> None:
        env = {**os.environ, "PATH": env_path}
        self.components[name].start_and_wait(ready, detach=self.detach, timeout=timeout, env=env)

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.node_binaries.ctr), f"--address={self.socket}", "--namespace=k8s.io", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    def _cri_serving(self) -> bool:
        """containerd's socket answers and its CRI plugin is loaded (the kubelet gives up at once otherwise)."""
        if not self.socket.exists():
            return False
        plugins = self._ctr("plugins", "ls").stdout.splitlines()
        return any(line.split()[:2] == ["io.containerd.grpc.v1", "cri"] and "ok" in line.split() for line in plugins)

    def _import_image(self, archive: Path) -> None:
        result = self._ctr("images", "import", str(archive))
        if result.returncode != 0:
            raise RuntimeError(f"ctr could not import {archive}: {result.stderr.strip()}")

    def wait_ready(self, kubectl: KubectlFn, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, component in self.components.items():
                if not component.alive():
                    raise RuntimeError(f"{name} exited; last lines of {component.log}:\n{component.log_tail()}")
            ready = kubectl("get", "node", NODE_NAME, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
            if ready.strip() == "True":
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"the node was not Ready after {timeout:.0f}s; kubelet:\n{self.components['kubelet'].log_tail(40)}"
        )

    def pids(self) -> dict[str, int]:
        return {name: c.process.pid for name, c in self.components.items() if c.process is not None}

    def stop_processes(self) -> None:
        """Stop kube-proxy, the kubelet and containerd (the containers go on until ``clean_host``)."""
        for name in NODE_COMPONENTS:
            if name in self.components:
                self.components[name].stop(timeout=10)

    def stop(self) -> None:
        """Stop the node's processes, then remove every trace on the host."""
        self.stop_processes()
        clean_host(self.workdir)
