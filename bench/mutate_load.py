"""Load benchmark of ``/mutate``: one webhook process, TLS, keep-alive, a realistic linked Deployment review.

    .venv/bin/python -m bench.mutate_load [--duration 10] [--rates 250,500,1000] [--profile]

1. Where the time of one review goes, in-process (no HTTP): parse, link, diff, encode.
2. Maximum throughput of one server process pinned to one CPU, driven by wrk (closed loop, keep-alive) on another
   CPU; the aiohttp closed-loop generator in bench/loadgen.py stands in when wrk is not installed.
3. Latency at fixed rates (default 250, 500 and 1,000 reviews/s) from the open-loop generator in bench/loadgen.py,
   a process of its own, plus the server's own view of the same requests from its duration histogram.
4. With ``--profile``: the server under wrk load again, this time inside cProfile; the top functions.

Everything stays on 127.0.0.1; every load is bounded in time. Nothing here asserts on a timing.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import json
import os
import pstats
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch
import orjson

from bench.common import admission_review, linked_deployment, load_average, machine, secret_objects, summary_ms, table
from devenv.process import free_port
from rules.certs import make_ca, make_leaf
from rules.links import link_object
from webhook.admission import json_patch, mutate, parse_review, review
from webhook.secret_keys import SecretKeyIndex

HISTOGRAM_BUCKET = re.compile(r'smll_admission_review_duration_seconds_bucket\{le="([^"]+)",webhook="mutate"\} (\S+)')
BUCKETS = ("0.0005", "0.001", "0.0025", "0.005")
SERVER_CPU = "0"
CLIENT_CPU = "1"
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()
"""


def pinned(args: list[str], cpu: str) -> list[str]:
    """Run on one CPU when the machine has two or more and taskset exists: one core for the server, one for load."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", cpu, *args]
    return args


def write_tls(workdir: Path) -> tuple[Path, Path, Path]:
    year = datetime.timedelta(days=365)
    ca = make_ca("bench CA", valid_for=year)
    leaf = make_leaf(ca, "127.0.0.1", valid_for=year, ip_addresses=("127.0.0.1",))
    paths = workdir / "ca.crt", workdir / "tls.crt", workdir / "tls.key"
    for path, pem in zip(paths, (ca.cert_pem, leaf.cert_pem, leaf.key_pem), strict=True):
        path.write_bytes(pem)
    return paths


@dataclass(frozen=True)
class Server:
    base: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (from /proc): what one review costs in CPU
        does not depend on how busy the rest of the machine is, where its wall-clock throughput does."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def webhook_server(workdir: Path, *, profile: Path | None = None) -> Iterator[Server]:
    """``python -m bench.mutate_server`` pinned to one CPU (taskset execs it: same pid); stopped with SIGINT."""
    ca, cert, key = workdir / "ca.crt", workdir / "tls.crt", workdir / "tls.key"
    port = free_port()
    args = [sys.executable, "-m", "bench.mutate_server", f"--port={port}", f"--cert-file={cert}", f"--key-file={key}"]
    if profile is not None:
        args.append(f"--profile={profile}")
    process = subprocess.Popen(pinned(args, SERVER_CPU), stdin=subprocess.DEVNULL)
    base = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca))
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", context=context, timeout=1):  # noqa: S310
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the bench webhook server did not start") from None
                time.sleep(0.1)
        yield Server(base, process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check_answer(base: str, ca: Path, body: bytes, obj: dict[str, Any]) -> str:
    """One review by hand: is it allowed, and does its patch give the object 30 linked env entries?"""
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{base}/mutate", data=body, headers=headers, method="POST")  # noqa: S310
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(request, context=context, timeout=5) as answer:  # noqa: S310
        response = json.loads(answer.read())["response"]
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), json.loads(base64.b64decode(response["patch"])))
    containers = patched["spec"]["template"]["spec"]["containers"]
    linked = sum(1 for c in containers for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {}))
    return f"allowed={response['allowed']}, {len(response['patch'])} B patch, {linked} env entries linked"


def stage_breakdown(body: bytes, runs: int = 2000) -> list[tuple[str, float]]:
    """Mean µs of each stage of one review, in-process and without HTTP or TLS."""
    index = SecretKeyIndex()
    index.replace(secret_objects())
    admission = parse_review(body)
    obj = admission["object"]
    assert obj is not None
    linked = link_object(obj, kind="Deployment", namespace="shop", secret_keys=index)
    response = mutate(admission, index)

    def timed(step: Any) -> float:
        # CPU time of this process, not wall time: the machine may be shared, and this is what one review costs.
        started = time.process_time()
        for _ in range(runs):
            step()
        return (time.process_time() - started) / runs * 1e6

    def link() -> object:
        return link_object(obj, kind="Deployment", namespace="shop", secret_keys=index)

    return [
        ("parse_review (orjson.loads + checks)", timed(lambda: parse_review(body))),
        ("link_object (copies what it changes + links + warnings)", timed(link)),
        ("  (a whole copy by orjson round trip, what it made before)", timed(lambda: orjson.loads(orjson.dumps(obj)))),
        ("  (copy.deepcopy, what it made before that)", timed(lambda: copy.deepcopy(obj))),
        ("json_patch (diff old → linked)", timed(lambda: json_patch(obj, linked.obj))),
        ("  (jsonpatch.make_patch, the diff it replaced)", timed(lambda: jsonpatch.make_patch(obj, linked.obj))),
        ("encode the answer (orjson + base64 patch)", timed(lambda: orjson.dumps(review(response)))),
        ("parse + mutate() + encode, whole", timed(lambda: orjson.dumps(review(mutate(parse_review(body), index))))),
    ]


def parse_duration(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(
    base: str, script: Path | None, connections: int, duration: float, path: str = "/mutate"
) -> tuple[str, dict[str, float]]:
    """wrk, closed loop, keep-alive; POSTs the review when given the script, GETs otherwise."""
    posting = ["-s", str(script)] if script is not None else []
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "--latency", *posting, f"{base}{path}"]
    shown = " ".join(pinned(command, CLIENT_CPU))
    output = subprocess.run(pinned(command, CLIENT_CPU), capture_output=True, text=True, check=True).stdout
    found: dict[str, float] = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
    }
    for label in ("50", "99"):
        match = re.search(rf"^\s+{label}%\s+(\S+)", output, re.M)
        if match:
            found[f"p{label}"] = parse_duration(match.group(1)) * 1000
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    found["non2xx"] = float(bad.group(1)) if bad else 0.0
    if errors:
        print(f"    wrk: {errors.group(0)}")
    return shown, found


def run_loadgen(
    base: str, body_file: Path | None, ca: Path, extra: list[str], path: str = "/mutate"
) -> tuple[str, dict[str, Any]]:
    command = [sys.executable, "-m", "bench.loadgen", f"--url={base}{path}", f"--cafile={ca}", *extra]
    if body_file is not None:
        command.append(f"--body-file={body_file}")
    output = subprocess.run(pinned(command, CLIENT_CPU), capture_output=True, text=True, check=True).stdout
    shown = " ".join(["taskset", "-c", CLIENT_CPU, ".venv/bin/python", "-m", "bench.loadgen", f"--url=…{path}", *extra])
    return shown, json.loads(output)


def server_histogram(base: str, ca: Path) -> dict[str, float]:
    """Cumulative bucket counts of the server's /mutate duration histogram (upper bound in seconds → count)."""
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"{base}/metrics", context=context) as answer:  # noqa: S310 - https on loopback
        text = answer.read().decode()
    return {match.group(1): float(match.group(2)) for match in HISTOGRAM_BUCKET.finditer(text)}


