"""A key set through the write-only API against a direct PATCH of the Secret, both through the real apiserver.

    make demo                                  # the product installed on the local cluster with its node
    .venv/bin/python -m bench.secrets_api [-n 200]

Against the running demo cluster (the API is served by the in-cluster webhook pod behind its APIService). One
kubernetes-asyncio ApiClient with the admin certificate (keep-alive), one namespace of its own with one Secret
that nothing uses (so no rollout runs meanwhile). N rounds, each setting one key to a new value both ways, the two
interleaved so that drift hits both alike:

- direct:  PATCH /api/v1/namespaces/bench-api/secrets/target (merge patch of one key): one apiserver write, and
  the protection webhook's call;
- API:     POST  /apis/secrets.smll.io/v1alpha1/namespaces/bench-api/secretwrites: the apiserver proxies to the
  pod, which asks for a SubjectAccessReview, GETs the Secret and PUTs it (the same admission call), and answers.

``--big`` needs no cluster: the view of one Secret of 20,000 short keys that 200 Deployments load whole
(``envFrom``), as the pod builds it for ``kubectl get wos big`` (JSON) and for the Table kubectl asks by default,
in-process — the security review's attack on the loop both webhooks share.

Nothing here asserts on a timing; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from bench.common import load_average, machine, summary_ms, table
from devenv.__main__ import DEMO_DIR
from kubeio.client import kube_client
from kubeio.rest import MERGE_PATCH, ApiException, json_request
from rules import secretsapi as secretsapi_rules
from rules.protection import referrer_of
from webhook import apiprotocol
from webhook.referrers import ReferrerIndex
from webhook.secretsapi import utcnow

NAMESPACE = "bench-api"
SECRET = "target"
WARMUP = 10


async def measure(kubeconfig: Path, rounds: int) -> dict[str, list[float]]:
    api = await kube_client(kubeconfig)
    timings: dict[str, list[float]] = {"direct PATCH": [], "write-only API": []}
    try:
        try:
            await json_request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        except ApiException as error:
            if error.status != 409:
                raise
        secrets = f"/api/v1/namespaces/{NAMESPACE}/secrets"
        writes = f"/apis/secrets.smll.io/v1alpha1/namespaces/{NAMESPACE}/secretwrites"
        for number in range(WARMUP + rounds):
            value = os.urandom(12).hex()
            started = time.perf_counter()
            await json_request(
                api,
                "POST",
                writes,
                body={"kind": "SecretWrite", "spec": {"secretName": SECRET, "stringData": {"BENCH_KEY": value}}},
            )
            through_api = time.perf_counter() - started
            started = time.perf_counter()
            await json_request(
                api,
                "PATCH",
                f"{secrets}/{SECRET}",
                body={"stringData": {"BENCH_KEY": value + "x"}},
                content_type=MERGE_PATCH,
            )
            direct = time.perf_counter() - started
            if number >= WARMUP:
                timings["write-only API"].append(through_api)
                timings["direct PATCH"].append(direct)
    finally:
        try:
            await json_request(api, "DELETE", f"/api/v1/namespaces/{NAMESPACE}")
        finally:
            await api.close()
    return timings


def big_view(rounds: int, keys: int = 20_000, workloads: int = 200) -> dict[str, list[float]]:
    """Seconds to build the view of the big Secret and serialize it, as JSON and as a Table; and its size."""
    index = ReferrerIndex()
    for number in range(workloads):
        container = {"name": "app", "image": "busybox", "envFrom": [{"secretRef": {"name": "big"}}]}
        deployment = {
            "metadata": {"name": f"app-{number:03d}", "namespace": NAMESPACE, "uid": f"uid-{number}"},
            "spec": {"replicas": 0, "template": {"spec": {"containers": [container]}}},
        }
        index.add(referrer_of(deployment, "Deployment"))
    metadata = {"name": "big", "namespace": NAMESPACE, "uid": "uid-big", "creationTimestamp": "2026-11-01T00:00:00Z"}
    secret = {"metadata": metadata, "type": "Opaque", "data": dict.fromkeys((f"K{n:05d}" for n in range(keys)), "")}
    now = utcnow()
    timings: dict[str, list[float]] = {"get wos big (JSON)": [], "get wos big (Table)": []}
    size = 0
    for _ in range(rounds):
        started = time.perf_counter()
        size = len(
            json.dumps(secretsapi_rules.secret_view(secret, index.referrers(NAMESPACE, "big"), index.by_uid, now).body)
        )
        timings["get wos big (JSON)"].append(time.perf_counter() - started)
        started = time.perf_counter()
        view = secretsapi_rules.secret_view(secret, index.referrers(NAMESPACE, "big"), index.by_uid, now)
        json.dumps(apiprotocol.table([view], now))
        timings["get wos big (Table)"].append(time.perf_counter() - started)
    print(f"the JSON view: {size} bytes")
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=200, help="timed rounds (each: one write each way)")
    parser.add_argument("--kubeconfig", type=Path, default=DEMO_DIR / "cluster" / "admin.kubeconfig")
    parser.add_argument("--big", action="store_true", help="the big Secret's view, in-process (no cluster)")
    args = parser.parse_args()
    if args.big:
        rounds = max(1, min(args.rounds, 50))  # bounded
        timings = big_view(rounds)
        print(f"{machine()}; load average {load_average()}; {rounds} rounds")
        rows = [
            [name, *(summary_ms(seconds)[p] for p in ("p50", "p90", "p99", "mean"))]
            for name, seconds in timings.items()
        ]
        print(table(["one request, in-process", "p50 ms", "p90 ms", "p99 ms", "mean ms"], rows))
        return
    if not args.kubeconfig.exists():
        raise SystemExit(f"no cluster at {args.kubeconfig}: run `make demo` first")
    rounds = max(1, min(args.rounds, 5000))  # bounded
    timings = asyncio.run(measure(args.kubeconfig, rounds))
    print(f"{machine()}; load average {load_average()}; {rounds} rounds after {WARMUP} warm-up")
    rows = []
    for name, seconds in timings.items():
        ms = summary_ms(seconds)
        rows.append([name, ms["p50"], ms["p90"], ms["p99"], ms["mean"]])
    print(table(["one key set", "p50 ms", "p90 ms", "p99 ms", "mean ms"], rows))


if __name__ == "__main__":
    main()
