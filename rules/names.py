"""Every annotation and label name the product reads or writes, and the shapes of names Kubernetes accepts."""

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

# Where the product runs by default (the chart's release namespace in the docs; the controller's --namespace).
PRODUCT_NAMESPACE = "smll-system"

SECRET_TYPE_LABEL = "smll.io/secret-type"
VPC_LABEL = "smll.io/vpc"

# On a rotation Secret in the controller's namespace: the Database (``namespace/name``) it is for.
DATABASE_ANNOTATION = ANNOTATION_PREFIX + "database"
# The recommended labels (kubernetes.io/docs/concepts/overview/working-with-objects/common-labels) the product sets.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PRODUCT = "smll-secrets"

# A Secret name is a DNS subdomain (RFC 1123); a data key is what Secret validation accepts.
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
# The portable env var name: what every shell and runtime accepts.
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME = 253


def is_secret_name(name: str) -> bool:
    return len(name) <= MAX_NAME and SECRET_NAME.match(name) is not None


def is_secret_key(key: str) -> bool:
    return len(key) <= MAX_NAME and SECRET_KEY.match(key) is not None and key not in {".", ".."}
