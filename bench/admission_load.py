"""Load through the real apiserver: many concurrent clients creating and updating linked Deployments and deleting
unrelated Secrets, with both webhooks registered. Reports admission latency as the apiserver itself measured it
(``apiserver_admission_webhook_admission_duration_seconds``), errors, and the webhook's RSS over time.

``python -m bench.admission_load [--clients 200] [--seconds 300]``. Everything on loopback; the run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from bench.common import machine, table
from devenv.cluster import ControlPlane, running_control_plane
from devenv.webhook import LocalWebhook
from kubeio.client import kube_client
from kubeio.rest import MERGE_PATCH, ApiException, json_request

NAMESPACE = "load"
METRIC = "apiserver_admission_webhook_admission_duration_seconds"
SAMPLE = re.compile(METRIC + r"_bucket\{([^}]*)\} ([0-9.e+]+)")


def buckets(text: str, webhook: str) -> dict[float, float]:
    """Cumulative bucket counts of one webhook, summed over operations and outcomes."""
    found: dict[float, float] = {}
    for labels, value in SAMPLE.findall(text):
        fields = dict(part.split("=", 1) for part in labels.split(","))
        if fields.get("name", "").strip('"') != webhook:
            continue
        bound = float("inf") if fields["le"].strip('"') == "+Inf" else float(fields["le"].strip('"'))
        found[bound] = found.get(bound, 0.0) + float(value)
    return found


def quantile(cumulative: dict[float, float], q: float) -> float:
    """Prometheus's histogram_quantile: linear interpolation inside the bucket that holds the rank."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]] if bounds else 0
    if total == 0:
        return float("nan")
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / max(
                count - previous_count, 1e-9
            )
        previous_bound, previous_count = bound, count
    return bounds[-1]


def deployment(name: str, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {"env.secrets.smll.io/API_KEY": f"stripe/{key}"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
            },
        },
    }


async def client_loop(api: client.ApiClient, number: int, deadline: float, outcomes: Counter[str]) -> None:
    base = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    secrets = f"/api/v1/namespaces/{NAMESPACE}/secrets"
    round_ = 0
    while time.monotonic() < deadline:
        name = f"c{number}-{round_}"
        steps = [
            ("create deployment", "POST", base, deployment(name, "STRIPE_SECRET_KEY"), "application/json"),
            (
                "update deployment",
                "PATCH",
                f"{base}/{name}",
                {"metadata": {"annotations": {"env.secrets.smll.io/API_KEY": "stripe/WEBHOOK_SECRET"}}},
                MERGE_PATCH,
            ),
            (
                "create secret",
                "POST",
                secrets,
                {"metadata": {"name": f"unrelated-{name}"}, "data": {"K": "eA=="}},
                "application/json",
            ),
            ("delete unrelated secret", "DELETE", f"{secrets}/unrelated-{name}", None, "application/json"),
        ]
        for what, method, path, body, content_type in steps:
            try:
                await json_request(api, method, path, body=body, content_type=content_type)
                outcomes[f"{what}: ok"] += 1
            except ApiException as error:
                outcomes[f"{what}: HTTP {error.status}"] += 1
            except (TimeoutError, OSError) as error:
                outcomes[f"{what}: {type(error).__name__}"] += 1
        round_ += 1


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


async def run(plane: ControlPlane, webhook: LocalWebhook, clients: int, seconds: float) -> None:
    api = await kube_client(plane.kubeconfig, connections=clients + 8)
    try:
        await json_request(
            api,
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/secrets",
            body={"metadata": {"name": "stripe"}, "data": {"STRIPE_SECRET_KEY": "eA==", "WEBHOOK_SECRET": "eQ=="}},
        )
        before = plane.get("/metrics")[1].decode()
        assert webhook.component is not None
        assert webhook.component.process is not None
        pid = webhook.component.process.pid
        rss = [(0.0, rss_mib(pid))]
        outcomes: Counter[str] = Counter()
        started = time.monotonic()
        deadline = started + seconds
        loops = [asyncio.create_task(client_loop(api, n, deadline, outcomes)) for n in range(clients)]
        clients_done = asyncio.gather(*loops)
        while not clients_done.done():
            await asyncio.wait([clients_done], timeout=10)
            rss.append((time.monotonic() - started, rss_mib(pid)))
        await clients_done
        after = plane.get("/metrics")[1].decode()
    finally:
        await api.close()
    rows = []
    for hook in ("link.secrets.smll.io", "protect.secrets.smll.io"):
        b0, b1 = buckets(before, hook), buckets(after, hook)
        delta = {bound: b1.get(bound, 0) - b0.get(bound, 0) for bound in b1}
        calls = delta.get(float("inf"), 0)
        rows.append(
            [hook, int(calls), f"{quantile(delta, 0.5) * 1000:.1f} ms", f"{quantile(delta, 0.99) * 1000:.1f} ms"]
        )
    print(table(["webhook", "calls", "p50 (apiserver-measured)", "p99"], rows))
    errors = {k: v for k, v in outcomes.items() if not k.endswith(": ok")}
    total = sum(outcomes.values())
    print(
        f"\nrequests: {total:,} in {seconds:.0f}s ({total / seconds:.0f}/s); "
        f"errors: {sum(errors.values())} {errors or ''}"
    )
    print("webhook RSS over time: " + ", ".join(f"{t:.0f}s {m:.0f} MiB" for t, m in rss))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admission_load")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args(argv)
    print(machine())
    print(f"{args.clients} concurrent clients for {args.seconds:.0f}s through the real apiserver")
    with running_control_plane() as plane:
        plane.kubectl("create", "namespace", NAMESPACE)
        webhook = LocalWebhook(plane, Path(tempfile.mkdtemp(prefix="smll-bench-load-")))
        webhook.start()
        try:
            webhook.register()
            asyncio.run(run(plane, webhook, args.clients, args.seconds))
        finally:
            webhook.unregister()
            webhook.stop()


if __name__ == "__main__":
    main()