def latency_row(label: str, result: dict[str, Any]) -> list[object]:
    due, sent = summary_ms(result["latency_from_due"]), summary_ms(result["latency_from_send"])
    counts = [result["ok"], result["achieved"], result["errors"]]
    return [label, *counts, due["p50"], due["p90"], due["p99"], due["max"], sent["p50"], sent["p99"]]


def max_throughput(server: Server, script: Path, body_file: Path, ca: Path, duration: float) -> None:
    base = server.base
    print(f"\n2. maximum throughput, one server process on CPU {SERVER_CPU}, load on CPU {CLIENT_CPU}")
    rows: list[list[object]] = []
    if shutil.which("wrk"):
        runs: list[tuple[str, Path | None, int, str]] = [
            ("POST /mutate", script, 8, "/mutate"),
            ("POST /mutate", script, 32, "/mutate"),
            ("POST /mutate", script, 64, "/mutate"),
            # Floors: the same review to /validate (parsed, then allowed at once: a Deployment is not judged there),
            # and a GET that does nothing. What /mutate costs beyond them is linking and its diff.
            ("POST /validate, same body (floor)", script, 8, "/validate"),
            ("GET /healthz (floor)", None, 8, "/healthz"),
        ]
        for label, lua, connections, path in runs:
            cpu = server.cpu_seconds()
            shown, found = run_wrk(base, lua, connections, duration, path)
            cpu = server.cpu_seconds() - cpu
            per_cpu_second = found["requests"] / cpu if cpu else float("nan")
            row = [found["rps"], per_cpu_second, found.get("p50"), found.get("p99"), found["non2xx"]]
            rows.append([f"{label}, wrk c={connections}", *row])
            print(f"    {shown}")
    else:
        print("    wrk is not installed: the closed-loop mode of bench/loadgen.py stands in")
        for concurrency in (8, 32):
            extra = [f"--concurrency={concurrency}", f"--duration={duration}"]
            shown, result = run_loadgen(base, body_file, ca, extra)
            stats = summary_ms(result["latency_from_send"])
            label = f"POST /mutate, loadgen c={concurrency}"
            rows.append([label, result["achieved"], float("nan"), stats["p50"], stats["p99"], result["errors"]])
            print(f"    {shown}")
    print(table(["load", "requests/s", "per CPU-second", "p50 ms", "p99 ms", "non-2xx"], rows))
    print(
        "    per CPU-second: requests served / CPU time the server process used (user + system), the per-core ceiling"
    )


