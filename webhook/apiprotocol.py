"""The write-only API's protocol without HTTP, beside the AdmissionReview's (webhook/admission.py): the discovery
documents, the ``Status`` and ``Table`` bodies, front-proxy authentication and the SubjectAccessReview.

What is written and what a view shows is decided in the core (rules/secretsapi.py); this module only puts it in the
shapes the apiserver and kubectl speak.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from rules.secretsapi import (
    API_VERSION,
    GROUP,
    KEYS_SHOWN,
    VERSION,
    VIEW_KIND,
    VIEWS,
    WRITE_KIND,
    WRITES,
    ApiError,
    View,
    human_age,
    list_metadata,
)
from rules.times import parse_time
from rules.workloads import JsonObject

# ---------------------------------------------------------------------------------------------------------------
# Status


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
}


def status(code: int, reason: str, message: str, *, details: JsonObject | None = None) -> JsonObject:
    body: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "code": code,
    }
    if reason or code in REASONS:
        body["reason"] = reason or REASONS[code]
    if details:
        body["details"] = details
    return body


def error_status(error: ApiError, *, name: str = "", kind: str = "") -> JsonObject:
    """The refusal as the ``Status`` body kubectl shows."""
    details: JsonObject = {}
    if name:
        details["name"] = name
    if kind:
        details.update(group=GROUP, kind=kind)
    if error.causes:
        details["causes"] = [{"field": where, "message": what} for where, what in error.causes]
    return status(error.code, error.reason, error.message, details=details)


# ---------------------------------------------------------------------------------------------------------------
# Table


def _time_of(text: object) -> datetime.datetime | None:
    return parse_time(text) if isinstance(text, str) else None


COLUMNS = (
    ("Name", "string", "name"),
    ("Type", "string", "custom, database or registry"),
    ("Keys", "string", "the key names"),
    ("Users", "integer", "services that read one of its keys"),
    ("Changed", "string", "since the newest key change"),
    ("Advice", "integer", "best-practice findings (kubectl describe shows them)"),
    ("Age", "string", "since the Secret was created"),
)


def table(
    views: Sequence[View], now: datetime.datetime, resource_version: str = "", continue_token: str = ""
) -> JsonObject:
    """The ``meta.k8s.io/v1`` Table kubectl asks for: its printer columns, made from the views (nothing found
    again), the KEYS column from the first KEYS_SHOWN keys."""
    rows = []
    for found in views:
        item = found.body
        metadata = item["metadata"]
        keys = item["keys"]
        names = ",".join(key["name"] for key in keys[:KEYS_SHOWN]) + ("," if len(keys) > KEYS_SHOWN else "")
        # lastChanged is RFC 3339 in UTC (format_time): the newest text is the newest time.
        newest = _time_of(max((key["lastChanged"] for key in keys), default=None))
        created = _time_of(metadata.get("creationTimestamp"))
        rows.append(
            {
                "cells": [
                    metadata["name"],
                    item["type"],
                    names if len(names) <= 60 and len(keys) <= KEYS_SHOWN else names[:57] + "...",
                    found.users,
                    human_age(now - newest) if newest else "<none>",
                    len(item["advice"]),
                    human_age(now - created) if created else "<unknown>",
                ],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata(resource_version, continue_token),
        "columnDefinitions": [
            {"name": name, "type": kind, "format": "name" if name == "Name" else "", "description": text, "priority": 0}
            for name, kind, text in COLUMNS
        ],
        "rows": rows,
    }


# ---------------------------------------------------------------------------------------------------------------
# Discovery


def api_group() -> JsonObject:
    version = {"groupVersion": API_VERSION, "version": VERSION}
    return {"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version], "preferredVersion": version}


def api_resources() -> JsonObject:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": API_VERSION,
        "resources": [
            {
                "name": VIEWS,
                "singularName": "writeonlysecret",
                "namespaced": True,
                "kind": VIEW_KIND,
                "verbs": ["delete", "get", "list"],
                "shortNames": ["wos"],
                "categories": ["smll"],
            },
            {
                "name": WRITES,
                "singularName": "secretwrite",
                "namespaced": True,
                "kind": WRITE_KIND,
                "verbs": ["create"],
            },
        ],
    }


# ---------------------------------------------------------------------------------------------------------------
# Authentication by the front proxy, authorization by SubjectAccessReview


@dataclass(frozen=True)
class FrontProxy:
    """The apiserver's request-header authentication settings (kube-system/extension-apiserver-authentication)."""

    client_ca: str
    allowed_names: frozenset[str] = frozenset()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


def front_proxy(data: Mapping[str, str]) -> FrontProxy | None:
    """From the ConfigMap's data; None when the apiserver has no front proxy configured (no aggregation)."""
    ca = data.get("requestheader-client-ca-file", "")
    if not ca.strip():
        return None

    def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        try:
            found = json.loads(data[key]) if data.get(key) else list(default)
        except ValueError:
            found = list(default)
        return tuple(str(item) for item in found) if isinstance(found, list) else default

    return FrontProxy(
        client_ca=ca,
        allowed_names=frozenset(names("requestheader-allowed-names", ())),
        username_headers=names("requestheader-username-headers", ("X-Remote-User",)),
        uid_headers=names("requestheader-uid-headers", ()),
        group_headers=names("requestheader-group-headers", ("X-Remote-Group",)),
        extra_prefixes=names("requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
    )


@dataclass(frozen=True)
class Identity:
    user: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def identity(config: FrontProxy, headers: Iterable[tuple[str, str]]) -> Identity | None:
    """Who the apiserver says is asking, from the headers its front proxy set; None when no user is named."""
    pairs = [(name.lower(), value) for name, value in headers]

    def first(wanted: Sequence[str]) -> str:
        lowered = {name.lower() for name in wanted}
        return next((value for name, value in pairs if name in lowered and value), "")

    user = first(config.username_headers)
    if not user:
        return None
    groups = {header.lower() for header in config.group_headers}
    extra: dict[str, list[str]] = {}
    for name, value in pairs:
        for prefix in config.extra_prefixes:
            if name.startswith(prefix.lower()) and len(name) > len(prefix):
                # Extra keys are percent-encoded in header names (a '/' becomes %2f).
                extra.setdefault(unquote(name[len(prefix) :]), []).append(value)
    return Identity(
        user=user,
        uid=first(config.uid_headers),
        groups=tuple(value for name, value in pairs if name in groups),
        extra={key: tuple(values) for key, values in extra.items()},
    )


def access_review(who: Identity, verb: str, resource: str, namespace: str, name: str = "") -> JsonObject:
    attributes: JsonObject = {"verb": verb, "group": GROUP, "version": VERSION, "resource": resource}
    if namespace:
        attributes["namespace"] = namespace
    if name:
        attributes["name"] = name
    spec: JsonObject = {"user": who.user, "groups": list(who.groups), "resourceAttributes": attributes}
    if who.uid:
        spec["uid"] = who.uid
    if who.extra:
        spec["extra"] = {key: list(values) for key, values in who.extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def forbidden(
    who: Identity, verb: str, resource: str, namespace: str, name: str, reason: str, hint: str = ""
) -> ApiError:
    target = f'{resource}.{GROUP} "{name}"' if name else f"{resource}.{GROUP}"
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    because = "".join(f": {part}" for part in (hint, reason) if part)
    return ApiError(
        403,
        "Forbidden",
        f'{target} is forbidden: User "{who.user}" cannot {verb} resource "{resource}" in API group "{GROUP}"'
        f"{scope}{because}",
    )
