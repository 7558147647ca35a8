"""The AdmissionReview protocol without HTTP: bytes in → a validated request, or BadReview; decisions → responses.

"The webhook call itself was bad" is BadReview (the HTTP edge answers 400); "the operation is refused" is a normal
response with ``allowed: false``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict

import orjson

from rules.links import LinkDenied, SecretKeys, link_object
from rules.names import is_dns_subdomain, is_namespace_name
from rules.secretdata import encode
from rules.workloads import POD_KINDS

API_VERSION = "admission.k8s.io/v1"


class GroupVersionKind(TypedDict):
    group: str
    version: str
    kind: str


class AdmissionRequest(TypedDict):
    uid: str
    kind: GroupVersionKind
    operation: str
    namespace: NotRequired[str]
    name: NotRequired[str]
    object: NotRequired[dict[str, Any] | None]
    oldObject: NotRequired[dict[str, Any] | None]
    dryRun: NotRequired[bool]


class Status(TypedDict):
    code: int
    message: str


class AdmissionResponse(TypedDict):
    uid: str
    allowed: bool
    status: NotRequired[Status]
    patchType: NotRequired[str]
    patch: NotRequired[str]
    warnings: NotRequired[list[str]]


class AdmissionReview(TypedDict):
    apiVersion: str
    kind: str
    response: AdmissionResponse


class BadReview(ValueError):
    """The request is not an AdmissionReview we can judge; the reason says what is wrong with it."""


OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
# The kinds the webhooks judge: all namespaced, all named by DNS subdomains. Their namespace becomes part of an API
# path (protection's consistent read), so a review of one names both as Kubernetes would, or is not judged at all.
JUDGED_KINDS = POD_KINDS | {"Secret", "Database"}


def parse_review(body: bytes) -> AdmissionRequest:
    try:
        review = orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadReview(f"body is not JSON: {error}") from None
    if not isinstance(review, dict):
        raise BadReview("body is not a JSON object")
    if review.get("kind") != "AdmissionReview":
        raise BadReview(f"kind must be AdmissionReview, not {review.get('kind')!r}")
    if review.get("apiVersion") != API_VERSION:
        raise BadReview(f"apiVersion must be {API_VERSION}, not {review.get('apiVersion')!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("request is missing or not an object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadReview("request.uid is missing")
    if request.get("operation") not in OPERATIONS:
        raise BadReview(f"request.operation must be one of {', '.join(OPERATIONS)}")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not all(isinstance(kind.get(k), str) for k in ("group", "version", "kind")):
        raise BadReview("request.kind must have group, version and kind")
    for field in ("object", "oldObject"):
        if request.get(field) is not None and not isinstance(request[field], dict):
            raise BadReview(f"request.{field} is not an object")
    if request["operation"] in ("CREATE", "UPDATE") and request.get("object") is None:
        raise BadReview(f"request.object is required for {request['operation']}")
    for field in ("namespace", "name"):
        if request.get(field) is not None and not isinstance(request[field], str):
            raise BadReview(f"request.{field} is not a string")
    if kind["kind"] in JUDGED_KINDS:
        if not request.get("name") and request["operation"] == "DELETE":
            # A deletecollection (`kubectl delete secrets --all`, a namespace's deletion) is reviewed object by
            # object, and each review names its object only in oldObject.
            metadata = (request.get("oldObject") or {}).get("metadata")
            found = metadata.get("name") if isinstance(metadata, dict) else None
            request["name"] = found if isinstance(found, str) else ""
        _check_names(kind["kind"], request["operation"], request.get("namespace") or "", request.get("name") or "")
    return request  # type: ignore[return-value]  # checked field by field above


def _check_names(kind: str, operation: str, namespace: str, name: str) -> None:
    """The apiserver only ever sends names it accepted; anything else is refused before it reaches an API path."""
    if not is_namespace_name(namespace):
        raise BadReview(
            f"request.namespace {_shown(namespace)} is not a namespace name "
            "(a DNS-1123 label: at most 63 lower-case letters, digits and '-', starting and ending alphanumeric)"
        )
    if not name and operation in ("UPDATE", "DELETE"):
        raise BadReview(
            f"request.name (or, for DELETE, oldObject.metadata.name) is required for {operation} of a {kind}"
        )
    if name and not is_dns_subdomain(name):
        raise BadReview(
            f"request.name {_shown(name)} is not a {kind} name (a DNS-1123 subdomain: at most 253 lower-case "
            "letters, digits, '-' and '.', each part starting and ending alphanumeric)"
        )


def _shown(value: str, limit: int = 80) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


def review(response: AdmissionResponse) -> AdmissionReview:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def allow(uid: str, *, warnings: Iterable[str] = (), patch: list[dict[str, Any]] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = encode(orjson.dumps(patch))
    warnings = list(warnings)
    if warnings:
        response["warnings"] = warnings
    return response


def deny(uid: str, message: str, *, code: int = 403) -> AdmissionResponse:
    return {"uid": uid, "allowed": False, "status": {"code": code, "message": message}}


def mutate(request: AdmissionRequest, secret_keys: SecretKeys) -> AdmissionResponse:
    """Linking: the patch that gives the object's pod spec exactly the env its link annotations ask for."""
    uid = request["uid"]
    obj = request.get("object")
    if request["operation"] not in ("CREATE", "UPDATE") or obj is None:
        return allow(uid)
    if request["kind"]["kind"] not in POD_KINDS:
        return allow(uid)
    try:
        linked = link_object(
            obj,
            kind=request["kind"]["kind"],
            namespace=request.get("namespace", ""),
            secret_keys=secret_keys,
            operation=request["operation"],
        )
    except LinkDenied as denied:
        return deny(uid, "; ".join(denied.problems))
    return allow(uid, warnings=linked.warnings, patch=json_patch(obj, linked.obj))


