"""The write-only Secrets API (group ``secrets.smll.io``): what a request asks, what it does to a Secret, and what
the answer shows. Plain functions over dicts; the edge (webhook/secretsapi.py) reads and writes, and the API's
protocol (discovery, Status and Table bodies, front-proxy identity, the access review) is webhook/apiprotocol.py.

Two resources, both namespaced:

- ``writeonlysecrets`` (kind ``WriteOnlySecret``; get, list, delete): a Secret as its key names, its type, who
  uses each key and when each key last changed, with the product page's best-practice advice. Never a value.
- ``secretwrites`` (kind ``SecretWrite``; create only, like an Eviction): set keys of one Secret (creating it if
  needed) and remove keys. Values travel in the request body only; the answer names keys.
"""

from __future__ import annotations

import datetime
import functools
import heapq
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rules.keynames import vague_key
from rules.names import (
    AUTO_ROLLOUT,
    COMPONENT_LABEL,
    DATABASE_TYPE,
    GENERATED_TYPES,
    KEYS_CHANGED_AT,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    PRODUCT,
    PROTECTION,
    REGISTRY_TYPE,
    ROTATE,
    ROTATED_AT,
    ROTATION_SEEN,
    SECRET_TYPE_LABEL,
    VPC_LABEL,
    is_namespace_name,
    is_secret_key,
    is_secret_name,
)
from rules.protection import Referrer, usage
from rules.references import Use
from rules.secretdata import decode, encode
from rules.text import LIMIT, listed
from rules.times import format_time, parse_time
from rules.workloads import JsonObject, compact_json

GROUP = "secrets.smll.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
VIEW_KIND = "WriteOnlySecret"
VIEWS = "writeonlysecrets"
WRITE_KIND = "SecretWrite"
WRITES = "secretwrites"
CUSTOM_TYPE = "custom"

# Keys written other than through the API are dated by the Secret's managedFields (see ``key_changes``).
FIELD_MANAGER = "smll-secrets-api"
# What the apiserver accepts in one Secret: the decoded values together.
MAX_SECRET_BYTES = 1024 * 1024
# The values a write keeps are counted rounded up to this step (see ``_check_size``): no answer tells their size
# more precisely, and a write may be refused up to this much before the apiserver's limit.
SIZE_STEP = 64 * 1024
DEFAULT_STALE_AFTER = datetime.timedelta(days=90)

# What a view shows of a Secret's metadata: the product's own names, nothing else. Any other annotation may hold a
# value (``kubectl apply`` keeps the whole manifest, stringData included, in last-applied-configuration), and so may
# a label. The Secret's resourceVersion is left out too: it would tell whether a write changed the stored value.
VIEW_METADATA = ("name", "namespace", "uid", "creationTimestamp")
VIEW_ANNOTATIONS = frozenset({PROTECTION, AUTO_ROLLOUT, ROTATE, ROTATED_AT, ROTATION_SEEN})
VIEW_LABELS = frozenset({SECRET_TYPE_LABEL, VPC_LABEL, NAME_LABEL, COMPONENT_LABEL, MANAGED_BY_LABEL})

# The Kubernetes types of Secret this API writes: Opaque; the product's generated ones (by their label, and for a
# pull secret its managed-by label too) with allowGenerated; any other only when the chart lists it
# (secretsApi.allowedTypes). Why the others are refused, in the refusal's words:
OPAQUE = "Opaque"
DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
GENERATED_SHAPES = {DATABASE_TYPE: OPAQUE, REGISTRY_TYPE: DOCKERCONFIGJSON}
WHY_NOT = {
    "helm.sh/release.v1": "a Helm release record (Helm applies it on rollback with the deployer's rights)",
    "kubernetes.io/service-account-token": "a ServiceAccount's token",
    "kubernetes.io/tls": "a TLS key pair (a certificate's private key)",
    DOCKERCONFIGJSON: "an image pull secret smll-secrets did not make",
    "kubernetes.io/dockercfg": "an image pull secret",
    "bootstrap.kubernetes.io/token": "a node bootstrap token",
    "kubernetes.io/basic-auth": "credentials another tool reads by their type",
    "kubernetes.io/ssh-auth": "an SSH key another tool reads by its type",
}
# The listing reads Secrets page by page, a page at most this long: a Secret holds up to 1 MiB of values, so a page
# can hold PAGE MiB (and about as much again decoded) until its key names are read and its values dropped.
PAGE = 10

