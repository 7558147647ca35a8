"""A real Distribution registry on loopback (Debian's ``docker-registry``), with basic auth from an htpasswd file.

In a cluster the registry mounts the controller's htpasswd Secret as a file and the kubelet refreshes it. Here
``sync_htpasswd`` plays the kubelet: it reads the Secret through the API and writes the file (atomically: write,
then rename). Distribution 2.8 checks the file's modification time on every request and re-reads it when it
changed, so the registry needs no restart; a test syncs before each assertion.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class LocalRegistry:
    workdir: Path
    port: int = field(default_factory=free_port)
    realm: str = "smll-registry"
    # Where it listens: loopback, or the node bridge's gateway address so that pods (the controller) reach it too.
    address: str = "127.0.0.1"
    # Basic auth from the htpasswd file; an open registry (for the product's own images) has none.
    auth: bool = True
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
            **({"auth": {"htpasswd": {"realm": self.realm, "path": str(self.htpasswd)}}} if self.auth else {}),
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
            if self.status(None, None) == (401 if self.auth else 200):
                return
            time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not answer within {timeout:.0f}s:\n{self.component.log_tail()}")

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
