"""Every annotation, label and finalizer name the product reads or writes, the values of its labels, and the shapes
of names Kubernetes accepts."""

from __future__ import annotations

import re

ANNOTATION_PREFIX = "secrets.smll.io/"
LINK_PREFIX = "env.secrets.smll.io/"

CONTAINERS = ANNOTATION_PREFIX + "containers"
MANAGED_ENV = ANNOTATION_PREFIX + "managed-env"
PROTECTION = ANNOTATION_PREFIX + "protection"
AUTO_ROLLOUT = ANNOTATION_PREFIX + "auto-rollout"
RESTARTED_AT = ANNOTATION_PREFIX + "restarted-at"
ROTATE = ANNOTATION_PREFIX + "rotate"
# On a workload: per Secret it reads, the keyed digests of the keys it was last rolled for (rules/rollout.py).
ROLLOUT_STATE = ANNOTATION_PREFIX + "rolled-for"
# On a generated Secret (or the Secret of a password on its way in): the rotate value already acted on.
ROTATION_SEEN = ANNOTATION_PREFIX + "rotate-seen"
# On database credentials: the login kept until the readers have rolled, and when the password last changed.
PREVIOUS_USER = ANNOTATION_PREFIX + "previous-user"
ROTATED_AT = ANNOTATION_PREFIX + "rotated-at"
# On database credentials: the keyed digest that proves the controller made the Secret for its Database (uid).
MADE_FOR = ANNOTATION_PREFIX + "made-for"
# On a Secret written through the write-only API: key → when the API last changed it (RFC 3339), as JSON.
KEYS_CHANGED_AT = ANNOTATION_PREFIX + "keys-changed-at"
# On a Database: dropped by the controller once the server's database and role are dealt with.
DATABASE_FINALIZER = "smll.io/database"
# Kubernetes' own: the revision of a Deployment that a ReplicaSet holds.
REVISION = "deployment.kubernetes.io/revision"

# Where the product runs by default (the chart's release namespace in the docs; the controller's --namespace).
PRODUCT_NAMESPACE = "smll-system"

SECRET_TYPE_LABEL = "smll.io/secret-type"
# Its values for the Secrets the product generates (and rotates); a Secret without the label is "custom".
DATABASE_TYPE = "database"
REGISTRY_TYPE = "registry"
GENERATED_TYPES = frozenset({DATABASE_TYPE, REGISTRY_TYPE})
VPC_LABEL = "smll.io/vpc"
# Suffix of a Database's credentials Secret: ``<database>-credentials``.
CREDENTIALS_SUFFIX = "-credentials"

# On a rotation Secret in the controller's namespace: the Database (``namespace/name``) it is for.
DATABASE_ANNOTATION = ANNOTATION_PREFIX + "database"
# The recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels) the product sets.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PRODUCT = "smll-secrets"
# The name of both webhook configurations (the chart's, by its default release name, and the local run's).
WEBHOOK_CONFIGURATION = PRODUCT

# A Secret name is a DNS subdomain (RFC 1123); a data key is what Secret validation accepts. Every pattern here
# ends with \Z, never $ (which also matches before a trailing newline: "shop\n" would pass), and is used with
# fullmatch; rules/links.py's .match of ENV_VAR is as strict.
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")
# The portable env var name: what every shell and runtime accepts.
ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME = 253


def is_secret_name(name: str) -> bool:
    return is_dns_subdomain(name)


def is_secret_key(key: str) -> bool:
    return len(key) <= MAX_NAME and SECRET_KEY.fullmatch(key) is not None and key not in {".", ".."}


# ---- the names an admission review may carry, and what may stand in an API path ----------------------------------

# A namespace's name is a DNS label (RFC 1123); every object the webhooks judge (Secrets, workloads, Databases) is
# named by a DNS subdomain. A review naming anything else did not come from the apiserver.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MAX_LABEL = 63
# Kubernetes' own rule for a name in a request path (apimachinery's IsValidPathSegmentName), with what would end the
# path of a URL: never ``.`` or ``..``, never one of these characters.
NOT_IN_PATH = frozenset("/%?#\\")


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= MAX_NAME and SECRET_NAME.fullmatch(name) is not None


def is_namespace_name(name: str) -> bool:
    return len(name) <= MAX_LABEL and DNS_LABEL.fullmatch(name) is not None


def path_segment_problem(segment: str) -> str | None:
    """Why ``segment`` cannot be one segment of an API path (``is empty``, ``holds '/'``…), or None when it can."""
    if segment in ("", ".", ".."):
        return "is empty" if not segment else "is a relative path"
    bad = sorted({c for c in segment if c in NOT_IN_PATH or not c.isprintable() or c.isspace()})
    if bad:
        return f"holds {', '.join(map(repr, bad))}"
    return None