# What a view carries of a big Secret: every key name (the API's promise), but of each key at most USERS_SHOWN
# users (``moreUsers`` counts the rest), of each user at most HOWS_SHOWN ways it reads the key, at most LIMIT keys
# named in one advice line, and at most KEYS_SHOWN keys in the Table's KEYS column.
USERS_SHOWN = LIMIT
HOWS_SHOWN = LIMIT
KEYS_SHOWN = 10

JsonList = list[JsonObject]


class ApiError(Exception):
    """A refusal, answered as a ``Status`` with ``code`` and ``reason``; the message says what to fix."""

    def __init__(self, code: int, reason: str, message: str, *, causes: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.causes = tuple(causes)


def invalid(message: str, *causes: tuple[str, str]) -> ApiError:
    return ApiError(422, "Invalid", message, causes=causes)


def check_path(namespace: str, name: str | None = None) -> None:
    """Refuse (400) a request whose path names a namespace or a Secret Kubernetes never would ("shop\\n", "..",
    "Shop"), before any access review or API call carries it. An empty namespace is a listing of every namespace."""
    if namespace and not is_namespace_name(namespace):
        raise ApiError(
            400,
            "BadRequest",
            f"{namespace!r} is not a valid namespace name: lower-case letters, digits and '-', at most 63 characters",
        )
    if name is not None and not is_secret_name(name):
        raise ApiError(
            400,
            "BadRequest",
            f"{name!r} is not a valid Secret name: lower-case letters, digits, '-' and '.', at most 253 characters",
        )


def not_found(namespace: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'secret "{name}" not found in namespace "{namespace}"')


# ---------------------------------------------------------------------------------------------------------------
# Writes


@dataclass(frozen=True)
class WriteRequest:
    namespace: str
    secret: str
    set: Mapping[str, bytes] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()
    allow_generated: bool = False


def _spec_map(spec: JsonObject, name: str) -> JsonObject:
    value = spec.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"spec.{name} must be a map of key name to value", (f"spec.{name}", "not a map"))
    return value


def parse_write(body: Any, namespace: str) -> WriteRequest:
    """A ``SecretWrite`` body → the request, or an ApiError naming what to fix. ``spec.data`` holds base64 values
    (as a Secret's ``data``), ``spec.stringData`` plain text; ``spec.remove`` lists keys to remove."""
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", f"the body must be a {WRITE_KIND} object")
    if body.get("kind") not in (None, WRITE_KIND) or body.get("apiVersion") not in (None, API_VERSION):
        raise ApiError(
            400,
            "BadRequest",
            f"expected kind {WRITE_KIND} of {API_VERSION}, got {body.get('kind')} of {body.get('apiVersion')}",
        )
    metadata = body.get("metadata") or {}
    if isinstance(metadata, dict) and metadata.get("namespace") not in (None, "", namespace):
        raise ApiError(400, "BadRequest", f"metadata.namespace {metadata['namespace']} does not match {namespace}")
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise invalid("spec is required: spec.secretName and spec.data, spec.stringData or spec.remove")
    secret = spec.get("secretName")
    problems: list[tuple[str, str]] = []
    if not isinstance(secret, str) or not is_secret_name(secret):
        problems.append(
            (
                "spec.secretName",
                f"{secret!r} is not a valid Secret name: lower-case letters, digits, '-' and '.', starting and "
                "ending with a letter or digit",
            )
        )
    values: dict[str, bytes] = {}
    for key, value in _spec_map(spec, "data").items():
        if not isinstance(value, str):
            problems.append((f"spec.data[{key}]", "must be a base64 string"))
            continue
        try:
            values[key] = decode(value)
        except ValueError:
            problems.append((f"spec.data[{key}]", "is not valid base64 (use spec.stringData for plain text)"))
    for key, value in _spec_map(spec, "stringData").items():
        if not isinstance(value, str):
            problems.append((f"spec.stringData[{key}]", "must be a string"))
        elif key in values:
            problems.append((f"spec.stringData[{key}]", "is also in spec.data: give each key once"))
        else:
            values[key] = value.encode()
    remove = spec.get("remove") or []
    if not isinstance(remove, list) or not all(isinstance(key, str) for key in remove):
        problems.append(("spec.remove", "must be a list of key names"))
        remove = []
    for key in [*values, *remove]:
        if not is_secret_key(key):
            problems.append(
                (f"key {key!r}", "is not a valid Secret key: letters, digits, '-', '_' and '.', at most 253 characters")
            )
    both = sorted(set(values) & set(remove))
    if both:
        problems.append(("spec.remove", f"{', '.join(both)} also set: a write sets or removes a key, not both"))
    if not values and not remove:
        problems.append(("spec", "nothing to do: give spec.data, spec.stringData or spec.remove"))
    allow = spec.get("allowGenerated", False)
    if not isinstance(allow, bool):
        problems.append(("spec.allowGenerated", "must be true or false"))
    if problems:
        raise invalid(
            f"{WRITE_KIND} is invalid: " + "; ".join(f"{where}: {what}" for where, what in problems), *problems
        )
    return WriteRequest(namespace, str(secret), values, frozenset(remove), allow is True)


