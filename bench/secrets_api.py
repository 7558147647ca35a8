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

Nothing here asserts on a timing; the figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from bench.common import load_average, machine, summary_ms, table
from devenv.__main__ import DEMO_DIR
from kubeio.client import kube_client
from kubeio.rest import MERGE_PATCH, ApiException, json_request

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--rounds", type=int, default=200, help="timed rounds (each: one write each way)")
    parser.add_argument("--kubeconfig", type=Path, default=DEMO_DIR / "cluster" / "admin.kubeconfig")
    args = parser.parse_args()
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
