"""The Database loop wired into the frame: one informer of Database objects, one queue keyed by (namespace, name)."""

from __future__ import annotations

import datetime

from kubernetes_asyncio import client

from controller.databases.reconciler import DatabaseKey, Databases
from controller.frame.loop import Loop
from controller.frame.queue import WorkQueue
from controller.frame.settings import Settings
from kubeio.informer import Informer
from rules import database as database_rules
from rules.names import DATABASE_TYPE, SECRET_TYPE_LABEL
from rules.workloads import resource_path


def database_loop(
    api: client.ApiClient, settings: Settings, hmac_key: bytes, servers: dict[str, database_rules.Server]
) -> Loop[DatabaseKey]:
    """Databases: one key per Database object; a reconcile refused for good is told in its Ready condition."""
    queue: WorkQueue[DatabaseKey] = WorkQueue()
    databases = Databases(
        api,
        queue,
        servers=servers,
        namespace=settings.namespace,
        hmac_key=hmac_key,
        grace=datetime.timedelta(seconds=settings.rotation_grace_seconds),
    )

    async def failed(key: DatabaseKey, message: str) -> None:
        obj = databases.objects.get(key)
        if obj is not None:  # the Ready condition, and an Event when its reason changes
            await databases.status(obj, "False", "ReconcileFailed", message)

    informers = [
        Informer(api, resource_path("Database"), databases.objects),
        # Credentials Secrets, so that one edited by hand is put back at once (names and versions kept, no value).
        Informer(
            api,
            resource_path("Secret"),
            databases.secrets,
            query={"labelSelector": f"{SECRET_TYPE_LABEL}={DATABASE_TYPE}"},
            managed_fields=False,
        ),
    ]
    return Loop("databases", queue, informers, databases.reconcile, failed)
