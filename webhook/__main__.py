"""``python -m webhook``: the admission server."""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

from kubeio import logs
from rules.names import WEBHOOK_CONFIGURATION
from rules.times import parse_duration
from rules.tls import Policy, SubjectNames
from webhook.selfmanaged import SelfManagedSettings
from webhook.server import Settings, serve
from webhook.tls import TrustError


def duration(text: str) -> datetime.timedelta:
    """``90s``, ``30m``, ``8760h``, ``1825d``."""
    try:
        return parse_duration(text, units="dhms")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    defaults = Policy()
    parser = argparse.ArgumentParser(prog="python -m webhook", description="smll-secrets admission server")
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - inside a pod
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig to use instead of the in-cluster service account")
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=5.0,
        help="after SIGTERM, go on serving this long (unready) while the pod leaves the Service's endpoints",
    )
    parser.add_argument(
        "--api-port",
        type=int,
        default=0,
        help="serve the write-only Secrets API (secrets.smll.io, behind an APIService) on this port; 0: off",
    )
    parser.add_argument(
        "--stale-after",
        type=duration,
        default=datetime.timedelta(days=90),
        help="the write-only API flags a key unchanged for longer than this (rotate credentials regularly)",
    )
    parser.add_argument(
        "--api-allowed-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="a Secret type the write-only API writes beside Opaque and the generated ones (repeatable), e.g. "
        "kubernetes.io/basic-auth",
    )
    clients = parser.add_argument_group("who may ask for decisions (the chart's webhook.clientAuth)")
    clients.add_argument(
        "--client-ca-file",
        type=Path,
        help="require on the admission port a client certificate signed by this CA: the one the apiserver presents "
        "to webhooks (its admission configuration's kubeConfigFile); reloaded when it changes",
    )
    clients.add_argument(
        "--client-allowed-name",
        action="append",
        default=[],
        help="with --client-ca-file: a common name the client certificate may have (repeatable; default: any)",
    )
    clients.add_argument(
        "--health-port",
        type=int,
        default=0,
        help="serve /healthz, /readyz and /metrics on this port (plain HTTP), not on the admission port; 0: off",
    )
    logs.add_arguments(parser)
    parser.add_argument(
        "--tls-mode",
        choices=["files", "self-managed"],
        default="files",
        help="files: serve --cert-file/--key-file (e.g. from cert-manager); self-managed: issue and renew our own",
    )
    files = parser.add_argument_group("--tls-mode=files")
    files.add_argument("--cert-file", type=Path, help="PEM serving certificate (reloaded on change)")
    files.add_argument("--key-file", type=Path, help="PEM private key of the certificate")
    managed = parser.add_argument_group("--tls-mode=self-managed")
    managed.add_argument("--tls-secret-namespace", help="namespace of the Secret that holds the CA and certificate")
    managed.add_argument("--tls-secret-name", default="smll-secrets-webhook-tls")
    managed.add_argument("--service-name", default="smll-secrets-webhook", help="the webhook's Service")
    managed.add_argument("--service-namespace", help="namespace of the Service (default: the Secret's)")
    managed.add_argument(
        "--webhook-configuration",
        default=WEBHOOK_CONFIGURATION,
        help="name of the Mutating- and ValidatingWebhookConfiguration whose caBundle is kept in step",
    )
    managed.add_argument(
        "--api-service", default="", help="name of the write-only API's APIService whose caBundle is kept in step"
    )
    managed.add_argument("--tls-directory", type=Path, help="where the pair is written to be served (default: temp)")
    managed.add_argument("--tls-extra-dns-name", action="append", default=[], help="another SAN (repeatable)")
    managed.add_argument("--tls-extra-ip", action="append", default=[], help="an IP SAN, e.g. for a local run by url")
    managed.add_argument("--tls-ca-validity", type=duration, default=defaults.ca_validity, help="e.g. 1825d")
    managed.add_argument("--tls-serving-validity", type=duration, default=defaults.serving_validity, help="e.g. 365d")
    managed.add_argument("--tls-check-seconds", type=float, default=60.0, help="how often the Secret is checked")
    return parser


def settings_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Settings:
    common = {
        "host": args.host,
        "port": args.port,
        "kubeconfig": args.kubeconfig,
        "drain_seconds": args.drain_seconds,
        "api_port": args.api_port,
        "stale_after": args.stale_after,
        "client_ca_file": args.client_ca_file,
        "allowed_clients": frozenset(args.client_allowed_name),
        "health_port": args.health_port,
        "api_allowed_types": frozenset(args.api_allowed_type),
    }
    if args.client_allowed_name and args.client_ca_file is None:
        parser.error("--client-allowed-name needs --client-ca-file")
    if args.client_ca_file is not None and not args.health_port:
        parser.error(
            "--client-ca-file needs --health-port: the kubelet's probes carry no client certificate, so health "
            "cannot stay on the admission port"
        )
    if args.tls_mode == "files":
        if args.cert_file is None or args.key_file is None:
            parser.error("--tls-mode=files needs --cert-file and --key-file")
        return Settings(cert_file=args.cert_file, key_file=args.key_file, **common)
    if args.cert_file or args.key_file:
        parser.error("--cert-file and --key-file are for --tls-mode=files")
    if not args.tls_secret_namespace:
        parser.error("--tls-mode=self-managed needs --tls-secret-namespace")
    managed = SelfManagedSettings(
        secret_namespace=args.tls_secret_namespace,
        secret_name=args.tls_secret_name,
        names=SubjectNames.for_service(
            args.service_name,
            args.service_namespace or args.tls_secret_namespace,
            extra_dns=args.tls_extra_dns_name,
            extra_ips=args.tls_extra_ip,
        ),
        directory=args.tls_directory or Path(tempfile.mkdtemp(prefix="smll-webhook-tls-")),
        configuration_name=args.webhook_configuration,
        api_service=args.api_service,
        check_seconds=args.tls_check_seconds,
        policy=Policy(ca_validity=args.tls_ca_validity, serving_validity=args.tls_serving_validity),
    )
    return Settings(cert_file=managed.cert_file, key_file=managed.key_file, self_managed=managed, **common)


def main(argv: list[str] | None = None) -> int:
    arguments = parser()
    args = arguments.parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        return serve(settings_from(args, arguments))
    except TrustError as error:
        arguments.exit(2, f"{arguments.prog}: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
