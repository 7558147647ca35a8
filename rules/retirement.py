"""Retiring what a rotation replaced: the rule the Database feature (the previous login) and the registry (the
previous password's entry) both follow.

After a rotation the old credentials are kept until every service reading the credentials Secret has rolled out,
completely, to the Secret's current data — or the grace period has passed, rolled or not. A reader that opted out
of rollouts (``secrets.smll.io/auto-rollout: "false"``) is waited for too (its owner may roll it by hand), until
the grace period ends.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rules.names import ROLLOUT_STATE
from rules.references import secret_uses
from rules.rollout import current_state, opted_out, parse_state
from rules.workloads import JsonObject, annotations_of, pod_template, rollout_complete


@dataclass(frozen=True)
class Reader:
    """A Deployment, StatefulSet or DaemonSet that reads the credentials Secret."""

    kind: str  # Deployment, StatefulSet or DaemonSet
    workload: str  # its name, in the Secret's namespace
    rolled: bool  # rolled out, completely, to the Secret's current data
    opted_out: bool  # secrets.smll.io/auto-rollout: "false": never rolled by the controller
    uid: str = ""

    @property
    def name(self) -> str:
        """As messages and status show it: kind/name, e.g. deployment/api."""
        return f"{self.kind.lower()}/{self.workload}"


@dataclass(frozen=True)
class Retirement:
    drop: bool
    why: str  # for the OldLoginDropped Event, when dropping
    waiting: tuple[str, ...]  # readers not yet rolled (opted out ones included)
    opted_out: tuple[Reader, ...]  # readers that will not be rolled by the controller
    drop_at: datetime.datetime


def retirement(
    readers: Sequence[Reader], *, rotated_at: datetime.datetime, grace: datetime.timedelta, now: datetime.datetime
) -> Retirement:
    """Whether to drop the previous login now: once every reader has rolled, or when the grace period has passed,
    rolled or not. A reader that opted out of rollouts is waited for too (its owner may roll it by hand) — until
    the grace period ends."""
    waiting = tuple(sorted(reader.name for reader in readers if not reader.rolled))
    opted_out = tuple(sorted((r for r in readers if not r.rolled and r.opted_out), key=lambda r: r.name))
    drop_at = rotated_at + grace
    if not waiting:
        return Retirement(True, "every service using the credentials has rolled", waiting, opted_out, drop_at)
    if now >= drop_at:
        return Retirement(True, "the grace period after the rotation has passed", waiting, opted_out, drop_at)
    return Retirement(False, "", waiting, opted_out, drop_at)


def reader_of(item: JsonObject, kind: str, secret: str, digests: Mapping[str, str]) -> Reader | None:
    """The workload ``item`` (of ``kind``) as a reader of Secret ``secret``, whose current data has these key
    digests (``rules.rollout.key_digests``); None when it does not read that Secret. Rolled: its stored rollout
    state is the Secret's current data, and its rollout is complete."""
    uses = [use for use in secret_uses(item, kind) if use.secret == secret]
    if not uses:
        return None
    want = current_state(uses, {secret: digests})
    annotations = annotations_of(item)
    stored = parse_state(annotations.get(ROLLOUT_STATE)) or {}
    metadata = item.get("metadata") or {}
    return Reader(
        kind,
        str(metadata.get("name", "")),
        rolled=stored.get(secret) == want[secret] and rollout_complete(item, kind),
        opted_out=opted_out(annotations, annotations_of(pod_template(item, kind))),
        uid=str(metadata.get("uid", "")),
    )