def secret_type(secret: JsonObject) -> str:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    found = labels.get(SECRET_TYPE_LABEL)
    return str(found) if found in GENERATED_TYPES else CUSTOM_TYPE


@dataclass(frozen=True)
class WriteResult:
    """What a write answers. Never whether a value sent equals the stored one: a key sent is ``set`` (and stamped
    as changed) either way, or the answer would be an oracle for the stored value."""

    created: bool = False
    set: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def kubernetes_type(secret: JsonObject) -> str:
    return str(secret.get("type") or OPAQUE)


def generated_kind(secret: JsonObject) -> str | None:
    """``database`` or ``registry`` for a Secret labelled as one the product generates, in that kind's shape (a pull
    secret also labelled as managed by the product: the label alone does not make a foreign one the product's)."""
    kind = secret_type(secret)
    if kind not in GENERATED_TYPES:
        return None
    shape = GENERATED_SHAPES[kind]
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if kubernetes_type(secret) != shape or (shape != OPAQUE and labels.get(MANAGED_BY_LABEL) != PRODUCT):
        return None
    return kind


def check_writable(secret: JsonObject, allowed_types: frozenset[str], *, verb: str) -> None:
    """Refuse (403, with the reason) a write or delete of a Secret this API is not for: any type but Opaque, the
    product's generated ones and the types the chart lists (``secretsApi.allowedTypes``)."""
    kind = kubernetes_type(secret)
    if kind == OPAQUE or kind in allowed_types or generated_kind(secret) is not None:
        return
    name = str((secret.get("metadata") or {}).get("name", ""))
    what = WHY_NOT.get(kind, "not a Secret of the application's own keys")
    raise ApiError(
        403,
        "Forbidden",
        f'secret "{name}" is of type {kind}, {what}: the write-only API {verb}s Opaque Secrets (and, with '
        "allowGenerated, the database and registry Secrets smll-secrets generates); to let it write this type, "
        "list it in the chart value secretsApi.allowedTypes",
    )


