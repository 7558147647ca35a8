"""``python -m devenv up`` installs the product into a local cluster with a real node, as a user would (its image,
its chart, Helm), and shows it working; ``python -m devenv down`` stops everything it started and cleans the host.
``python -m devenv dev`` is the quick developer mode: the webhook and controller run as host processes beside a
control plane without a node."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from devenv.binaries import CACHE_ROOT, Binaries, ensure_binaries, ensure_helm, ensure_node_binaries
from devenv.cluster import ControlPlane, wait_for
from devenv.controller import LocalController, install_database_support
from devenv.images import build_images, push
from devenv.incluster import HTPASSWD_SECRET as HTPASSWD_NAME
from devenv.incluster import Platform, install
from devenv.node import NODE_COMPONENTS, clean_host
from devenv.postgres import LocalPostgres
from devenv.process import Component, free_port
from devenv.registry import TOKEN_ISSUER, LocalRegistry, TokenAuth, ensure_token_ca
from devenv.tour import tour
from devenv.webhook import LocalWebhook
from rules.names import PRODUCT_NAMESPACE

# SMLL_DEMO_DIR lets a test run the demo without touching a developer's own.
DEMO_DIR = Path(os.environ.get("SMLL_DEMO_DIR", CACHE_ROOT / "demo"))
STATE = DEMO_DIR / "state.json"
HTPASSWD_SECRET = f"{PRODUCT_NAMESPACE}/{HTPASSWD_NAME}"
TOKEN_CA_SECRET = f"{PRODUCT_NAMESPACE}/registry-token-ca"  # what the chart keeps; made here for the dev mode


def say(text: str) -> None:
    print(text, flush=True)


def _alive(pid: int) -> bool:
    """Running, and not a zombie: a detached process that ended waits as one until init reaps it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def down(grace: float = 5) -> None:
    """Stop what the demo started, last started first (etcd last: the apiserver waits for it while it drains)."""
    if not STATE.exists():
        say("nothing is running")
        return
    state = json.loads(STATE.read_text())
    pids: dict[str, int] = state["pids"]

    def stop(name: str, pid: int) -> None:
        # PostgreSQL's fast shutdown: SIGTERM would wait for its clients (the product's pod among them) to leave.
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        say(f"stopped {name} (pid {pid}, {time.monotonic() - started:.1f}s)")

    # The node first, then the rest, last started first (etcd last: the apiserver waits for it while it drains),
    # then the containers and every trace on the host (the apiserver needs its address on the bridge to drain).
    for name in NODE_COMPONENTS:
        if name in pids:
            stop(name, pids[name])
    for name, pid in reversed(pids.items()):
        if name not in NODE_COMPONENTS:
            stop(name, pid)
    if state.get("node_dir"):
        for removed in clean_host(Path(state["node_dir"])):
            say(f"removed {removed}")
    if state.get("postgres_dir"):
        shutil.rmtree(state["postgres_dir"], ignore_errors=True)
    STATE.unlink()


def up() -> None:
    """The product as a user installs it: a cluster with a node, the image in a registry, the chart by Helm."""
    if STATE.exists():
        down()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    binaries = build_everything()
    plane = ControlPlane(DEMO_DIR / "cluster", binaries, detach=True, with_node=True)
    say(
        f"==> starting the cluster {binaries.kube_version}: control plane, and a node (containerd, kubelet, kube-proxy)"
    )
    state: dict[str, object] = {
        "pids": {},
        "kubeconfig": str(plane.kubeconfig),
        "node_dir": str(plane.workdir / "node"),
    }
    STATE.write_text(json.dumps(state))
    try:
        plane.start()
    finally:
        state["pids"] = plane.pids()
        STATE.write_text(json.dumps(state))
    pids: dict[str, int] = plane.pids()
    say("==> starting PostgreSQL and the platform's image registry beside it")
    platform = Platform(DEMO_DIR / "platform", detach=True, registry_in_cluster=True)
    state["postgres_dir"] = str(platform.postgres.directory)
    try:
        platform.start(plane)
    finally:
        for component in (platform.postgres.component, platform.images.component, platform.vpc_registry.component):
            if component is not None and component.process is not None:
                pids[component.name] = component.process.pid
        state["pids"] = pids
        STATE.write_text(json.dumps(state))
    say(
        "==> building the product's image, pushing it, installing the chart with Helm, and the VPC registry"
        " (Distribution, token auth against the product) as a Deployment"
    )
    installed = install(plane, platform)
    say(plane.kubectl("-n", PRODUCT_NAMESPACE, "get", "pods", "-o", "wide").stdout)
    assert platform.cluster_registry is not None
    registry_host = platform.cluster_registry.host
    tour(
        plane,
        say,
        image=installed.test_app_image,
        pods_run=True,
        python_image=installed.product_image,
        push_private=lambda repository, user, password: push(
            installed.images.test_app, registry_host, creds=f"{user}:{password}", path=repository
        ),
    )
    say(
        "\nEverything is still running. Explore with:\n"
        f"  export KUBECONFIG={plane.kubeconfig}\n"
        f"  export PATH={binaries.kubectl.parent}:{ensure_helm().parent}:{Path(sys.executable).parent}:$PATH\n"
        "  kubectl get nodes\n"
        f"  kubectl -n {PRODUCT_NAMESPACE} get pods\n"
        "  kubectl -n demo get deployments,pods,secrets,databases\n"
        "  kubectl -n demo get writeonlysecrets          # keys, users, changes: never values\n"
        "  kubectl smll secrets --help                   # the write-only API's plugin\n"
        f"Logs: {DEMO_DIR}/cluster/logs, {DEMO_DIR}/cluster/node/logs\n"
        f"  kubectl -n {PRODUCT_NAMESPACE} logs deploy/smll-secrets -c controller\n"
        "Stop everything with: make down"
    )


