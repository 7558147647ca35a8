"""The README's first command, as a newcomer runs it: it brings everything up, its tour checks pass, and `down`
leaves nothing running and nothing on the host (no bridge, nftables table, cgroup, network namespace or changed
kernel setting). The developer mode (`dev`: host processes, no node) is held to the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devenv.node import leftovers

pytestmark = pytest.mark.e2e

MODES = {
    "up": {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "containerd",
        "kubelet",
        "kube-proxy",
        "postgres",
        "registry-images",
    },
    "dev": {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "webhook",
        "postgres",
        "docker-registry",
        "controller-demo",
    },
}


@pytest.mark.parametrize("mode", list(MODES))
def test_the_demo_runs_its_tour_and_stops_cleanly(tmp_path: Path, mode: str) -> None:
    env = {**os.environ, "SMLL_DEMO_DIR": str(tmp_path / "demo")}
    pids: dict[str, int] = {}
    up = subprocess.run([sys.executable, "-m", "devenv", mode], env=env, capture_output=True, text=True, timeout=900)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "The tour passed" in up.stdout
        assert "make down" in up.stdout
        pids = json.loads((tmp_path / "demo" / "state.json").read_text())["pids"]
        assert set(pids) == MODES[mode]
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "devenv", "down"], env=env, capture_output=True, text=True, timeout=180
        )
    assert down.returncode == 0, down.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), pid
    assert leftovers() == []
