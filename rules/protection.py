"""Protection: who uses a Secret, reported as their top owners, and whether a delete or a key removal may go on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rules.names import PROTECTION, REVISION
from rules.references import How, Use, Via, secret_uses
from rules.text import LIMIT, counted, listed, noun
from rules.workloads import POD_KINDS, JsonObject, annotations_of, controller_reference, dict_or_empty

# Workloads that replace their own pods, revision by revision (a Deployment does it through ReplicaSets).
ROLLING_KINDS = frozenset({"StatefulSet", "DaemonSet"})
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Owner:
    kind: str
    name: str
    uid: str

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


@dataclass(frozen=True, slots=True)
class Referrer:
    """What the index keeps of one object that may reference Secrets: never the Secret values, only the uses.

    ``pods`` is how many pods the object runs by its own status (a ReplicaSet's or a Job's; 1 for a Pod that has
    not finished); ``idle`` says it runs none and will start none by itself: a ReplicaSet scaled to zero whose
    controller has seen that and has no pod left, a finished Job with no pod left, a Pod that has finished.
    """

    kind: str
    namespace: str
    name: str
    uid: str
    owner: Owner | None
    uses: tuple[Use, ...]
    pods: int = 0
    idle: bool = False
    scaled_down: bool = False  # a ReplicaSet asked for no pods, whose last ones may still be going
    revision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _activity(obj: JsonObject, kind: str) -> tuple[int, bool]:
    """(pods it runs, idle) by the object's own spec and status; see Referrer."""
    metadata, spec, status = (
        dict_or_empty(obj.get("metadata")),
        dict_or_empty(obj.get("spec")),
        dict_or_empty(obj.get("status")),
    )
    if kind == "Pod":
        finished = status.get("phase") in FINISHED_PHASES
        return (0, True) if finished else (1, False)
    if kind == "ReplicaSet":
        pods = _count(status.get("replicas")) + _count(status.get("terminatingReplicas"))
        wanted = spec.get("replicas", 1)
        # A status older than the spec may not show pods the controller has just made.
        current = _count(status.get("observedGeneration")) >= _count(metadata.get("generation"))
        return pods, wanted == 0 and pods == 0 and current
    if kind == "Job":
        pods = _count(status.get("active")) + _count(status.get("terminating"))
        finished = any(
            isinstance(condition, dict)
            and condition.get("type") in ("Complete", "Failed")
            and condition.get("status") == "True"
            for condition in status.get("conditions") or []
        )
        return pods, finished and pods == 0
    return 0, False


def referrer_of(obj: JsonObject, kind: str) -> Referrer:
    metadata = dict_or_empty(obj.get("metadata"))
    reference = controller_reference(obj)
    owner = None
    if reference is not None and reference.get("kind") in POD_KINDS:
        owner = Owner(str(reference["kind"]), str(reference.get("name", "")), str(reference.get("uid")))
    pods, idle = _activity(obj, kind)
    revision = annotations_of(obj).get(REVISION) if kind == "ReplicaSet" else None
    scaled_down = kind == "ReplicaSet" and dict_or_empty(obj.get("spec")).get("replicas", 1) == 0
    return Referrer(
        kind=kind,
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        owner=owner,
        uses=secret_uses(obj, kind),
        pods=pods,
        idle=idle,
        scaled_down=scaled_down,
        revision=revision,
    )


@dataclass(frozen=True)
class Usage:
    """Who would break if a Secret (or some of its keys) went, and what an allowed change should warn about.

    ``report``: top owner label → how it uses the Secret, for the referrers that run or may start pods.
    ``needed``: of the keys asked about, those such a use needs.
    ``dormant``: objects that still name the Secret but run no pods: ReplicaSets at zero replicas (a Deployment's
    revision history) — allowed, but starting them again would fail.
    """

    report: Mapping[str, tuple[str, ...]]
    needed: frozenset[str]
    dormant: tuple[Referrer, ...]