def dev() -> None:
    """The developer mode: the webhook and the controller as host processes, a control plane without a node."""
    if STATE.exists():
        down()
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    binaries = ensure_binaries()
    plane = ControlPlane(DEMO_DIR / "cluster", binaries, detach=True)
    say(f"==> starting the control plane {binaries.kube_version}: etcd, kube-apiserver, kube-controller-manager")
    plane.start()
    pids = plane.pids()
    state: dict[str, object] = {"pids": pids, "kubeconfig": str(plane.kubeconfig)}

    def track(component: Component | None) -> None:
        """Remember a detached process, so that `make down` stops it even if the rest of `up` fails."""
        assert component is not None
        assert component.process is not None
        pids[component.name] = component.process.pid
        STATE.write_text(json.dumps(state))

    STATE.write_text(json.dumps(state))
    say("==> starting the admission server and registering its webhooks")
    webhook = LocalWebhook(plane, DEMO_DIR / "webhook")
    webhook.start(detach=True)
    track(webhook.component)
    webhook.register()
    say("==> starting PostgreSQL, a Distribution registry (token auth against the controller) and the controller")
    postgres = LocalPostgres()
    postgres.start(detach=True)
    state["postgres_dir"] = str(postgres.directory)
    track(postgres.component)
    token_port = free_port()
    bundle = DEMO_DIR / "registry-token-ca.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(ensure_token_ca(plane, TOKEN_CA_SECRET))
    registry = LocalRegistry(DEMO_DIR / "registry", auth=False)
    registry.token = TokenAuth(f"http://127.0.0.1:{token_port}/token", registry.host, TOKEN_ISSUER, bundle)
    registry.start(detach=True)
    track(registry.component)
    config = install_database_support(plane, postgres, DEMO_DIR / "controller")
    controller = LocalController(
        plane,
        DEMO_DIR / "controller",
        identity="demo",
        settle_seconds=1,
        registry_url=registry.url,
        htpasswd_secret=HTPASSWD_SECRET,
        extra_args=[
            f"--database-config={config}",
            "--rotation-grace-seconds=60",
            f"--registry-token-port={token_port}",
            "--registry-token-host=127.0.0.1",
            f"--registry-token-ca={TOKEN_CA_SECRET}",
        ],
    )
    controller.start(detach=True)
    track(controller.component)
    controller.wait_leading()
    wait_for(lambda: "registry tokens: caches synced" in controller.log(), timeout=30, what="the token endpoint")
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


def build_everything() -> Binaries:
    """Everything the cluster with a node needs, built side by side (each is cached once built): the Go builds
    share the two cores, and the base image's debootstrap waits mostly on downloads meanwhile."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        kube = pool.submit(ensure_binaries)
        others = [pool.submit(job) for job in (ensure_node_binaries, ensure_helm, build_images)]
        for future in others:
            future.result()
        return kube.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv")
    parser.add_argument("command", choices=["up", "dev", "down", "build"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "dev":
            dev()
        elif args.command == "down":
            down()
        else:
            say(str(build_everything()))
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
