"""Protection: who uses a Secret, reported as their top owners, and whether a delete or a key removal may go on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rules.names import PROTECTION
from rules.references import Use, secret_uses
from rules.workloads import JsonObject, annotations_of

REFERRER_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"})
MESSAGE_LIMIT = 5


@dataclass(frozen=True, slots=True)
class Referrer:
    """What the index keeps of one object that may reference Secrets: never the Secret values, only the uses."""

    kind: str
    namespace: str
    name: str
    uid: str
    owner_uid: str | None
    uses: tuple[Use, ...]

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def referrer_of(obj: JsonObject, kind: str) -> Referrer:
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    owner_uid = None
    for reference in metadata.get("ownerReferences") or []:
        if (
            isinstance(reference, dict)
            and reference.get("controller") is True
            and reference.get("kind") in REFERRER_KINDS
        ):
            owner_uid = str(reference.get("uid"))
    return Referrer(
        kind=kind,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        owner_uid=owner_uid,
        uses=secret_uses(obj, kind),
    )


def top_owner(referrer: Referrer, by_uid: Mapping[str, Referrer]) -> Referrer:
    """The referrer to report: the ReplicaSet of a Deployment and its Pods are reported as the Deployment."""
    seen = {referrer.uid}
    while referrer.owner_uid is not None and referrer.owner_uid in by_uid and referrer.owner_uid not in seen:
        referrer = by_uid[referrer.owner_uid]
        seen.add(referrer.uid)
    return referrer


def usage(
    secret: str, referrers: Iterable[Referrer], by_uid: Mapping[str, Referrer], *, keys: frozenset[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Top owner label → how it uses ``secret`` (only uses that need one of ``keys``, when keys are given)."""
    report: dict[str, set[str]] = {}
    for referrer in referrers:
        hows = {use.how for use in referrer.uses if use.secret == secret and (keys is None or use.required_keys & keys)}
        # A link shows as the env var it put in place; name it once.
        hows -= {f"link {how[4:]}" for how in hows if how.startswith("env ")}
        if hows:
            report.setdefault(top_owner(referrer, by_uid).label, set()).update(hows)
    return {label: tuple(sorted(hows)) for label, hows in sorted(report.items())}


def usage_message(subject: str, report: Mapping[str, tuple[str, ...]], *, limit: int = MESSAGE_LIMIT) -> str:
    parts = [f"{label} ({', '.join(hows)})" for label, hows in report.items()]
    shown = ", ".join(parts[:limit])
    if len(parts) > limit:
        shown += f" and {len(parts) - limit} more"
    return f"{subject} is used by {shown}; remove these references first"


def is_exempt(secret: JsonObject, *, namespace_terminating: bool) -> bool:
    """Never blocked: anything in a namespace being deleted, and a Secret that opted out of protection."""
    return namespace_terminating or annotations_of(secret).get(PROTECTION) == "disabled"


def removed_keys(old: JsonObject, new: JsonObject) -> frozenset[str]:
    def keys(obj: JsonObject) -> frozenset[str]:
        data = obj.get("data")
        return frozenset(data) if isinstance(data, dict) else frozenset()

    return keys(old) - keys(new)


def delete_refusal(secret_name: str, report: Mapping[str, tuple[str, ...]]) -> str | None:
    return usage_message(f'secret "{secret_name}"', report) if report else None


def key_removal_refusal(secret_name: str, keys: frozenset[str], report: Mapping[str, tuple[str, ...]]) -> str | None:
    if not report:
        return None
    noun = "key" if len(keys) == 1 else "keys"
    return usage_message(f'{noun} {", ".join(sorted(keys))} of secret "{secret_name}"', report)
