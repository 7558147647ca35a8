"""A bench-only launcher: the webhook's aiohttp app with a pre-filled SecretKeyIndex, served over TLS on loopback.

``python -m bench.mutate_server --port P --cert-file C --key-file K [--profile OUT]``. No Kubernetes API: the
index is filled with the Secrets the benchmark's Deployment links, as the Secret watch would have filled it.
With ``--profile`` the whole run is profiled with cProfile and the stats written to OUT when the server stops.
"""

from __future__ import annotations

import argparse
import cProfile
import ssl
from pathlib import Path

from aiohttp import web

from bench.common import secret_objects
from kubeio.loop import new_loop
from webhook.app import WebhookState, create_app


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mutate_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-file", type=Path, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--profile", type=Path, help="write cProfile stats here when the server stops")
    args = parser.parse_args(argv)
    state = WebhookState()
    state.secret_keys.replace(secret_objects())
    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        web.run_app(
            create_app(state),
            host="127.0.0.1",
            port=args.port,
            ssl_context=server_context(args.cert_file, args.key_file),
            access_log=None,
            loop=new_loop(),  # the product's loop (kubeio/loop.py)
            print=None,
        )
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