class _Attribution:
    """Names each use of a Secret for what it is, as its top owner sees it (see ``usage``)."""

    def __init__(self, referrers: list[Referrer], by_uid: Mapping[str, Referrer]) -> None:
        self.by_uid = by_uid
        # Pods that have not finished, by the object that owns them: a ReplicaSet's status can lag its pods.
        self.live_pods: dict[str, int] = {}
        for referrer in referrers:
            if referrer.kind == "Pod" and not referrer.idle and referrer.owner is not None:
                self.live_pods[referrer.owner.uid] = self.live_pods.get(referrer.owner.uid, 0) + 1

    def owner_of(self, referrer: Referrer) -> Referrer | None:
        return self.by_uid.get(referrer.owner.uid) if referrer.owner is not None else None

    def top_label(self, referrer: Referrer) -> str:
        seen = {referrer.uid}
        while referrer.owner is not None:
            owner = self.by_uid.get(referrer.owner.uid)
            if owner is None:
                return referrer.owner.label
            if owner.uid in seen:
                break
            seen.add(owner.uid)
            referrer = owner
        return referrer.label

    def old_copy(self, referrer: Referrer) -> str:
        """A ReplicaSet or Job made from a template its owner no longer has, while it still runs pods."""
        count = max(referrer.pods, self.live_pods.get(referrer.uid, 0))
        pods = counted(count, "pod")
        if referrer.kind == "ReplicaSet":
            return (
                f"old ReplicaSet {referrer.name}, {pods}, {'scaling down' if referrer.scaled_down else 'rolling out'}"
            )
        return f"old {referrer.kind} {referrer.name}, {pods}, not finished"

    def attribute(self, referrer: Referrer, use: Use, seen: frozenset[str] = frozenset()) -> tuple[str, How | str, str]:
        """(top owner label, how, old pod uid or ""): a use its owner has too is named as the owner names it; one
        the owner no longer has is named as the old ReplicaSet, Job or pods still running it. For an old pod the
        how is what its owner is doing ("rolling out" or "running"); ``usage`` counts the pods."""
        if referrer.owner is None or referrer.uid in seen:
            return referrer.label, use.how, ""
        owner = self.owner_of(referrer)
        if owner is None:
            # The owner is not known (a consistent read decodes only objects that name the Secret): it does not
            # use the Secret, so a copy of its template that does is an old one.
            how: How | str = self.old_copy(referrer) if referrer.kind in ("ReplicaSet", "Job") else use.how
            return referrer.owner.label, how, ""
        if use in owner.uses:
            return self.attribute(owner, use, seen | {referrer.uid})
        label = self.top_label(owner)
        if referrer.kind in ("ReplicaSet", "Job"):
            return label, self.old_copy(referrer), ""
        if referrer.kind == "Pod" and not use.for_image_pull:
            return label, "rolling out" if owner.kind in ROLLING_KINDS else "running", referrer.uid
        # A pull secret a Pod got from its ServiceAccount at admission: its owner's pods all use it.
        return label, use.how, ""