def _pointer(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}/{key}"
    return f"{path}/{key.replace('~', '~0').replace('/', '~1')}"


def json_patch(old: Any, new: Any) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``old`` into ``new`` (JSON values; ``new`` usually a copy of ``old`` changed
    where it differs, sharing the rest: ``rules.links._writable``).

    Shared subtrees are skipped on identity, other equal ones cost one comparison in C, so the work is proportional
    to what changed, not to the size of the object. Dicts are diffed key by key and equal-length lists item by item;
    a list whose length changed is replaced whole (one op for a container's env, not one per linked var: the ops
    were most of the diff's cost, and the bytes are about the same).
    """
    ops: list[dict[str, Any]] = []
    if _differ(old, new):
        _diff(old, new, "", ops)
    return ops


_ABSENT = object()


def _differ(old: Any, new: Any) -> bool:
    # Linking shares what it did not change with the object it was given: most subtrees are the same object.
    return old is not new and (type(old) is not type(new) or old != new)


def _diff(old: Any, new: Any, path: str, ops: list[dict[str, Any]]) -> None:
    """Append the ops that turn ``old`` into ``new``, which differ (the caller compared them: once per node)."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops.extend({"op": "remove", "path": _pointer(path, key)} for key in old if key not in new)
        for key, value in new.items():
            was = old.get(key, _ABSENT)
            if was is _ABSENT:
                ops.append({"op": "add", "path": _pointer(path, key), "value": value})
            elif was is not value and (type(was) is not type(value) or was != value):
                _diff(was, value, _pointer(path, key), ops)
        return
    if isinstance(old, list) and isinstance(new, list) and len(new) == len(old):
        for index, (was, now) in enumerate(zip(old, new, strict=True)):
            if was is not now and (type(was) is not type(now) or was != now):
                _diff(was, now, _pointer(path, index), ops)
        return
    ops.append({"op": "replace", "path": path, "value": new})