def fixed_rates(server: Server, body_file: Path, ca: Path, rates: list[float], duration: float) -> None:
    base = server.base
    print(f"\n3. fixed rates, open loop (bench/loadgen.py, its own process on CPU {CLIENT_CPU}, 32 connections)")
    rows: list[list[object]] = []
    shares: list[list[object]] = []
    for rate in rates:
        before, cpu = server_histogram(base, ca), server.cpu_seconds()
        shown, result = run_loadgen(base, body_file, ca, [f"--rate={rate:.0f}", f"--duration={duration}"])
        after, cpu = server_histogram(base, ca), server.cpu_seconds() - cpu
        print(f"    {shown}")
        rows.append(latency_row(f"POST /mutate @ {rate:,.0f}/s", result))
        total = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
        within = [100 * (after.get(le, 0.0) - before.get(le, 0.0)) / total if total else float("nan") for le in BUCKETS]
        served = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
        shares.append([f"{rate:,.0f}/s", cpu * 1000 / served if served else float("nan"), *within])
    # The floor: the same generator, rate and TLS connections, on an endpoint that does nothing.
    extra = [f"--rate={rates[-1]:.0f}", f"--duration={duration}"]
    shown, result = run_loadgen(base, None, ca, extra, "/healthz")
    print(f"    {shown}")
    rows.append(latency_row(f"GET /healthz @ {rates[-1]:,.0f}/s (floor)", result))
    headers = ["load", "requests", "achieved/s", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    print(table([*headers, "p50 from send", "p99 from send"], rows))
    print("    latency from each request's due time (open loop), and from when it was written (last two columns)")
    print("    the server's own view (body read → response built): % of the same reviews within")
    print(table(["rate", "server CPU ms/review", *(f"≤ {float(le) * 1000:g} ms" for le in BUCKETS)], shares))


def profile(workdir: Path, script: Path, body_file: Path, ca: Path, duration: float) -> None:
    stats_file = workdir / "server.pstats"
    with webhook_server(workdir, profile=stats_file) as server:
        if shutil.which("wrk"):
            run_wrk(server.base, script, 32, duration)
        else:
            run_loadgen(server.base, body_file, ca, ["--concurrency=32", f"--duration={duration}"])
    print("\n4. the server under load in cProfile (which inflates Python code): top 25 by own time")
    pstats.Stats(str(stats_file)).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mutate_load")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured load (at most 60)")
    parser.add_argument("--rates", default="250,500,1000", help="fixed rates in reviews/s, comma-separated")
    parser.add_argument("--profile", action="store_true", help="also profile the server under load with cProfile")
    args = parser.parse_args(argv)
    duration = min(args.duration, 60.0)
    rates = [min(float(each), 5_000.0) for each in args.rates.split(",")]

    print(f"machine: {machine()}")
    print(f"load average before: {load_average()}")
    obj = linked_deployment()
    body = json.dumps(admission_review(obj)).encode()
    print(f"review: Deployment, 3 containers, 10 link annotations, {len(body):,} bytes of JSON\n")
    print("1. one review in-process, mean CPU time of 2,000 (no HTTP, no TLS)")
    print(table(["stage", "µs"], stage_breakdown(body)))

    with tempfile.TemporaryDirectory(prefix="smll-bench-") as tmp:
        workdir = Path(tmp)
        ca, _, _ = write_tls(workdir)
        body_file = workdir / "review.json"
        body_file.write_bytes(body)
        script = workdir / "post.lua"
        script.write_text(WRK_SCRIPT.format(body=body_file))
        with webhook_server(workdir) as server:
            print(f"\ncheck: {check_answer(server.base, ca, body, obj)}")
            max_throughput(server, script, body_file, ca, duration)
            fixed_rates(server, body_file, ca, rates, duration)
        if args.profile:
            profile(workdir, script, body_file, ca, min(duration, 10.0))
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
