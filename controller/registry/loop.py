"""The registry loop wired into the frame: five informers, one queue keyed by namespace name, the reconcile."""

from __future__ import annotations

import datetime

from kubernetes_asyncio import client

from controller.frame.loop import Loop
from controller.frame.queue import WorkQueue
from controller.frame.settings import Settings
from controller.registry.caches import Caches, HtpasswdHandler
from controller.registry.config import RegistryConfig, parse_secret_ref
from controller.registry.reconciler import Registry
from kubeio.informer import Informer
from rules import registry as registry_rules
from rules.names import COMPONENT_LABEL, REGISTRY_TYPE, SECRET_TYPE_LABEL
from rules.workloads import resource_path


def registry_informers(api: client.ApiClient, config: RegistryConfig, caches: Caches) -> list[Informer]:
    return [
        Informer(api, resource_path("Namespace"), caches.namespaces),
        Informer(
            api,
            resource_path("Secret", config.htpasswd_namespace),
            HtpasswdHandler(caches),
            query={"fieldSelector": f"metadata.name={config.htpasswd_name}"},
        ),
        Informer(
            api,
            resource_path("Secret"),
            caches.secrets,
            query={"labelSelector": f"{SECRET_TYPE_LABEL}={REGISTRY_TYPE}"},
        ),
        Informer(
            api,
            resource_path("Secret", config.rotation_namespace),
            caches.rotations,
            query={"labelSelector": f"{COMPONENT_LABEL}={registry_rules.ROTATION_COMPONENT}"},
        ),
        Informer(
            api,
            resource_path("ServiceAccount"),
            caches.service_accounts,
            query={"fieldSelector": f"metadata.name={registry_rules.SERVICE_ACCOUNT}"},
        ),
    ]


def registry_loop(api: client.ApiClient, settings: Settings, hmac_key: bytes) -> Loop[str]:
    """Per-VPC registry credentials: one key per namespace. Needs ``registry_url`` and ``htpasswd_secret``;
    ``hmac_key`` is the rollout feature's (whether a reader has rolled), the grace period the Database feature's."""
    if settings.registry_url is None or settings.htpasswd_secret is None:
        raise ValueError("the registry loop needs registry_url and htpasswd_secret")
    namespace, name = parse_secret_ref(settings.htpasswd_secret)
    config = RegistryConfig(settings.registry_url, namespace, name, settings.namespace)
    queue: WorkQueue[str] = WorkQueue()
    caches = Caches(queue)
    grace = datetime.timedelta(seconds=settings.rotation_grace_seconds)
    registry = Registry(api, config, caches, hmac_key=hmac_key, grace=grace)
    return Loop("registry", queue, registry_informers(api, config, caches), registry.reconcile)
