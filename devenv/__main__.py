"""``python -m devenv up`` runs the product locally on the embedded control plane and shows it working;
``python -m devenv down`` stops everything it started."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from devenv.binaries import CACHE_ROOT, ensure_binaries
from devenv.cluster import ControlPlane
from devenv.controller import LocalController, install_database_support
from devenv.postgres import LocalPostgres
from devenv.tour import tour
from devenv.webhook import LocalWebhook

# SMLL_DEMO_DIR lets a test run the demo without touching a developer's own.
DEMO_DIR = Path(os.environ.get("SMLL_DEMO_DIR", CACHE_ROOT / "demo"))
STATE = DEMO_DIR / "state.json"


def say(text: str) -> None:
    print(text, flush=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def down(grace: float = 15) -> None:
    """Stop what the demo started, last started first (etcd last: the apiserver waits for it while it drains)."""
    if not STATE.exists():
        say("nothing is running")
        return
    state = json.loads(STATE.read_text())
    pids: dict[str, int] = state["pids"]
    for name, pid in reversed(pids.items()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        say(f"stopped {name} (pid {pid})")
    if state.get("postgres_dir"):
        shutil.rmtree(state["postgres_dir"], ignore_errors=True)
    STATE.unlink()


def up() -> None:
    if STATE.exists():
        down()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    binaries = ensure_binaries()
    plane = ControlPlane(DEMO_DIR / "cluster", binaries, detach=True)
    say(f"==> starting the control plane {binaries.kube_version}: etcd, kube-apiserver, kube-controller-manager")
    plane.start()
    pids = plane.pids()
    state: dict[str, object] = {"pids": pids, "kubeconfig": str(plane.kubeconfig)}
    STATE.write_text(json.dumps(state))
    say("==> starting the admission server and registering its webhooks")
    webhook = LocalWebhook(plane, DEMO_DIR / "webhook")
    webhook.start(detach=True)
    assert webhook.component is not None
    assert webhook.component.process is not None
    pids["webhook"] = webhook.component.process.pid
    STATE.write_text(json.dumps(state))
    webhook.register()
    say("==> starting PostgreSQL and the controller")
    postgres = LocalPostgres()
    postgres.start(detach=True)
    assert postgres.component is not None
    assert postgres.component.process is not None
    pids["postgres"] = postgres.component.process.pid
    state["postgres_dir"] = str(postgres.directory)
    STATE.write_text(json.dumps(state))
    config = install_database_support(plane, postgres, DEMO_DIR / "controller")
    controller = LocalController(
        plane,
        DEMO_DIR / "controller",
        identity="demo",
        settle_seconds=1,
        extra_args=[f"--database-config={config}", "--rotation-grace-seconds=60"],
    )
    controller.start(detach=True)
    assert controller.component is not None
    assert controller.component.process is not None
    pids["controller"] = controller.component.process.pid
    STATE.write_text(json.dumps(state))
    controller.wait_leading()
    tour(plane, say)
    say(
        "\nEverything is still running. Explore with:\n"
        f"  export KUBECONFIG={plane.kubeconfig}\n"
        f"  export PATH={binaries.kubectl.parent}:$PATH\n"
        "  kubectl -n demo get deployments,secrets\n"
        "  kubectl -n demo get databases\n"
        f"Logs: {DEMO_DIR}/cluster/logs, {DEMO_DIR}/webhook/webhook.log, {DEMO_DIR}/controller/demo.log\n"
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
            say(str(ensure_binaries()))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
