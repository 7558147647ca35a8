"""``python -m devenv up`` runs the product locally on the embedded control plane; ``down`` stops it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys

from devenv.binaries import CACHE_ROOT, ensure_binaries
from devenv.cluster import ControlPlane

DEMO_DIR = CACHE_ROOT / "demo"
STATE = DEMO_DIR / "state.json"


def _say(text: str) -> None:
    print(text, flush=True)


def down() -> None:
    if not STATE.exists():
        _say("nothing is running")
        return
    pids: dict[str, int] = json.loads(STATE.read_text())["pids"]
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
            _say(f"stopped {name} (pid {pid})")
        except ProcessLookupError:
            pass
    STATE.unlink()


def up() -> None:
    if STATE.exists():
        down()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    binaries = ensure_binaries()
    plane = ControlPlane(DEMO_DIR / "cluster", binaries, detach=True)
    _say(f"Starting the control plane ({binaries.kube_version}): etcd, kube-apiserver, kube-controller-manager…")
    plane.start()
    STATE.write_text(json.dumps({"pids": plane.pids(), "kubeconfig": str(plane.kubeconfig)}))
    _say(f"\nkubectl get namespaces  (kubectl {binaries.kubectl})")
    _say(plane.kubectl("get", "namespaces").stdout)
    _say(
        "The control plane is running. Use it with:\n"
        f"  export KUBECONFIG={plane.kubeconfig}\n"
        f"  export PATH={binaries.kubectl.parent}:$PATH\n"
        "  kubectl get namespaces\n"
        "Stop everything with: make down"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv")
    parser.add_argument("command", choices=["up", "down", "build"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "down":
            down()
        else:
            _say(str(ensure_binaries()))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
