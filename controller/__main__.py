"""``python -m controller``: the controller (rollouts; generated credentials)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controller.frame.logs import tag_reconcile_lines
from controller.frame.settings import Settings
from controller.main import run
from kubeio import logs, loop


def main(argv: list[str] | None = None) -> int:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m controller", description="smll-secrets controller")
    parser.add_argument(
        "--namespace", default=defaults.namespace, help="where the Lease and the controller's Secrets live"
    )
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig to use instead of the in-cluster service account")
    parser.add_argument("--identity", default=defaults.identity, help="this replica's name in the Lease")
    parser.add_argument("--lease-name", default=defaults.lease_name, help="the Lease that elects the leader")
    parser.add_argument("--lease-seconds", type=int, default=defaults.lease_seconds)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=defaults.settle_seconds,
        help="settling window: changes less than this apart become one rollout per service",
    )
    parser.add_argument(
        "--settle-max-seconds",
        type=float,
        default=defaults.settle_max_seconds,
        help="the longest a burst of changes is held back as one rollout (never less than --settle-seconds)",
    )
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument(
        "--database-config",
        type=Path,
        help="YAML of the PostgreSQL servers: servers: {NAME: {host, port, sslmode, adminSecret}}",
    )
    parser.add_argument(
        "--rotation-grace-seconds",
        type=float,
        default=defaults.rotation_grace_seconds,
        help="after a rotation, drop the old login (Databases) or password (registry tokens) at the latest this long "
        "after, rolled or not",
    )
    parser.add_argument(
        "--registry-url", help="the registry VPC namespaces get credentials for (with --htpasswd-secret)"
    )
    parser.add_argument(
        "--htpasswd-secret", help="NAMESPACE/NAME of the htpasswd Secret the registry mounts (with --registry-url)"
    )
    parser.add_argument(
        "--registry-token-port",
        type=int,
        help="serve the registry's token endpoint (Distribution's auth.token realm) on this port, on every replica",
    )
    parser.add_argument("--registry-token-host", default=defaults.registry_token_host)
    parser.add_argument(
        "--registry-token-ca",
        help="NAMESPACE/NAME of the kubernetes.io/tls Secret of the CA the tokens' signing keys are certified by",
    )
    parser.add_argument(
        "--registry-token-service", help="the registry's auth.token.service (default: the host of --registry-url)"
    )
    parser.add_argument("--registry-token-issuer", default=defaults.registry_token_issuer)
    parser.add_argument(
        "--registry-token-seconds",
        type=int,
        default=defaults.registry_token_seconds,
        help="how long a token lives (5 to 300 seconds)",
    )
    parser.add_argument("--metrics-host", default=defaults.metrics_host)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port)
    logs.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.lease_seconds < 3 or args.settle_seconds < 0 or args.settle_max_seconds < 0 or args.workers < 1:
        parser.error(
            "--lease-seconds must be at least 3, --settle-seconds and --settle-max-seconds not negative,"
            " --workers at least 1"
        )
    if args.database_config is not None:
        from controller.databases.config import ConfigError, load_servers  # only when turned on

        try:
            load_servers(args.database_config)
        except ConfigError as error:
            parser.error(str(error))
    if (args.registry_url is None) != (args.htpasswd_secret is None):
        parser.error("--registry-url and --htpasswd-secret go together")
    if args.htpasswd_secret is not None:
        from controller.registry.config import parse_secret_ref  # only when turned on

        try:
            parse_secret_ref(args.htpasswd_secret)
        except ValueError as error:
            parser.error(f"--htpasswd-secret: {error}")
    if args.registry_token_port is not None:
        from controller.registry.config import parse_secret_ref  # only when turned on
        from rules.registry_token import lifetime_error

        if args.htpasswd_secret is None or args.registry_token_ca is None:
            parser.error("--registry-token-port needs --registry-url, --htpasswd-secret and --registry-token-ca")
        if (wrong := lifetime_error(args.registry_token_seconds)) is not None:
            parser.error(f"--registry-token-seconds: {wrong}")
        try:
            parse_secret_ref(args.registry_token_ca)
        except ValueError as error:
            parser.error(f"--registry-token-ca: {error}")
    logs.configure(args.log_level, args.log_format)
    tag_reconcile_lines()
    settings = Settings(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        identity=args.identity,
        lease_name=args.lease_name,
        lease_seconds=args.lease_seconds,
        settle_seconds=args.settle_seconds,
        settle_max_seconds=args.settle_max_seconds,
        workers=args.workers,
        database_config=args.database_config,
        rotation_grace_seconds=args.rotation_grace_seconds,
        registry_url=args.registry_url,
        htpasswd_secret=args.htpasswd_secret,
        registry_token_port=args.registry_token_port,
        registry_token_host=args.registry_token_host,
        registry_token_ca=args.registry_token_ca,
        registry_token_service=args.registry_token_service,
        registry_token_issuer=args.registry_token_issuer,
        registry_token_seconds=args.registry_token_seconds,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
    )
    return loop.run(run(settings))


if __name__ == "__main__":
    sys.exit(main())
