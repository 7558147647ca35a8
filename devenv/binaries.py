"""Build etcd, the Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
kube-proxy) and kubectl from the Go modules pinned in ``gomod/kube``, containerd from ``gomod/node``, and helm from
its own module in ``gomod/helm`` (each only for callers that ask for it).

The binaries are cached under ``~/.cache/smll-secrets/bin/<version>-<digest>`` where the digest covers go.mod and
go.sum, so a second run finds them at once and a change of pins builds anew.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GOMOD_DIR = Path(__file__).parent / "gomod" / "kube"
HELM_GOMOD_DIR = Path(__file__).parent / "gomod" / "helm"
NODE_GOMOD_DIR = Path(__file__).parent / "gomod" / "node"
CACHE_ROOT = Path(os.environ.get("SMLL_CACHE_DIR", Path.home() / ".cache" / "smll-secrets"))

# name of the binary -> Go package that builds it
KUBE_TOOLS = {
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
    "kubectl": "k8s.io/kubernetes/cmd/kubectl",
    # the node: the kubelet, kube-proxy (Services), kube-scheduler (Deployments' pods get a node)
    "kubelet": "k8s.io/kubernetes/cmd/kubelet",
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
}
ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"
HELM_MODULE = "helm.sh/helm/v4"
CONTAINERD_MODULE = "github.com/containerd/containerd/v2"
# containerd without the snapshotters this machine has no use for (and whose C libraries it lacks)
CONTAINERD_TAGS = "no_btrfs no_devmapper no_zfs"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    kubelet: Path
    kube_proxy: Path
    kube_scheduler: Path
    kube_version: str


def _required_version(gomod_dir: Path, module: str) -> str:
    pattern = rf"^\s*(?:require )?{re.escape(module)} (v\S+)"
    match = re.search(pattern, (gomod_dir / "go.mod").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"{gomod_dir / 'go.mod'} does not require {module}")
    return match.group(1)


def kube_version() -> str:
    return _required_version(GOMOD_DIR, "k8s.io/kubernetes")


def helm_version() -> str:
    return _required_version(HELM_GOMOD_DIR, HELM_MODULE)


def _cache_dir(gomod_dir: Path, version: str, prefix: str = "") -> Path:
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        digest.update((gomod_dir / name).read_bytes())
    return CACHE_ROOT / "bin" / f"{prefix}{version}-{digest.hexdigest()[:12]}"


def _bin_dir() -> Path:
    return _cache_dir(GOMOD_DIR, kube_version())


def _binaries(bin_dir: Path) -> Binaries:
    return Binaries(
        etcd=bin_dir / "etcd",
        kube_apiserver=bin_dir / "kube-apiserver",
        kube_controller_manager=bin_dir / "kube-controller-manager",
        kubectl=bin_dir / "kubectl",
        kubelet=bin_dir / "kubelet",
        kube_proxy=bin_dir / "kube-proxy",
        kube_scheduler=bin_dir / "kube-scheduler",
        kube_version=kube_version(),
    )


def _go_build(
    out: Path,
    packages: list[str],
    ldflags: str,
    what: str,
    *,
    gomod_dir: Path = GOMOD_DIR,
    tags: str = "",
    cgo: bool = True,
) -> None:
    """Run ``go build -v`` and report progress: -v names each package as it is compiled."""
    cmd = ["go", "build", "-v", "-trimpath", f"-ldflags={ldflags}", *([f"-tags={tags}"] if tags else [])]
    cmd += ["-o", str(out), *packages]
    env = {**os.environ, "CGO_ENABLED": "1" if cgo else "0"}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=gomod_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    last_report = started
    for count, line in enumerate(proc.stdout, start=1):
        tail = [*tail, line.rstrip()][-30:]
        now = time.monotonic()
        if now - last_report >= 15:
            print(f"  building {what}: {count} packages compiled, {now - started:.0f}s", file=sys.stderr, flush=True)
            last_report = now
    if proc.wait() != 0:
        raise RuntimeError(f"go build of {what} failed:\n" + "\n".join(tail))
    print(f"  built {what} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)


def _build_once(bin_dir: Path, what: str, build: Callable[[Path], None]) -> None:
    """Build into ``bin_dir`` unless it is complete. Test sessions running side by side may ask at once: a lock
    file lets one build while the others wait, and a staging directory means a half-built one is never used."""
    if (bin_dir / ".complete").exists():
        return
    if shutil.which("go") is None:
        raise RuntimeError(f"Go is needed to build {what}: install Go 1.26 or newer")
    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(bin_dir.with_name(bin_dir.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (bin_dir / ".complete").exists():
            return
        print(f"Building {what} from Go modules into {bin_dir} (first time only)…", file=sys.stderr, flush=True)
        staging = bin_dir.with_name(bin_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        build(staging)
        (staging / ".complete").write_text(what)
        shutil.rmtree(bin_dir, ignore_errors=True)
        staging.rename(bin_dir)


def ensure_binaries() -> Binaries:
    """Return the cached control-plane binaries, building them first when they are missing (~13 min cold)."""
    bin_dir = _bin_dir()
    version = kube_version()

    def build(staging: Path) -> None:
        version_flags = " ".join(
            f"-X {pkg}.{var}={value}"
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for var, value in (("gitVersion", version), ("gitMajor", "1"), ("gitMinor", version.split(".")[1]))
        )
        _go_build(staging / "etcd", [ETCD_PACKAGE], "-s -w", "etcd")
        _go_build(staging, list(KUBE_TOOLS.values()), f"-s -w {version_flags}", ", ".join(KUBE_TOOLS))

    _build_once(bin_dir, f"the control plane {version}", build)
    return _binaries(bin_dir)


def ensure_helm() -> Path:
    """Return the cached helm binary, building it first when it is missing (~12 min cold)."""
    version = helm_version()
    bin_dir = _cache_dir(HELM_GOMOD_DIR, version, prefix="helm-")

    def build(staging: Path) -> None:
        ldflags = f"-s -w -X {HELM_MODULE}/internal/version.version={version}"
        _go_build(staging / "helm", [f"{HELM_MODULE}/cmd/helm"], ldflags, "helm", gomod_dir=HELM_GOMOD_DIR)

    _build_once(bin_dir, f"helm {version}", build)
    return bin_dir / "helm"


@dataclass(frozen=True)
class NodeBinaries:
    """containerd and its runc shim (built here), and ctr to import and list images."""

    containerd: Path
    shim: Path
    ctr: Path

    @property
    def bin_dir(self) -> Path:
        return self.containerd.parent


def containerd_version() -> str:
    return _required_version(NODE_GOMOD_DIR, CONTAINERD_MODULE)


def ensure_node_binaries() -> NodeBinaries:
    """Return the cached containerd binaries, building them first when they are missing (~1 min cold)."""
    version = containerd_version()
    bin_dir = _cache_dir(NODE_GOMOD_DIR, version, prefix="containerd-")
    commands = ("containerd", "containerd-shim-runc-v2", "ctr")

    def build(staging: Path) -> None:
        ldflags = f"-s -w -X {CONTAINERD_MODULE}/version.Version={version}"
        packages = [f"{CONTAINERD_MODULE}/cmd/{command}" for command in commands]
        _go_build(staging, packages, ldflags, "containerd", gomod_dir=NODE_GOMOD_DIR, tags=CONTAINERD_TAGS, cgo=False)

    _build_once(bin_dir, f"containerd {version}", build)
    return NodeBinaries(*(bin_dir / command for command in commands))


if __name__ == "__main__":
    print(ensure_binaries())
    if "--helm" in sys.argv[1:]:
        print(ensure_helm())
    if "--node" in sys.argv[1:]:
        print(ensure_node_binaries())