def usage(
    secret: str, referrers: Iterable[Referrer], by_uid: Mapping[str, Referrer], *, keys: frozenset[str] | None = None
) -> Usage:
    """How ``referrers`` use ``secret`` (only uses that need one of ``keys``, when keys are given).

    A ReplicaSet, Job or Pod that is idle never counts: a Deployment's revision history must not keep a user from
    "remove the references first, then delete". A use is named by its top owner when that owner has it itself
    (the current ReplicaSet and Pods of ``deployment/web`` are ``deployment/web (env API_KEY)``); one the owner no
    longer has is named as what still runs it (``deployment/web (old ReplicaSet web-6c4b599dd9, 1 pod, rolling
    out)``), never as a use of the owner.
    """
    referrers = list(referrers)
    attribution = _Attribution(referrers, by_uid)
    report: dict[str, set[How | str]] = {}
    old_pods: dict[tuple[str, How | str], set[str]] = {}
    needed: set[str] = set()
    dormant: list[Referrer] = []
    for referrer in referrers:
        uses = [u for u in referrer.uses if u.secret == secret and (keys is None or u.required_keys & keys)]
        if not uses:
            continue
        if referrer.idle:
            if referrer.kind == "ReplicaSet":
                dormant.append(referrer)
            continue
        for use in uses:
            label, how, old_pod = attribution.attribute(referrer, use)
            if old_pod:
                old_pods.setdefault((label, how), set()).add(old_pod)
            else:
                report.setdefault(label, set()).add(how)
            if keys is not None:
                needed |= use.required_keys & keys
    for (label, doing), pods in old_pods.items():
        report.setdefault(label, set()).add(f"{counted(len(pods), 'old pod')}, {doing}")
    for hows in report.values():
        # A link shows as the env var it put in place; name it once.
        hows -= {How(Via.LINK, how.name) for how in hows if isinstance(how, How) and how.via is Via.ENV}
    return Usage(
        report={label: tuple(sorted(str(how) for how in hows)) for label, hows in sorted(report.items())},
        needed=frozenset(needed),
        dormant=tuple(sorted(dormant, key=lambda r: (r.owner.label if r.owner else "", _revision_order(r), r.name))),
    )


def _revision_order(referrer: Referrer) -> int:
    return int(referrer.revision) if referrer.revision and referrer.revision.isdigit() else 0


def secret_subject(secret_name: str) -> str:
    return f'secret "{secret_name}"'


def keys_subject(secret_name: str, keys: frozenset[str]) -> str:
    return f"{noun(len(keys), 'key')} {listed(sorted(keys))} of {secret_subject(secret_name)}"


def usage_message(subject: str, report: Mapping[str, tuple[str, ...]], *, limit: int = LIMIT) -> str:
    parts = [f"{label} ({', '.join(hows)})" for label, hows in report.items()]
    return f"{subject} is used by {listed(parts, limit)}; remove these references first"


def dormant_warnings(subject: str, dormant: Iterable[Referrer]) -> list[str]:
    """For an allowed change: what still names the Secret though it runs nothing, and what starting it would do."""
    history: dict[str, list[Referrer]] = {}
    warnings: list[str] = []
    for referrer in dormant:
        if referrer.owner is not None and referrer.owner.kind == "Deployment":
            history.setdefault(referrer.owner.label, []).append(referrer)
        else:
            warnings.append(
                f"{referrer.label} is scaled to 0 but still names {subject}; scaling it up would start pods that fail"
            )
    for label, sets in history.items():
        targets = " or ".join(
            f"revision {r.revision} (ReplicaSet {r.name})" if r.revision else f"ReplicaSet {r.name}" for r in sets
        )
        warnings.append(
            f"the revision history of {label} still names {subject}: rolling back with kubectl rollout undo to "
            f"{targets} would fail to start"
        )
    return sorted(warnings)


def is_exempt(secret: JsonObject, *, namespace_terminating: bool) -> bool:
    """Never blocked: anything in a namespace being deleted, and a Secret that opted out of protection."""
    return namespace_terminating or annotations_of(secret).get(PROTECTION) == "disabled"


def removed_keys(old: JsonObject, new: JsonObject) -> frozenset[str]:
    def keys(obj: JsonObject) -> frozenset[str]:
        data = obj.get("data")
        return frozenset(data) if isinstance(data, dict) else frozenset()

    return keys(old) - keys(new)


def delete_refusal(secret_name: str, report: Mapping[str, tuple[str, ...]]) -> str | None:
    return usage_message(secret_subject(secret_name), report) if report else None


def key_removal_refusal(secret_name: str, keys: frozenset[str], report: Mapping[str, tuple[str, ...]]) -> str | None:
    return usage_message(keys_subject(secret_name, keys), report) if report else None
