"""``python -m webhook``: the admission server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from webhook.server import Settings, serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webhook", description="smll-secrets admission server")
    parser.add_argument("--cert-file", type=Path, required=True, help="PEM serving certificate (reloaded on change)")
    parser.add_argument("--key-file", type=Path, required=True, help="PEM private key of the certificate")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - inside a pod
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig to use instead of the in-cluster service account")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(
        Settings(
            cert_file=args.cert_file, key_file=args.key_file, host=args.host, port=args.port, kubeconfig=args.kubeconfig
        )
    )


if __name__ == "__main__":
    main()
