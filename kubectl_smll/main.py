"""``kubectl smll secrets …``: set and remove keys, delete, list and show Secrets through the write-only API.

A thin front on kubectl itself: every request goes through ``kubectl`` with the user's kubeconfig, context and
namespace (and ``--as`` for impersonation), so authentication is exactly the user's. Values go to kubectl on its
standard input, inside the request body, never on a command line; nothing printed here carries a value.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from rules.names import is_secret_key
from rules.secretdata import encode
from rules.secretsapi import API_VERSION, VIEWS, WRITE_KIND

USAGE_EXAMPLES = """examples:
  kubectl smll secrets set stripe STRIPE_SECRET_KEY=sk_live_...      a value from the command line
  kubectl smll secrets set stripe TLS_CERT=@cert.pem                 a value from a file
  pass show stripe | kubectl smll secrets set stripe STRIPE_SECRET_KEY=-   a value from stdin
  kubectl smll secrets unset stripe OLD_KEY                          remove a key
  kubectl smll secrets delete stripe
  kubectl smll secrets list                                          keys, users, last changes: never values
  kubectl smll secrets show stripe
"""


class UsageError(Exception):
    pass


def parse_assignments(items: Sequence[str], stdin: BinaryIO) -> dict[str, bytes]:
    """``KEY=VALUE``, ``KEY=@FILE`` or ``KEY=-`` (stdin, once) → key → value bytes."""
    values: dict[str, bytes] = {}
    used_stdin = False
    for item in items:
        key, sep, source = item.partition("=")
        if not sep or not key:
            # Not echoed: a word without '=' may be a value typed without its key.
            raise UsageError("an argument has no KEY= part: give KEY=VALUE, KEY=@FILE or KEY=- (value on stdin)")
        if not is_secret_key(key):
            raise UsageError(f"{key!r} is not a valid Secret key: letters, digits, '-', '_' and '.'")
        if key in values:
            raise UsageError(f"{key} is given twice")
        if source == "-":
            if used_stdin:
                raise UsageError("only one key can read its value from stdin")
            used_stdin = True
            values[key] = stdin.read()
        elif source.startswith("@"):
            path = Path(source[1:]).expanduser()
            try:
                values[key] = path.read_bytes()
            except OSError as error:
                raise UsageError(f"{key}: cannot read {path}: {error.strerror}") from None
        else:
            values[key] = source.encode()
    return values


def secret_write(
    name: str, values: dict[str, bytes], remove: Sequence[str], allow_generated: bool
) -> dict[str, object]:
    spec: dict[str, object] = {"secretName": name}
    if values:
        spec["data"] = {key: encode(value) for key, value in values.items()}
    if remove:
        spec["remove"] = list(remove)
    if allow_generated:
        spec["allowGenerated"] = True
    return {"apiVersion": API_VERSION, "kind": WRITE_KIND, "spec": spec}


def kubectl_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    for option in ("kubeconfig", "context", "namespace", "as_user"):
        value = getattr(args, option)
        if value:
            flags.append(f"--{'as' if option == 'as_user' else option}={value}")
    flags += [f"--as-group={group}" for group in args.as_group or []]
    return flags


def kubectl() -> str:
    return os.environ.get("KUBECTL", "kubectl")


def run_write(args: argparse.Namespace, body: dict[str, object]) -> int:
    command = [kubectl(), *kubectl_flags(args), "create", "-f", "-", "-o", "json"]
    if args.dry_run:
        command.append("--dry-run=server")
    done = subprocess.run(command, input=json.dumps(body).encode(), capture_output=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        return done.returncode
    answer = json.loads(done.stdout)
    print(summary(answer))
    return 0


def summary(answer: dict[str, Any]) -> str:
    """One line from a SecretWrite answer (key names only; a key sent is ``set`` whether or not its value was the
    stored one: the server never says which)."""
    spec, status = answer.get("spec"), answer.get("status")
    if not isinstance(spec, dict) or not isinstance(status, dict):
        return "the server answered without a status"
    parts = [f"{field} {', '.join(status[field])}" for field in ("set", "removed") if status.get(field)]
    what = "created" if status.get("created") else "updated"
    return f"secret/{spec.get('secretName')} {what}: {'; '.join(parts) or 'nothing to change'}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl smll",
        description="Write Secrets key by key without reading them (the smll-secrets write-only API).",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", help="the namespace (default: the context's)")
    common.add_argument("--context", help="the kubeconfig context")
    common.add_argument("--kubeconfig", help="the kubeconfig file")
    common.add_argument("--as", dest="as_user", help="impersonate this user")
    common.add_argument("--as-group", action="append", help="impersonate this group (repeatable)")
    areas = top.add_subparsers(dest="area", required=True)
    secrets = areas.add_parser("secrets", help="Secrets through the write-only API", epilog=USAGE_EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    verbs = secrets.add_subparsers(dest="verb", required=True)
    set_ = verbs.add_parser("set", parents=[common], help="set keys (the Secret is created when missing)")
    set_.add_argument("name")
    set_.add_argument("assignments", nargs="+", metavar="KEY=VALUE|KEY=@FILE|KEY=-")
    set_.add_argument("--allow-generated", action="store_true", help="change keys of a database or registry Secret")
    set_.add_argument("--dry-run", action="store_true", help="have the server check it, write nothing")
    unset = verbs.add_parser("unset", parents=[common], help="remove keys")
    unset.add_argument("name")
    unset.add_argument("keys", nargs="+", metavar="KEY")
    unset.add_argument("--allow-generated", action="store_true", help=argparse.SUPPRESS)
    unset.add_argument("--dry-run", action="store_true", help="have the server check it, write nothing")
    delete = verbs.add_parser("delete", parents=[common], help="delete a Secret")
    delete.add_argument("name")
    listing = verbs.add_parser("list", parents=[common], help="Secrets with their keys, users and changes")
    listing.add_argument("-A", "--all-namespaces", action="store_true")
    show = verbs.add_parser("show", parents=[common], help="one Secret, key by key")
    show.add_argument("name")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.verb == "set":
            values = parse_assignments(args.assignments, sys.stdin.buffer)
            return run_write(args, secret_write(args.name, values, (), args.allow_generated))
        if args.verb == "unset":
            return run_write(args, secret_write(args.name, {}, args.keys, args.allow_generated))
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    resource = f"{VIEWS}.secrets.smll.io"
    if args.verb == "delete":
        command = [kubectl(), *kubectl_flags(args), "delete", resource, args.name]
    elif args.verb == "list":
        command = [kubectl(), *kubectl_flags(args), "get", resource, *(["-A"] if args.all_namespaces else [])]
    else:
        command = [kubectl(), *kubectl_flags(args), "describe", resource, args.name]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
