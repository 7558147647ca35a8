"""Linking: link annotations → the env entries they want → a pod spec that has exactly those.

The stages, each a plain function: parse the annotations into links (or problems that say how to fix them),
then apply the links to a pod template, keeping a record of the vars the product manages so that a removed
annotation removes exactly its env entry, and so that applying twice changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from rules.keynames import vague_key
from rules.names import CONTAINERS, ENV_VAR, LINK_PREFIX, MANAGED_ENV, is_secret_key, is_secret_name
from rules.workloads import (
    KINDS,
    JsonObject,
    annotations_of,
    compact_json,
    controller_owner,
    dicts_in,
    json_object,
    pod_template,
)

EXAMPLE = LINK_PREFIX + "API_KEY=stripe/STRIPE_SECRET_KEY"


@dataclass(frozen=True)
class Link:
    var: str
    secret: str
    key: str

    @property
    def annotation(self) -> str:
        return LINK_PREFIX + self.var

    def env_entry(self) -> JsonObject:
        return {"name": self.var, "valueFrom": {"secretKeyRef": {"name": self.secret, "key": self.key}}}


@dataclass(frozen=True)
class LinkRequest:
    """What the annotations ask for: links by var, and the chosen containers (None: every app container)."""

    links: Mapping[str, Link]
    containers: tuple[str, ...] | None


class LinkDenied(Exception):
    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass
class Linked:
    """The result of linking an object: the new object and the warnings for the user.

    ``obj`` shares what linking did not change with the object it was made from; change neither afterwards."""

    obj: JsonObject
    warnings: list[str] = field(default_factory=list)


# The longest annotation (name + value) whose link is cached: a real one is at most ≈ 600 characters (a secret name
# and a key of 253 each, a var name); padding a value with whitespace must not let a client fill the cache.
CACHED_UP_TO = 1024


def parse_link(annotation: str, value: str) -> Link:
    """One ``env.secrets.smll.io/<VAR>: <secret>/<key>`` annotation → a Link, or LinkDenied saying how to fix it.

    Cached: every pod of a workload carries the same annotations, and a Link is immutable (a denial is not cached,
    nor an annotation longer than ``CACHED_UP_TO``)."""
    if len(annotation) + len(value) <= CACHED_UP_TO:
        return _cached_link(annotation, value)
    return _link(annotation, value)


def _link(annotation: str, value: str) -> Link:
    var = annotation[len(LINK_PREFIX) :]
    if not ENV_VAR.match(var):
        raise LinkDenied(
            [
                f"annotation {annotation}: {var!r} is not a valid env var name; use letters, digits and underscores, "
                f"not starting with a digit (for example {LINK_PREFIX}API_KEY)"
            ]
        )
    secret, slash, key = value.strip().partition("/")
    if not slash or not is_secret_name(secret) or not is_secret_key(key):
        raise LinkDenied(
            [
                f"annotation {annotation}: {value!r} is not <secret>/<key>; the secret is a lowercase DNS name and "
                f"the key letters, digits, '-', '_' or '.' (for example {EXAMPLE})"
            ]
        )
    return Link(var=var, secret=secret, key=key)


_cached_link = functools.lru_cache(maxsize=4096)(_link)


def parse_links(found: Mapping[str, str]) -> dict[str, Link]:
    """Every link annotation of one annotation set; LinkDenied lists every malformed one."""
    links: dict[str, Link] = {}
    problems: list[str] = []
    for name, value in sorted(found.items()):
        if not name.startswith(LINK_PREFIX):
            continue
        try:
            link = parse_link(name, value)
        except LinkDenied as denied:
            problems.extend(denied.problems)
        else:
            links[link.var] = link
    if problems:
        raise LinkDenied(problems)
    return links


def parse_containers(found: Mapping[str, str]) -> tuple[str, ...] | None:
    value = found.get(CONTAINERS)
    if value is None:
        return None
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise LinkDenied(
            [f"annotation {CONTAINERS}: names no container; list them separated by commas (for example web,worker)"]
        )
    return names


def link_request(*annotation_sets: Mapping[str, str]) -> LinkRequest:
    """Merge the annotation sets in order (the workload's, then its pod template's): a later one wins per var."""
    links: dict[str, Link] = {}
    containers: tuple[str, ...] | None = None
    problems: list[str] = []
    for found in annotation_sets:
        try:
            links.update(parse_links(found))
        except LinkDenied as denied:
            problems.extend(denied.problems)
        try:
            containers = parse_containers(found) or containers
        except LinkDenied as denied:
            problems.extend(denied.problems)
    if problems:
        raise LinkDenied(problems)
    return LinkRequest(links=links, containers=containers)


def read_record(found: Mapping[str, str]) -> dict[str, list[str]]:
    """The managed-env record: container name → vars the product put there. Unreadable counts as empty."""
    record = json_object(found.get(MANAGED_ENV, "{}")) or {}
    return {
        str(name): [var for var in vars_ if isinstance(var, str)]
        for name, vars_ in record.items()
        if isinstance(vars_, list)
    }


def _target_names(spec: JsonObject, chosen: tuple[str, ...] | None) -> list[str]:
    app = [str(c.get("name")) for c in dicts_in(spec.get("containers"))]
    if chosen is None:
        return app
    init = [str(c.get("name")) for c in dicts_in(spec.get("initContainers"))]
    missing = [name for name in chosen if name not in app and name not in init]
    if missing:
        have = ", ".join(app + init) or "none"
        raise LinkDenied(
            [
                f"annotation {CONTAINERS}: the pod has no container named {', '.join(missing)} "
                f"(its containers: {have}); name existing containers or remove the annotation"
            ]
        )
    return list(chosen)


# var → its link and the env entry it wants, in var order (one entry per link, shared by the containers it goes to).
Wanted = Mapping[str, tuple[Link, JsonObject]]


def _link_container(container: JsonObject, want: Wanted, managed: Iterable[str]) -> list[str]:
    """Give one container exactly the wanted links; returns problems (hand-set vars in the way).

    One pass over the env: entries keep their order, a wanted var already there is replaced where it stands (its
    duplicates dropped), a new one is added at the end in name order.
    """
    managed = set(managed)
    before = container.get("env")
    env = [e for e in dicts_in(before) if not (e.get("name") in managed and e.get("name") not in want)]
    positions: dict[str, list[int]] = {}
    for index, present in enumerate(env):
        name = present.get("name")
        if isinstance(name, str) and name in want:
            positions.setdefault(name, []).append(index)
    problems: list[str] = []
    duplicates: set[int] = set()
    for var, (link, entry) in want.items():
        found = positions.get(var)
        if not found:
            env.append(entry)
        elif var in managed or all(env[i] == entry for i in found):
            env[found[0]] = entry
            duplicates.update(found[1:])
        else:
            problems.append(
                f"annotation {link.annotation}: container {container.get('name')!r} already sets {var} by hand; "
                f"remove that env entry or use another var name"
            )
    if duplicates:
        env = [e for i, e in enumerate(env) if i not in duplicates]
    if env != (before if isinstance(before, list) else []):
        if env:
            container["env"] = env
        else:
            container.pop("env", None)
    return problems


def apply_links(template: JsonObject, request: LinkRequest) -> None:
    """Change ``template`` (a pod template or a Pod: metadata + spec) in place to carry exactly the request."""
    spec = template.get("spec")
    if not isinstance(spec, dict):
        if request.links:
            raise LinkDenied(["the object has no pod spec to link env vars into"])
        return
    metadata = template.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise LinkDenied(["the pod template's metadata is not an object"])
    record = read_record(annotations_of(template))
    targets = set(_target_names(spec, request.containers))
    wanted: Wanted = {var: (link, link.env_entry()) for var, link in sorted(request.links.items())}
    new_record: dict[str, list[str]] = {}
    problems: list[str] = []
    for container in dicts_in(spec.get("containers")) + dicts_in(spec.get("initContainers")):
        name = str(container.get("name"))
        want = wanted if name in targets else {}
        problems += _link_container(container, want, record.get(name, ()))
        if want:
            new_record[name] = list(want)
    if problems:
        raise LinkDenied(problems)
    current = metadata.get("annotations")
    if new_record:
        if not isinstance(current, dict):
            current = metadata["annotations"] = {}
        current[MANAGED_ENV] = compact_json(new_record)
    elif isinstance(current, dict):
        current.pop(MANAGED_ENV, None)
        if not current:
            metadata.pop("annotations")


def wanted_links(obj: JsonObject, kind: str | None = None) -> LinkRequest:
    """What an object's annotations ask for: the workload's, overridden per var by its pod template's."""
    template = pod_template(obj, kind)
    if template is None or template is obj:
        return link_request(annotations_of(obj))
    return link_request(annotations_of(obj), annotations_of(template))


