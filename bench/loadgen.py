"""A small load generator on raw asyncio TLS streams, run in its own process: open loop at a fixed rate, or closed.

It keeps a pool of keep-alive HTTP/1.1 connections and writes a pre-built request, then reads the status line,
the headers and exactly Content-Length bytes of body. That is all it parses, which keeps the generator's own cost
per request far below an aiohttp ClientSession's (the generator shares the machine with the server it measures).

Open loop (``--rate R``): request i is due at start + i/R whether or not earlier ones were answered, so a slow
server cannot slow the generator down and hide its own latency (no coordinated omission). Latency is reported
from the moment each request was due, and also from the moment it was written.
Closed loop (``--concurrency C``): C connections, each sending its next request when the last was answered; the
stand-in for wrk when wrk is not installed.

Prints one JSON object on stdout: counts, errors, achieved rate, and the latencies in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


def client_context(cafile: Path | None) -> ssl.SSLContext:
    if cafile is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(cafile))


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def roundtrip(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = CONTENT_LENGTH.search(head)
        await self.reader.readexactly(int(length.group(1)) if length else 0)
        return status


class Target:
    def __init__(self, url: str, body: bytes | None, context: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 443
        self.context = context
        line = f"{'GET' if body is None else 'POST'} {parts.path or '/'} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is None:
            self.request = f"{line}\r\n".encode()
        else:
            self.request = (
                f"{line}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )

    async def connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.context)
        return Connection(reader, writer)


async def open_loop(target: Target, rate: float, duration: float, warmup: float, connections: int) -> dict[str, object]:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    pool = [await target.connect() for _ in range(connections)]
    for connection in pool:
        idle.put_nowait(connection)
    due_latency: list[float] = []
    sent_latency: list[float] = []
    errors = 0

    async def one(due: float, record: bool) -> None:
        nonlocal errors
        connection = await idle.get()
        sent = time.perf_counter()
        try:
            status = await connection.roundtrip(target.request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            connection = await target.connect()
        done = time.perf_counter()
        idle.put_nowait(connection)
        if not record:
            return
        if status != 200:
            errors += 1
            return
        due_latency.append(done - due)
        sent_latency.append(done - sent)

    total = int((warmup + duration) * rate)
    warm = int(warmup * rate)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due, i >= warm))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - (start + warm / rate)
    for connection in pool:
        connection.writer.close()
    return {
        "mode": "open-loop",
        "rate": rate,
        "connections": connections,
        "requests": total - warm,
        "ok": len(due_latency),
        "errors": errors,
        "elapsed": elapsed,
        "achieved": len(due_latency) / elapsed if elapsed > 0 else 0.0,
        "latency_from_due": due_latency,
        "latency_from_send": sent_latency,
    }


async def closed_loop(target: Target, concurrency: int, duration: float, warmup: float) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    begin = time.perf_counter()
    measure_from = begin + warmup
    stop = measure_from + duration

    async def worker() -> None:
        nonlocal errors
        connection = await target.connect()
        while (now := time.perf_counter()) < stop:
            status = await connection.roundtrip(target.request)
            if now >= measure_from:
                if status == 200:
                    latencies.append(time.perf_counter() - now)
                else:
                    errors += 1
        connection.writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "mode": "closed-loop",
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": errors,
        "elapsed": duration,
        "achieved": len(latencies) / duration,
        "latency_from_send": latencies,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True, help="https://127.0.0.1:PORT/path")
    parser.add_argument("--body-file", type=Path, help="POST this body; without it, GET")
    parser.add_argument("--cafile", type=Path)
    parser.add_argument("--rate", type=float, help="open loop at this many requests a second")
    parser.add_argument("--concurrency", type=int, help="closed loop with this many connections")
    parser.add_argument("--connections", type=int, default=32, help="open loop: keep-alive connections")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname != "127.0.0.1":
        parser.error("loads stay on 127.0.0.1")
    body = args.body_file.read_bytes() if args.body_file else None
    target = Target(args.url, body, client_context(args.cafile))
    if args.rate:
        result = asyncio.run(open_loop(target, args.rate, args.duration, args.warmup, args.connections))
    else:
        result = asyncio.run(closed_loop(target, args.concurrency or 16, args.duration, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
