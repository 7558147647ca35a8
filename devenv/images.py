"""Images built here, with no container engine and no Docker Hub: buildah (Debian's package) builds them and pushes
them to a local Distribution registry, from which the node's containerd pulls them as it would from any registry.

- The base: a Debian bookworm root filesystem made by debootstrap with Python 3.11 (the version of the upstream
  ``python:3.11-slim-bookworm`` image that the Dockerfile takes by default), cached as a tar file.
- The product's image: the project's own Dockerfile, built on that base (``--build-arg PYTHON_IMAGE=…``).
- The test app: busybox (Debian's ``busybox-static``) and a shell entrypoint; ``kubectl exec … printenv VAR`` shows
  what a container received, and its log names (never shows) the variables it has.
- The registry (for ``make demo``'s registry in the cluster): Debian's ``docker-registry`` package — Distribution
  2.8, as installed here — on the same Debian base, run as nobody.

Everything lives in buildah's storage under the cache directory, not the host's default one; a second build with
nothing changed finds its layers there and takes seconds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devenv.binaries import CACHE_ROOT

PROJECT = Path(__file__).resolve().parent.parent
IMAGES_CACHE = CACHE_ROOT / "images"
BASE_IMAGE = "localhost/smll-base/python:3.11-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
BUSYBOX = Path("/bin/busybox")
HOST_TRUST = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
TEST_APP_TOOLS = ("sh", "env", "sleep", "cat", "cut", "sort", "echo", "nc", "ls", "id")
INSTALL_HINT = "run .ci/install-system-packages (buildah, debootstrap, busybox-static)"
# What the Dockerfile copies: a change in any of these makes a new product image tag.
BUILD_CONTEXT = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "rules",
    "kubeio",
    "webhook",
    "controller",
)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def buildah(*args: str, input: bytes | None = None, timeout: float = 1200) -> str:
    """Run buildah on the project's own storage (never the host's default one)."""
    if shutil.which("buildah") is None:
        raise RuntimeError(f"buildah is not installed: {INSTALL_HINT}")
    storage = IMAGES_CACHE / "storage"
    command = [
        "buildah",
        f"--root={storage / 'root'}",
        f"--runroot={storage / 'run'}",
        "--storage-driver=overlay",
        *args,
    ]
    result = subprocess.run(command, input=input, capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"buildah {args[0]} failed: {result.stderr.decode(errors='replace')[-3000:]}")
    return result.stdout.decode().strip()


def image_exists(name: str) -> bool:
    try:
        buildah("inspect", "--type=image", "--format={{.FromImageID}}", name)
    except RuntimeError:
        return False
    return True


def context_digest() -> str:
    """A digest of the files the Dockerfile reads, so that an unchanged tree reuses its image tag."""
    digest = hashlib.sha256()
    for entry in BUILD_CONTEXT:
        path = PROJECT / entry
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(PROJECT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def ensure_base_image() -> str:
    """The Python base image, from Debian packages: debootstrap once, then import the tree as an image."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    for tool in ("debootstrap", "buildah"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed: {INSTALL_HINT}")
    IMAGES_CACHE.mkdir(parents=True, exist_ok=True)
    tarball = IMAGES_CACHE / "base-bookworm.tar"
    if not tarball.exists():
        started = time.monotonic()
        _say("Making the base image's root filesystem with debootstrap (first time only, ~2 min)…")
        rootfs = IMAGES_CACHE / "base-rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            check=True,
            timeout=1800,
        )
        for clutter in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            for path in (rootfs / clutter).glob("*"):
                if path.is_file():
                    path.unlink()
                elif path.is_dir() and path.name != "partial":
                    shutil.rmtree(path, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=600)
        partial.rename(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
        _say(f"  base root filesystem in {time.monotonic() - started:.0f}s")
    container = buildah("from", "scratch")
    try:
        buildah("add", container, str(tarball), "/")
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container)
        buildah("config", "--env", "LANG=C.UTF-8", "--cmd", "python3", container)
        buildah("commit", "--rm", container, BASE_IMAGE)
    except BaseException:
        buildah("rm", container)
        raise
    return BASE_IMAGE


@dataclass(frozen=True)
class BuiltImages:
    product: str  # local name in buildah's storage
    test_app: str


def build_product_image() -> str:
    """The product's image from its Dockerfile on the local base; the tag is the build context's digest."""
    name = f"localhost/smll-secrets:dev-{context_digest()}"
    if image_exists(name):
        return name
    base = ensure_base_image()
    started = time.monotonic()
    _say(f"Building {name} from the Dockerfile…")
    # RUN steps reach the package index as the host does: its network (no bridge of buildah's own), and the CA
    # bundle and pip configuration the host trusts (mounted for the build only, never part of the image).
    trusted = [f"--volume={path}:{path}:ro" for path in HOST_TRUST if Path(path).exists()]
    buildah(
        "build",
        "--layers",
        "--network=host",
        "--isolation=chroot",
        *trusted,
        f"--build-arg=PYTHON_IMAGE={base}",
        f"--tag={name}",
        str(PROJECT),
    )
    _say(f"  built in {time.monotonic() - started:.0f}s")
    return name