# (namespace, secret name) → the Secret's key names, or None when no such Secret is known.
SecretKeys = Callable[[str, str], "frozenset[str] | None"]


def link_warnings(request: LinkRequest, secret_keys: SecretKeys, namespace: str) -> list[str]:
    """Advice that does not block: a Secret or key that does not exist yet, and vague key names."""
    warnings: list[str] = []
    for link in request.links.values():
        keys = secret_keys(namespace, link.secret)
        if keys is None:
            warnings.append(
                f"{link.annotation}: Secret {link.secret!r} does not exist in namespace {namespace!r} yet; "
                f"pods will not start until it does"
            )
        elif link.key not in keys:
            warnings.append(
                f"{link.annotation}: Secret {link.secret!r} has no key {link.key!r} yet; "
                f"pods will not start until it does"
            )
        if vague_key(link.key):
            warnings.append(
                f"{link.annotation}: key name {link.key!r} says little about what it holds; "
                f"descriptive names such as STRIPE_SECRET_KEY are clearer"
            )
    return warnings


# What the built-in controllers make from a pod template of their own: kind → the (API group, kind) of such owners.
# Those copies are never linked themselves: the owner's template was, and a copy that differed from it would be
# undone or fought over by its controller.
MADE_FROM_TEMPLATE: Mapping[str, frozenset[tuple[str, str]]] = {
    made: frozenset((KINDS[owner].group, owner) for owner in owners)
    for made, owners in {
        "ReplicaSet": ("Deployment",),
        "Job": ("CronJob",),
        "Pod": ("ReplicaSet", "Job", "StatefulSet", "DaemonSet"),
    }.items()
}


