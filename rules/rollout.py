"""Rollouts: which services roll, and for which changes. Plain functions over plain dicts.

A service's state is, per Secret it uses, a keyed digest of each key it reads. The digests are HMAC-SHA256 under a
key the controller keeps in a Secret of its own, so the annotation that stores them reveals nothing about the
values (a plain hash of a short password could be brute-forced). Each digest is bound to where its value lives (the
namespace, the Secret, the key): the annotation is readable with ``view``, and equal digests must never tell that two
Secrets, in one namespace or two, hold the same value. The state last rolled for is kept on the workload itself, so
restarts and failover never roll anything, and a change made while the controller was down is found when it is back.

The recorded state's text starts with ``FORMAT``. A record without it holds the digests of the versions before
(``legacy_key_digests``): ``migrate`` turns it into this format, once, without rolling what did not change.
"""

from __future__ import annotations

import functools
import hmac
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from rules.names import AUTO_ROLLOUT, GENERATED_TYPES, LINK_PREFIX, SECRET_TYPE_LABEL
from rules.references import Use
from rules.secretdata import decode
from rules.text import noun
from rules.workloads import compact_json, json_object

ABSENT = "-"  # the digest of a key that does not exist
WHOLE = "*"  # marks a Secret the service reads whole (envFrom, a volume without items): every key counts
DIGEST_CHARS = 16

# secret name → key → digest
State = dict[str, dict[str, str]]


