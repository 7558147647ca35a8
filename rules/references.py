"""The reference finder: an object (its pod spec and link annotations) → every Secret it uses, and how.

One function, used by the validating webhook (who would break if this Secret went?) and by the controller (which
keys does this service use, so which changes roll it?).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass

from rules.links import LinkDenied, parse_link
from rules.names import LINK_PREFIX
from rules.workloads import JsonObject, annotations_of, dict_or_empty, dicts_in, pod_template

CONTAINER_FIELDS = ("containers", "initContainers", "ephemeralContainers")


class Via(enum.StrEnum):
    """Where in an object a Secret is named. The value is how messages name it."""

    ENV = "env"
    ENV_FROM = "envFrom"
    VOLUME = "volume"
    PROJECTED_VOLUME = "projected volume"
    IMAGE_PULL_SECRETS = "imagePullSecrets"
    LINK = "link"


@dataclass(frozen=True, order=True, slots=True)
class How:
    """How an object uses a Secret: where it names it, and the env var, volume or linked var it is named by (none
    for envFrom and imagePullSecrets). ``str()`` is how every message shows it, e.g. ``env API_KEY``."""

    via: Via
    name: str = ""

    def __str__(self) -> str:
        return f"{self.via} {self.name}" if self.name else str(self.via)


@dataclass(frozen=True, order=True, slots=True)
class Use:
    """One use of one Secret. ``keys`` None means the whole Secret (envFrom, a volume without items)."""

    secret: str
    how: How
    keys: frozenset[str] | None = None
    optional: bool = False

    @property
    def required_keys(self) -> frozenset[str]:
        """Keys that must exist for the use to work: what a key removal would break."""
        return frozenset() if self.optional or self.keys is None else self.keys

    @property
    def for_image_pull(self) -> bool:
        """A pull secret: the kubelet reads it to pull images; no process of the pod reads it."""
        return self.how.via is Via.IMAGE_PULL_SECRETS


def _item_keys(source: JsonObject) -> frozenset[str] | None:
    items = dicts_in(source.get("items"))
    keys = frozenset(str(item["key"]) for item in items if isinstance(item.get("key"), str))
    return keys or None


def _container_uses(spec: JsonObject) -> Iterator[Use]:
    for field in CONTAINER_FIELDS:
        for container in dicts_in(spec.get(field)):
            for entry in dicts_in(container.get("env")):
                ref = dict_or_empty(dict_or_empty(entry.get("valueFrom")).get("secretKeyRef"))
                if isinstance(ref.get("name"), str) and isinstance(ref.get("key"), str):
                    how = How(Via.ENV, str(entry.get("name")))
                    yield Use(ref["name"], how, frozenset({ref["key"]}), ref.get("optional") is True)
            for source in dicts_in(container.get("envFrom")):
                ref = dict_or_empty(source.get("secretRef"))
                if isinstance(ref.get("name"), str):
                    yield Use(ref["name"], How(Via.ENV_FROM), None, ref.get("optional") is True)


def _volume_uses(spec: JsonObject) -> Iterator[Use]:
    for volume in dicts_in(spec.get("volumes")):
        secret = dict_or_empty(volume.get("secret"))
        if isinstance(secret.get("secretName"), str):
            how = How(Via.VOLUME, str(volume.get("name")))
            yield Use(secret["secretName"], how, _item_keys(secret), secret.get("optional") is True)
        for source in dicts_in(dict_or_empty(volume.get("projected")).get("sources")):
            projected = dict_or_empty(source.get("secret"))
            if isinstance(projected.get("name"), str):
                how = How(Via.PROJECTED_VOLUME, str(volume.get("name")))
                yield Use(projected["name"], how, _item_keys(projected), projected.get("optional") is True)


def _link_uses(*annotation_sets: dict[str, str]) -> Iterator[Use]:
    links = {}
    for found in annotation_sets:
        for name, value in found.items():
            if name.startswith(LINK_PREFIX):
                with contextlib.suppress(LinkDenied):  # a malformed link references nothing
                    link = parse_link(name, value)
                    links[link.var] = link
    for link in links.values():
        yield Use(link.secret, How(Via.LINK, link.var), frozenset({link.key}))


def secret_uses(obj: JsonObject, kind: str | None = None) -> tuple[Use, ...]:
    """Every use of a Secret by ``obj`` (a workload, a Pod or a ReplicaSet), sorted and without repeats."""
    template = pod_template(obj, kind)
    template_annotations = annotations_of(template) if template is not None and template is not obj else {}
    return uses_in(template, annotations_of(obj), template_annotations)


def uses_in(
    template: JsonObject | None, annotations: dict[str, str], template_annotations: dict[str, str]
) -> tuple[Use, ...]:
    """``secret_uses`` from the parts a caller has already read: the pod template (or the Pod), the object's
    annotations and, for a workload, its template's (the controller reads them anyway, once per service)."""
    spec = (template.get("spec") if template is not None else None) or {}
    if not isinstance(spec, dict):
        spec = {}
    uses: set[Use] = set(_container_uses(spec)) | set(_volume_uses(spec))
    for pull in dicts_in(spec.get("imagePullSecrets")):
        if isinstance(pull.get("name"), str) and pull["name"]:
            uses.add(Use(pull["name"], How(Via.IMAGE_PULL_SECRETS)))
    uses |= set(_link_uses(annotations, template_annotations))
    return tuple(sorted(uses))
