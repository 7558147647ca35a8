"""Leader election on a coordination.k8s.io/v1 Lease, with optimistic concurrency.

The leader renews every ``retry_period``; a replica takes over when the holder has not renewed for
``lease_seconds``. A leader that cannot renew within ``renew_deadline`` steps down (the process then exits so that it
starts clean). On a graceful stop the leader releases the lease so that a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from kubeio.rest import ApiException, json_request

log = logging.getLogger(__name__)


def _micro(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> datetime.datetime | None:
    if not stamp:
        return None
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)


def expired(spec: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether a lease is free to take: no holder, or no renewal for its duration."""
    if not spec.get("holderIdentity"):
        return True
    renewed = _parse(spec.get("renewTime"))
    duration = datetime.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))
    return renewed is None or renewed + duration < now


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.now = now
        self.leading = asyncio.Event()

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        stamp = _micro(self.now())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": acquired or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        try:
            lease = await json_request(self.api, "GET", f"{self.path}/{self.name}")
        except ApiException as error:
            if error.status != 404:
                raise
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(None, 0)}
            try:
                await json_request(self.api, "POST", self.path, body=body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        mine = spec.get("holderIdentity") == self.identity
        if not mine and not expired(spec, self.now()):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(spec.get("acquireTime") if mine else None, transitions)
        try:
            await json_request(self.api, "PUT", f"{self.path}/{self.name}", body=lease)
        except ApiException as conflict:
            if conflict.status == 409:
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this replica leads."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.leading.set()
                    log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                    return
            except (TimeoutError, ApiException, OSError) as error:
                log.warning("leader election: %s", error)
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew while leading; returns when the lease is lost."""
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    last_renewed = asyncio.get_running_loop().time()
                    continue
                log.error("%s lost the lease to another replica", self.identity)
            except (TimeoutError, ApiException, OSError) as error:
                if asyncio.get_running_loop().time() - last_renewed < self.renew_deadline:
                    log.warning("could not renew the lease yet: %s", error)
                    continue
                log.error("could not renew the lease within %.0fs: %s", self.renew_deadline, error)
            self.leading.clear()
            return

    async def release(self) -> None:
        if not self.leading.is_set():
            return
        try:
            lease = await json_request(self.api, "GET", f"{self.path}/{self.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                await json_request(self.api, "PUT", f"{self.path}/{self.name}", body=lease)
        except (TimeoutError, ApiException, OSError) as error:
            log.warning("could not release the lease: %s", error)
        self.leading.clear()
