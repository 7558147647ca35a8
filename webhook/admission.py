"""The AdmissionReview protocol without HTTP: bytes in → a validated request, or BadReview; decisions → responses.

"The webhook call itself was bad" is BadReview (the HTTP edge answers 400); "the operation is refused" is a normal
response with ``allowed: false``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any, NotRequired, TypedDict

import jsonpatch

from rules.links import LinkDenied, SecretKeys, link_object
from rules.workloads import LINKABLE_KINDS

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


def parse_review(body: bytes) -> AdmissionRequest:
    try:
        review = json.loads(body)
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
    if request.get("namespace") is not None and not isinstance(request["namespace"], str):
        raise BadReview("request.namespace is not a string")
    return request  # type: ignore[return-value]  # checked field by field above


def review(response: AdmissionResponse) -> AdmissionReview:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def allow(uid: str, *, warnings: Iterable[str] = (), patch: list[dict[str, Any]] | None = None) -> AdmissionResponse:
    response: AdmissionResponse = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
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
    if request["kind"]["kind"] not in LINKABLE_KINDS:
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
    patch = jsonpatch.make_patch(obj, linked.obj).patch
    return allow(uid, warnings=linked.warnings, patch=patch)