def _stamps(metadata: JsonObject) -> dict[str, str]:
    try:
        found = json.loads(((metadata.get("annotations") or {}).get(KEYS_CHANGED_AT)) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def plan_write(
    current: JsonObject | None,
    request: WriteRequest,
    now: datetime.datetime,
    allowed_types: frozenset[str] = frozenset(),
) -> tuple[JsonObject, WriteResult]:
    """What to write (a whole Secret: POST it when ``current`` is None, else PUT it with the resourceVersion it
    carries) and what the answer reports. Raises ApiError when the request cannot be done: a Secret of a type this
    API does not write, a remove on a missing Secret or key, a generated Secret without ``allowGenerated``, a Secret
    too large.

    Every key sent is written and stamped as changed now, whether its value was the stored one or not: the answer,
    the stamp and the listing are the same either way (no oracle for the stored value)."""
    name, namespace = request.secret, request.namespace
    if current is None:
        if request.remove:
            raise not_found(namespace, name)
        data = {key: encode(value) for key, value in sorted(request.set.items())}
        _check_size(name, data, {})
        metadata: JsonObject = {
            "name": name,
            "namespace": namespace,
            "annotations": {KEYS_CHANGED_AT: compact_json(dict.fromkeys(data, format_time(now)))},
        }
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": data}
        return body, WriteResult(created=True, set=tuple(data))
    check_writable(current, allowed_types, verb="write")
    data = dict(current.get("data") or {})
    missing = sorted(request.remove - set(data))
    if missing:
        raise ApiError(
            404,
            "NotFound",
            f'secret "{name}" has no key {", ".join(missing)} (its keys: {", ".join(sorted(data)) or "none"})',
        )
    kind = secret_type(current)
    if kind in GENERATED_TYPES:
        _check_generated(name, kind, request, data)
    changed = sorted(request.set)
    removed = sorted(request.remove)
    for key in changed:
        data[key] = encode(request.set[key])
    for key in removed:
        del data[key]
    _check_size(name, {key: data[key] for key in changed}, {k: v for k, v in data.items() if k not in request.set})
    new = {k: v for k, v in current.items() if k not in ("data", "stringData")}
    new_metadata = dict(current.get("metadata") or {})
    new_metadata.pop("managedFields", None)
    stamps = _stamps(new_metadata)
    stamps.update(dict.fromkeys(changed, format_time(now)))
    for key in removed:
        stamps.pop(key, None)
    new_metadata["annotations"] = {**(new_metadata.get("annotations") or {}), KEYS_CHANGED_AT: compact_json(stamps)}
    new["metadata"] = new_metadata
    new["data"] = data
    return new, WriteResult(set=tuple(changed), removed=tuple(removed))


def _check_generated(name: str, kind: str, request: WriteRequest, data: Mapping[str, str]) -> None:
    if not request.allow_generated:
        raise ApiError(
            409,
            "Conflict",
            f'secret "{name}" is generated by smll-secrets ({SECRET_TYPE_LABEL}: {kind}) and is rewritten on rotation; '
            "set spec.allowGenerated: true (kubectl smll secrets set --allow-generated) to change its keys anyway",
        )
    extra = sorted(set(request.set) - set(data)) + sorted(request.remove)
    if extra:
        raise ApiError(
            409,
            "Conflict",
            f'secret "{name}" ({SECRET_TYPE_LABEL}: {kind}) holds exactly its contract keys '
            f"({', '.join(sorted(data))}); {', '.join(extra)} cannot be added or removed, only existing keys set",
        )


def _size(data: Mapping[str, str]) -> int:
    return sum(len(decode(value)) for value in data.values()) + sum(len(key) for key in data)


def too_large(name: str) -> ApiError:
    """The one refusal of a write that would make the Secret too large: it carries no size (see ``_check_size``)."""
    return ApiError(
        413,
        "RequestEntityTooLarge",
        f'secret "{name}" would hold more than a Secret holds (1 MiB, less up to {SIZE_STEP // 1024} KiB kept free '
        "by the write-only API): split it or keep large files out of Secrets",
    )


def _check_size(name: str, sent: Mapping[str, str], kept: Mapping[str, str]) -> None:
    """Refuse a write that would make the Secret too large, telling the writer nothing of the size of the values
    it may not read: a request too large by itself is answered with its own size; otherwise the values kept are
    counted rounded up to SIZE_STEP, so that padding dry-run writes byte by byte finds only that step, never the
    stored size to the byte. A write let through is never over the apiserver's limit either, so its exact refusal
    is never what answers (the edge answers any size refusal of the apiserver with ``too_large`` all the same)."""
    own = _size(sent)
    if own > MAX_SECRET_BYTES:
        raise ApiError(
            413,
            "RequestEntityTooLarge",
            f"the write sends {own} bytes; a Secret holds at most {MAX_SECRET_BYTES} (1 MiB): split it or keep large "
            "files out of Secrets",
        )
    rounded = -(-_size(kept) // SIZE_STEP) * SIZE_STEP
    if own + rounded > MAX_SECRET_BYTES:
        raise too_large(name)


def write_answer(request: WriteRequest, result: WriteResult) -> JsonObject:
    """The answer to a ``SecretWrite``: the request without its values, and what happened, key by key. No
    resourceVersion: whether it moved would tell whether a value sent was the stored one."""
    return {
        "apiVersion": API_VERSION,
        "kind": WRITE_KIND,
        "metadata": {"name": request.secret, "namespace": request.namespace, "creationTimestamp": None},
        "spec": {
            "secretName": request.secret,
            "keys": sorted(request.set),
            "remove": sorted(request.remove),
            "allowGenerated": request.allow_generated,
        },
        "status": {
            "created": result.created,
            "set": list(result.set),
            "removed": list(result.removed),
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Views: a Secret without its values


def _time(text: object) -> datetime.datetime | None:
    return parse_time(text) if isinstance(text, str) else None


def _owned_keys(entry: JsonObject) -> set[str]:
    fields = (entry.get("fieldsV1") or {}).get("f:data") or {}
    return {name[2:] for name in fields if isinstance(name, str) and name.startswith("f:")}


def key_changes(secret: JsonObject) -> dict[str, datetime.datetime]:
    """When each key last changed, as well as the Secret tells: the API's own stamp for keys it wrote last; for a
    key another manager owns, that manager's last write (managedFields ``time``) when it is newer; else when the
    Secret was created."""
    metadata = secret.get("metadata") or {}
    created = _time(metadata.get("creationTimestamp")) or datetime.datetime.fromtimestamp(0, datetime.UTC)
    stamps = {key: _time(value) for key, value in _stamps(metadata).items()}
    owners: dict[str, tuple[str, datetime.datetime | None]] = {}
    for entry in metadata.get("managedFields") or []:
        if isinstance(entry, dict):
            for key in _owned_keys(entry):
                owners[key] = (str(entry.get("manager", "")), _time(entry.get("time")))
    changed: dict[str, datetime.datetime] = {}
    for key in secret.get("data") or {}:
        stamp = stamps.get(key)
        manager, written = owners.get(key, ("", None))
        if manager != FIELD_MANAGER and written is not None and (stamp is None or written > stamp):
            stamp = written
        changed[key] = stamp or created
    return changed


@dataclass(frozen=True)
class KeyUsers:
    """Who reads each key of a Secret, found once per referrer (never once per key and referrer: a Secret of 20,000
    keys loaded whole by 200 workloads would be 4,000,000 findings, on the loop both webhooks share).

    ``whole``: label → how, the users of the whole Secret (``envFrom``, a volume without items): they read every key.
    ``keyed``: key → label → how, the users that name the key (env, a volume's items, a link).

    A key's users are both, merged label by label: what protection's ``usage`` finds over the uses of that key, but
    for old pods still running a template their owner no longer has, counted on each side: pods of two old
    templates, one reading the key by name and one not, show as two counts (``1 old pod, rolling out, 3 old pods,
    rolling out``) where one pass would show one.
    """

    whole: Mapping[str, tuple[str, ...]]
    keyed: Mapping[str, Mapping[str, tuple[str, ...]]]

    def labels(self) -> set[str]:
        """Every service that reads one of the keys (the Table's USERS)."""
        return set(self.whole).union(*(users.keys() for users in self.keyed.values()))

    def of(self, key: str) -> dict[str, tuple[str, ...]]:
        """Every user of ``key`` and how it reads it, whole (cost grows with the whole Secret's users)."""
        named = self.keyed.get(key, {})
        return {
            label: tuple(sorted(set(self.whole.get(label, ())) | set(named.get(label, ()))))
            for label in sorted(set(self.whole) | set(named))
        }

    def shown(self, key: str) -> tuple[list[str], int]:
        """The first USERS_SHOWN users of ``key`` as a view lists them (``deployment/web (env API_KEY)``, each with
        its first HOWS_SHOWN ways), and how many more there are: the work grows with what is shown and with the uses
        that name this key, never with the whole Secret's users."""
        named = self.keyed.get(key, {})
        if not named:
            return self._whole_shown
        extra = sorted(label for label in named if label not in self.whole)
        labels = list(itertools.islice(heapq.merge(self._whole_labels, extra), USERS_SHOWN))
        entries = [self._entry(label, named.get(label, ())) for label in labels]
        return entries, len(self.whole) + len(extra) - len(labels)

    def _entry(self, label: str, named: Sequence[str]) -> str:
        whole = self.whole.get(label, ())
        known = self._whole_sets.get(label, frozenset())
        extra = sorted(how for how in named if how not in known)
        hows = list(itertools.islice(heapq.merge(whole, extra), HOWS_SHOWN))
        more = len(whole) + len(extra) - len(hows)
        return f"{label} ({', '.join(hows)}{f' and {more} more' if more else ''})"

    @functools.cached_property
    def _whole_labels(self) -> list[str]:
        return sorted(self.whole)

    @functools.cached_property
    def _whole_sets(self) -> dict[str, frozenset[str]]:
        return {label: frozenset(hows) for label, hows in self.whole.items()}

    @functools.cached_property
    def _whole_shown(self) -> tuple[list[str], int]:
        # One list for every key only the whole Secret's users read: shared, never copied per key.
        labels = self._whole_labels[:USERS_SHOWN]
        return [self._entry(label, ()) for label in labels], len(self.whole) - len(labels)


def key_users(secret: str, referrers: Sequence[Referrer], by_uid: Mapping[str, Referrer]) -> KeyUsers:
    """Who reads each key, for the referrers that run or may start pods (protection's ``usage``): once over the uses
    of the whole Secret, and once per key over the uses that name that key only; an optional use counts too.
    The work is the referrers' uses of the Secret, once each (a use naming several keys, once per key it names)."""
    whole: list[Referrer] = []
    named: dict[str, list[Referrer]] = {}
    for referrer in referrers:
        uses = [use for use in referrer.uses if use.secret == secret]
        if not uses:
            continue
        entire = tuple(use for use in uses if use.keys is None)
        if entire:
            whole.append(replace(referrer, uses=entire))
        by_key: dict[str, list[Use]] = {}
        for use in uses:
            for key in use.keys or ():
                by_key.setdefault(key, []).append(use)
        for key, reading in by_key.items():
            named.setdefault(key, []).append(replace(referrer, uses=tuple(reading)))
    return KeyUsers(
        whole=usage(secret, whole, by_uid).report,
        keyed={key: found for key, users in named.items() if (found := usage(secret, users, by_uid).report)},
    )


def human_age(age: datetime.timedelta) -> str:
    """As kubectl shows ages: 45s, 5m12s, 3h, 6d7h, 120d, 2y."""
    seconds = max(int(age.total_seconds()), 0)
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def advice(
    secret: JsonObject,
    users: KeyUsers,
    changed: Mapping[str, datetime.datetime],
    now: datetime.datetime,
    stale_after: datetime.timedelta,
) -> list[str]:
    """The product page's best practices, for this Secret: rotate regularly, scope per service, name keys well.
    At most LIMIT keys are named one by one, then counted."""
    found: list[str] = []
    stale = [(key, when) for key, when in sorted(changed.items()) if now - when > stale_after]
    if len(stale) > LIMIT:
        found.append(
            f"{listed([key for key, _ in stale])} unchanged for more than {human_age(stale_after)}: rotate "
            "credentials regularly"
        )
    else:
        found.extend(
            f"{key} unchanged for {human_age(now - when)} (more than {human_age(stale_after)}): rotate "
            "credentials regularly"
            for key, when in stale
        )
    keys = set(changed)
    # A user of the whole Secret reads every key: then no service reads only some, and there is nothing to scope.
    if not users.whole:
        read_by: dict[str, set[str]] = {}
        for key, by_user in users.keyed.items():
            if key in keys:
                for label in by_user:
                    read_by.setdefault(label, set()).add(key)
        partial = {label: read for label, read in read_by.items() if read < keys}
        if len(read_by) >= 2 and len(partial) == len(read_by) and len({frozenset(r) for r in partial.values()}) > 1:
            shown = [f"{label} reads {listed(sorted(read))}" for label, read in sorted(partial.items())]
            more = f" and {len(shown) - LIMIT} more" if len(shown) > LIMIT else ""
            found.append(
                f"shared by services that each read only some of its keys ({'; '.join(shown[:LIMIT])}{more}): "
                "scope secrets per service"
            )
    if secret_type(secret) == CUSTOM_TYPE:
        vague = sorted(key for key in keys if vague_key(key))
        if vague:
            found.append(f"{listed(vague)} says little of what it holds: use descriptive key names")
    return found


@dataclass(frozen=True)
class View:
    """A view, and what the Table shows of it that the view does not carry whole (it lists a key's first users)."""

    body: JsonObject
    users: int  # services that read one of its keys


def secret_view(
    secret: JsonObject,
    referrers: Sequence[Referrer],
    by_uid: Mapping[str, Referrer],
    now: datetime.datetime,
    stale_after: datetime.timedelta = DEFAULT_STALE_AFTER,
) -> View:
    """A Secret as the API shows it: metadata, type, and key by key its first users and last change; never a value.
    Its size grows with the keys, never with keys times users."""
    metadata = secret.get("metadata") or {}
    name = str(metadata.get("name", ""))
    changed = key_changes(secret)
    users = key_users(name, referrers, by_uid)
    shown_metadata = {part: metadata[part] for part in VIEW_METADATA if part in metadata}
    for part, allowed in (("labels", VIEW_LABELS), ("annotations", VIEW_ANNOTATIONS)):
        found = metadata.get(part)
        shown = {k: v for k, v in found.items() if k in allowed} if isinstance(found, dict) else {}
        if shown:
            shown_metadata[part] = shown
    keys: JsonList = []
    for key in sorted(changed):
        used_by, more = users.shown(key)
        entry: JsonObject = {"name": key, "lastChanged": format_time(changed[key]), "usedBy": used_by}
        if more:
            entry["moreUsers"] = more
        keys.append(entry)
    body = {
        "apiVersion": API_VERSION,
        "kind": VIEW_KIND,
        "metadata": shown_metadata,
        "type": secret_type(secret),
        "keys": keys,
        "advice": advice(secret, users, changed, now, stale_after),
    }
    return View(body, len(users.labels()))


def view(
    secret: JsonObject,
    referrers: Sequence[Referrer],
    by_uid: Mapping[str, Referrer],
    now: datetime.datetime,
    stale_after: datetime.timedelta = DEFAULT_STALE_AFTER,
) -> JsonObject:
    """The view's body (see ``secret_view``)."""
    return secret_view(secret, referrers, by_uid, now, stale_after).body


def list_metadata(resource_version: str, continue_token: str = "") -> JsonObject:
    found: JsonObject = {"resourceVersion": resource_version}
    if continue_token:
        found["continue"] = continue_token
    return found


def view_list(views: Sequence[JsonObject], resource_version: str, continue_token: str = "") -> JsonObject:
    return {
        "apiVersion": API_VERSION,
        "kind": f"{VIEW_KIND}List",
        "metadata": list_metadata(resource_version, continue_token),
        "items": list(views),
    }


@dataclass(frozen=True)
class ListRequest:
    """A listing as the client asked it: its selectors, and its chunk (``limit``/``continue``, as kubectl's
    ``--chunk-size`` sends them; the apiserver's continue token passed on as it is). Either way the Secrets are read
    PAGE at a time: up to ``limit`` of them, or all of them when no limit is given."""

    selectors: Mapping[str, str] = field(default_factory=dict)
    limit: int = 0
    continue_token: str = ""

    def page_query(self, continue_token: str, read: int) -> dict[str, str] | None:
        """The query of the next page of Secrets after ``read`` of them, never more than PAGE; None once the client's
        limit is reached."""
        left = self.limit - read if self.limit else PAGE
        if left <= 0:
            return None
        query = {**self.selectors, "limit": str(min(left, PAGE))}
        if continue_token:
            query["continue"] = continue_token
        return query


def parse_list(query: Mapping[str, str]) -> ListRequest:
    selectors = {k: query[k] for k in ("labelSelector", "fieldSelector") if query.get(k)}
    limit = query.get("limit", "") or "0"
    if not limit.isdigit():
        raise ApiError(400, "BadRequest", f"limit must be a whole number of items, got {limit!r}")
    return ListRequest(selectors, int(limit), query.get("continue", ""))


def without_values(secret: JsonObject) -> JsonObject:
    """The Secret with its key names and no value: what a view needs, as soon as a page is read."""
    data = secret.get("data")
    return {
        **{k: v for k, v in secret.items() if k not in ("data", "stringData")},
        "data": dict.fromkeys(data, "") if isinstance(data, dict) else {},
    }


# A SecretWrite is reviewed twice: ``create secretwrites`` in the namespace (the apiserver asks it too, before it
# proxies the request, with no name: a create names no object in its URL), then this verb on the ``writeonlysecrets``
# of the Secret it writes, by name, so that a Role's resourceNames limits a writer to the Secrets it names.
SET_KEYS_VERB = "update"


def set_keys_hint(secret: str) -> str:
    return (
        f'a SecretWrite to secret "{secret}" needs {SET_KEYS_VERB} on writeonlysecrets "{secret}" (see "A pipeline '
        'limited to its own Secrets" in docs/write-only-secrets.md)'
    )