TEST_APP_IMAGE = "localhost/smll-test-app:3"
# The pod sandbox ("pause") image: it only holds the pod's namespaces, and ends on SIGTERM as the upstream one does.
PAUSE_IMAGE = "localhost/smll-pause:1"
PAUSE_ENTRYPOINT = '["/bin/sh", "-c", "trap \'exit 0\' TERM INT; while :; do sleep 3600 & wait $!; done"]'
TEST_APP_ENTRYPOINT = (
    '["/bin/sh", "-c", "env | cut -d= -f1 | sort; echo test-app ready; '
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done\"]"
)


def build_test_app_image() -> str:
    """A tiny app: busybox, and an entrypoint that lists the names of its environment and then waits."""
    return _busybox_image(TEST_APP_IMAGE, TEST_APP_ENTRYPOINT)


def build_pause_image() -> str:
    return _busybox_image(PAUSE_IMAGE, PAUSE_ENTRYPOINT)


def export_pause_image() -> Path:
    """The sandbox image as an OCI archive, which the node imports into containerd before it runs any pod (it never
    pulls it: there is no upstream registry here)."""
    archive = IMAGES_CACHE / "pause.oci.tar"
    if not archive.exists():
        build_pause_image()
        partial = archive.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        buildah("push", PAUSE_IMAGE, f"oci-archive:{partial}:{PAUSE_IMAGE}")
        partial.rename(archive)
    return archive


def _busybox_image(name: str, entrypoint: str) -> str:
    if image_exists(name):
        return name
    if not BUSYBOX.exists():
        raise RuntimeError(f"{BUSYBOX} is missing: {INSTALL_HINT}")
    rootfs = IMAGES_CACHE / "busybox-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for tool in TEST_APP_TOOLS:
        (rootfs / "bin" / tool).symlink_to("busybox")
    # Debian's busybox has no printenv applet; `kubectl exec … -- printenv VAR` is what users type.
    printenv = rootfs / "bin" / "printenv"
    printenv.write_text('#!/bin/sh\nfor name; do eval "printf \'%s\\n\' "\\${$name}""; done\n')
    printenv.chmod(0o755)
    container = buildah("from", "scratch")
    try:
        buildah("add", container, str(rootfs), "/")
        buildah("config", "--env", "PATH=/bin", "--entrypoint", entrypoint, container)
        buildah("commit", "--rm", container, name)
    except BaseException:
        buildah("rm", container)
        raise
    return name


REGISTRY_PACKAGE = "docker-registry"
REGISTRY_PACKAGE_FILES = ("/usr/bin/docker-registry",)


def registry_package_version() -> str:
    """The installed version of Debian's package, e.g. ``2.8.2+ds1-1``; an image tag cannot hold ``+``."""
    result = subprocess.run(
        ["dpkg-query", "--showformat=${Version}", "--show", REGISTRY_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"Debian's {REGISTRY_PACKAGE} package is not installed: {INSTALL_HINT}")
    return result.stdout.strip()


def build_registry_image() -> str:
    """Distribution from Debian's package on the Debian base (its binary needs the base's glibc), as nobody."""
    tag = registry_package_version().replace("+", "_").replace("~", "_")
    name = f"localhost/smll-registry:{tag}"
    if image_exists(name):
        return name
    base = ensure_base_image()
    container = buildah("from", base)
    try:
        for path in REGISTRY_PACKAGE_FILES:
            buildah("copy", "--chmod=0755", container, path, path)
        buildah(
            "config",
            "--entrypoint",
            '["/usr/bin/docker-registry"]',
            "--cmd",
            "serve /etc/docker/registry/config.yml",
            "--user",
            "65534:65534",
            "--port",
            "5000",
            container,
        )
        buildah("commit", "--rm", container, name)
    except BaseException:
        buildah("rm", container)
        raise
    return name


def build_images() -> BuiltImages:
    return BuiltImages(product=build_product_image(), test_app=build_test_app_image())


def push(local: str, registry_host: str, *, creds: str | None = None, path: str | None = None) -> str:
    """Push a local image to a plain-HTTP registry on this machine (as ``path``, ``repository:tag``: by default its
    local name); return its reference there. buildah speaks basic and token auth alike."""
    path = path or local.removeprefix("localhost/")
    reference = f"{registry_host}/{path}"
    buildah(
        "push",
        "--tls-verify=false",
        *([f"--creds={creds}"] if creds else []),
        local,
        f"docker://{reference}",
    )
    return reference


if __name__ == "__main__":
    print(build_images())