@functools.lru_cache(maxsize=4)
def _keyed(hmac_key: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 with the key already absorbed: each digest copies it instead of hashing the key again (the
    controller digests every key of every Secret at start-up, and this halves the cost of each)."""
    return hmac.new(hmac_key, digestmod="sha256")


def key_digests(data: Mapping[str, str], hmac_key: bytes, *, namespace: str, secret: str) -> dict[str, str]:
    """Per-key digests of the Secret ``namespace``/``secret``'s ``data`` (base64 values, as the API returns them):
    HMAC-SHA256(key, namespace NUL secret NUL key NUL value), cut to ``DIGEST_CHARS`` hex digits. Values are not
    kept. The same value in another Secret or namespace has another digest (names cannot hold a NUL, so no two
    places share a message). The digests are stored on services (``rolled-for``), so they never change between
    versions without a new ``FORMAT`` and a ``migrate`` from the one before."""
    keyed = _keyed(hmac_key).copy()  # the place once per Secret; each key copies it
    keyed.update(f"{namespace}\0{secret}\0".encode())
    return _digests(keyed, data)


def _digests(keyed: hmac.HMAC, data: Mapping[str, str]) -> dict[str, str]:
    digests = {}
    for key, encoded in data.items():
        try:
            value = decode(encoded)
        except ValueError:
            value = encoded.encode()
        mac = keyed.copy()
        mac.update(key.encode() + b"\0" + value)
        # Key names repeat across Secrets (thousands of DATABASE_URL): one string each, however many are kept.
        digests[sys.intern(key)] = mac.digest()[: DIGEST_CHARS // 2].hex()
    return digests


def legacy_key_digests(data: Mapping[str, str], hmac_key: bytes) -> dict[str, str]:
    """MIGRATION ONLY: the digests of the versions before ``FORMAT`` (HMAC-SHA256(key, key NUL value), bound to no
    Secret: equal values had equal digests everywhere). Computed only to read a record those versions wrote
    (``migrate``); never recorded."""
    return _digests(_keyed(hmac_key), data)


def opted_in(annotations: Mapping[str, str], template_annotations: Mapping[str, str]) -> bool:
    """Services with link annotations roll by default; any service can opt in or out with auto-rollout."""
    choice = annotations.get(AUTO_ROLLOUT, template_annotations.get(AUTO_ROLLOUT))
    if choice is not None:
        return choice.strip().lower() == "true"
    return any(k.startswith(LINK_PREFIX) for k in (*annotations, *template_annotations))


def opted_out(annotations: Mapping[str, str], template_annotations: Mapping[str, str]) -> bool:
    """``auto-rollout: "false"`` (on the workload, or else its pod template): the one way to keep even a rotation of
    generated credentials from rolling the service."""
    choice = annotations.get(AUTO_ROLLOUT, template_annotations.get(AUTO_ROLLOUT))
    return choice is not None and choice.strip().lower() == "false"


def is_generated(labels: Mapping[str, str]) -> bool:
    """A Secret the product generates and rotates (database, registry credentials)."""
    return labels.get(SECRET_TYPE_LABEL) in GENERATED_TYPES


def rolling_uses(
    uses: Iterable[Use], *, opted_in: bool, opted_out: bool, generated: Collection[str]
) -> tuple[Use, ...]:
    """The uses whose changes roll the service: all of them when it opted in (links, or auto-rollout "true"); else
    only those of generated Secrets (``generated``: their names), since a rotation retires the old credentials and
    a reader left unrolled would lose them — unless it opted out with auto-rollout "false"."""
    if opted_out:
        return ()
    if opted_in:
        return tuple(uses)
    return tuple(use for use in uses if use.secret in generated)


def current_state(uses: Iterable[Use], secrets: Mapping[str, Mapping[str, str] | None]) -> State:
    """What the service reads now: for each Secret it uses, the digests of the keys it reads.

    ``secrets`` maps a Secret name to its key digests, or None when the Secret does not exist.
    """
    wanted: dict[str, set[str] | None] = {}
    for use in uses:
        if use.secret in wanted and wanted[use.secret] is None:
            continue
        wanted[use.secret] = None if use.keys is None else {*(wanted.get(use.secret) or set()), *use.keys}
    state: State = {}
    for secret, keys in wanted.items():
        digests = secrets.get(secret) or {}
        names = set(digests) if keys is None else keys
        state[secret] = {key: digests.get(key, ABSENT) for key in sorted(names)}
        if keys is None:
            state[secret][WHOLE] = WHOLE
    return state


FORMAT = "v2:"  # the recorded state's prefix: digests bound to (namespace, Secret); no prefix: the versions before
CHANGED = "?"  # in a migrated record: a key whose value is no longer the one its old digest was of


@dataclass(frozen=True)
class Recorded:
    """The state a service was last rolled for, as stored. ``legacy``: written by a version before ``FORMAT``, its
    digests those of ``legacy_key_digests`` — compare it only through ``migrate``."""

    state: State
    legacy: bool = False


def parse_recorded(text: str | None) -> Recorded | None:
    """The stored state, or None when there is none (a service seen for the first time) or it is unreadable."""
    if not text:
        return None
    legacy = not text.startswith(FORMAT)
    found = json_object(text if legacy else text[len(FORMAT) :])
    if found is None:
        return None
    state = {
        str(secret): {str(k): str(v) for k, v in keys.items()}
        for secret, keys in found.items()
        if isinstance(keys, dict)
    }
    return Recorded(state, legacy)


def parse_state(text: str | None) -> State | None:
    """The stored state in this ``FORMAT``; None when there is none, it is unreadable, or it is a legacy record
    (its digests compare with no current digest: ``migrate`` reads it)."""
    recorded = parse_recorded(text)
    return None if recorded is None or recorded.legacy else recorded.state


def format_state(state: State) -> str:
    return FORMAT + compact_json(state)


def migrate(
    stored: State,
    legacy: Mapping[str, Mapping[str, str] | None],
    current: Mapping[str, Mapping[str, str] | None],
) -> State:
    """A legacy record in this format, for ``decide``. ``legacy`` and ``current``: per Secret, its data's digests by
    ``legacy_key_digests`` and by ``key_digests`` (None: the Secret does not exist), from one reading of it.

    A key whose old digest is that of the Secret's data takes its current digest (unchanged: nothing rolls, the
    record is rewritten); any other is ``CHANGED``, which equals no digest, so ``decide`` rolls for it once — the
    change was made while the controller was down, or by the upgrade's own moment. ``ABSENT`` and ``WHOLE`` mean
    what they meant."""
    migrated: State = {}
    for secret, keys in stored.items():
        old = legacy.get(secret) or {}
        new = current.get(secret) or {}
        migrated[secret] = {}
        for key, digest in keys.items():
            if digest == WHOLE:
                migrated[secret][key] = WHOLE
            elif old.get(key, ABSENT) == digest:
                migrated[secret][key] = new.get(key, ABSENT)
            else:
                migrated[secret][key] = CHANGED
    return migrated


# secret name → the keys new pods would miss and fail on; () when the whole Secret is missing
Missing = Mapping[str, tuple[str, ...]]


def missing_needs(uses: Iterable[Use], secrets: Mapping[str, Mapping[str, str] | None]) -> dict[str, tuple[str, ...]]:
    """What a pod started now could not start without: a Secret that does not exist, or a key it lacks, for a use
    that is not optional. (``secrets`` as for ``current_state``.) An optional use starts without them."""
    missing: dict[str, set[str] | None] = {}
    for use in uses:
        if use.optional:
            continue
        digests = secrets.get(use.secret)
        if digests is None:
            missing[use.secret] = None
        elif use.keys is not None and (lacking := use.keys - set(digests)):
            found = missing.get(use.secret, set())
            if found is not None:
                missing[use.secret] = found | lacking
    return {secret: tuple(sorted(keys or ())) for secret, keys in sorted(missing.items())}


@dataclass(frozen=True)
class Decision:
    """``roll``: roll out for ``changed``; ``record``: store ``state`` without rolling; neither: nothing to do.

    ``held``: the data changed, but new pods could not start for what is ``missing`` — nothing rolls and nothing
    is recorded, so the change is still seen (and rolled) once what is missing is back with new values.
    """

    roll: bool
    record: bool
    changed: Mapping[str, tuple[str, ...]]
    held: Missing = field(default_factory=dict)


def decide(stored: State | None, current: State, missing: Missing | None = None) -> Decision:
    """Compare what the service was last rolled for with what it reads now.

    Only a key present in both whose digest differs is a change (a key that appears or disappears from the
    Secret counts too: its digest is ABSENT on one side). A Secret or key the service starts or stops reading is
    not a change of data: the template change that made it so rolls the service already. A change never rolls a
    service into pods that cannot start: while a Secret or key that a non-optional use needs is ``missing`` (see
    ``missing_needs``), the rollout is held — a Secret that disappears rolls only services whose use is optional.
    """
    if stored is None:
        return Decision(roll=False, record=True, changed={})
    changed: dict[str, tuple[str, ...]] = {}
    for secret, keys in current.items():
        before = stored.get(secret)
        if before is None:
            continue
        if WHOLE in keys and WHOLE in before:
            # Read whole: a key added or removed is a change too.
            names = (set(keys) | set(before)) - {WHOLE}
        else:
            names = set(keys) & set(before)
        if differing := tuple(sorted(k for k in names if keys.get(k, ABSENT) != before.get(k, ABSENT))):
            changed[secret] = differing
    if changed and missing:
        return Decision(roll=False, record=False, changed=changed, held=missing)
    if changed:
        return Decision(roll=True, record=True, changed=changed)
    return Decision(roll=False, record=stored != current, changed={})


def describe_changes(changed: Mapping[str, tuple[str, ...]]) -> str:
    """For the Event: names of Secrets and keys, never values."""
    return "; ".join(f"secret {secret!r} changed keys {', '.join(keys)}" for secret, keys in sorted(changed.items()))


def describe_missing(missing: Missing) -> str:
    """For the Event of a held rollout: names of Secrets and keys, never values."""
    return "; ".join(
        f"secret {secret!r} has no {noun(len(keys), 'key')} {', '.join(keys)}"
        if keys
        else f"secret {secret!r} does not exist"
        for secret, keys in sorted(missing.items())
    )