def template_owner(obj: JsonObject, kind: str) -> str | None:
    """``deployment/web`` when ``obj`` is what a built-in controller makes from its own template; None otherwise
    (no owner, or one of another controller — an operator's custom resource, say — whose objects are linked)."""
    owner = controller_owner(obj)
    if owner is None or owner[:2] not in MADE_FROM_TEMPLATE.get(kind, frozenset()):
        return None
    return f"{owner[1].lower()}/{owner[2]}"


def _writable(template: JsonObject) -> JsonObject:
    """A copy of a pod template (or Pod) that ``apply_links`` may change: what it writes — the metadata and its
    annotations, the spec, its container lists and containers — is copied; the rest is shared with ``template``,
    which stays as it was. Copying the whole object was most of the cost of an admission review."""
    copied = dict(template)
    metadata = copied.get("metadata")
    if isinstance(metadata, dict):
        metadata = copied["metadata"] = dict(metadata)
        if isinstance(metadata.get("annotations"), dict):
            metadata["annotations"] = dict(metadata["annotations"])
    spec = copied.get("spec")
    if isinstance(spec, dict):
        spec = copied["spec"] = dict(spec)
        for field_name in ("containers", "initContainers"):
            containers = spec.get(field_name)
            if isinstance(containers, list):
                spec[field_name] = [dict(c) if isinstance(c, dict) else c for c in containers]
    return copied


def _with_writable_template(obj: JsonObject, kind: str) -> tuple[JsonObject, JsonObject | None]:
    """``obj`` with its pod template replaced by a ``_writable`` copy (the dicts on the way copied too), and that
    template; ``(obj, None)`` when it has none."""
    if pod_template(obj, kind) is None:
        return obj, None
    path = KINDS[kind].template or ()
    if not path:
        template = _writable(obj)
        return template, template
    root = dict(obj)
    node = root
    for key in path[:-1]:
        child = dict(node[key])
        node[key] = child
        node = child
    template = node[path[-1]] = _writable(node[path[-1]])
    return root, template


def _would_change(template: JsonObject, request: LinkRequest) -> bool:
    probe = _writable(template)
    with contextlib.suppress(LinkDenied):
        apply_links(probe, request)
    return probe.get("spec") != template.get("spec")


def link_object(
    obj: JsonObject, *, kind: str, namespace: str, secret_keys: SecretKeys, operation: str = "CREATE"
) -> Linked:
    """Admission's view: the object as it should be stored, with warnings; LinkDenied when it cannot be.

    Every supported object carrying link annotations is linked, whoever owns it, except what a built-in controller
    makes from a template of its own. Wherever links cannot be applied, a warning says so.
    """
    copied, template = _with_writable_template(obj, kind)
    result = Linked(copied)
    if template is None:
        return result
    owner = template_owner(result.obj, kind)
    if owner is not None:
        # A copy of a template that was linked already; links of its own would be lost (its controller makes and
        # replaces it from the owner's template), and a copy is never refused.
        try:
            unapplied = _would_change(template, wanted_links(result.obj, kind))
        except LinkDenied:
            unapplied = True
        if unapplied:
            result.warnings.append(
                f"link annotations on this {kind} are not applied: {owner} makes it from its own pod template; "
                f"annotate {owner} (or the workload that owns it) instead"
            )
        return result
    request = wanted_links(result.obj, kind)
    if kind == "Pod" and operation != "CREATE":
        # A Pod's env cannot change after creation; say so instead of producing a patch the apiserver refuses.
        if _would_change(template, request):
            result.warnings.append("link annotations on an existing Pod take effect only when the Pod is re-created")
        return result
    apply_links(template, request)
    result.warnings += link_warnings(request, secret_keys, namespace)
    return result
