"""Leader election on a coordination.k8s.io/v1 Lease, with optimistic concurrency.

The leader renews every ``retry_period``. A candidate takes over when the Lease record has not changed for
``lease_seconds`` as measured by its own monotonic clock since it saw the record change (``rules.lease``): the
holder's ``renewTime`` is never compared with our clock, so clock skew between replicas neither steals a live
lease nor keeps a dead one. A leader that cannot renew within ``renew_deadline`` (each attempt is cut off at the
deadline, so a dropped connection cannot hold it past it) steps down; the process then exits so that it starts
clean. Only transient errors (``kubeio.errors.transient``) are waited out; a refusal such as 403 ends acquiring
(with the error) or leading at once. On a graceful stop the leader releases the lease so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from kubeio.errors import conflict, describe_error, transient
from kubeio.rest import ApiException, json_request
from rules.lease import lease_free

log = logging.getLogger(__name__)


def _micro(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.now = now  # wall clock: only written into the Lease, for people reading it
        self.clock = clock  # monotonic: every decision
        self.leading = asyncio.Event()
        self.observed: dict[str, Any] | None = None  # the Lease record as last seen to change…
        self.observed_at = 0.0  # …and when, on self.clock

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        stamp = _micro(self.now())
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": acquired or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any]) -> None:
        if spec != self.observed:
            self.observed = dict(spec)
            self.observed_at = self.clock()

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease afterwards. Raises what the API raised, but for a
        conflict (another replica wrote first), which is a plain False."""
        try:
            lease = await json_request(self.api, "GET", f"{self.path}/{self.name}")
        except ApiException as error:
            if error.status != 404:
                raise
            spec = self._spec(None, 0)
            body = {"metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            try:
                await json_request(self.api, "POST", self.path, body=body)
            except ApiException as raced:
                if conflict(raced):
                    return False
                raise
            self._observe(spec)
            return True
        spec = lease.get("spec") or {}
        self._observe(spec)
        mine = spec.get("holderIdentity") == self.identity
        free = lease_free(
            spec,
            identity=self.identity,
            observed_at=self.observed_at,
            now=self.clock(),
            default_seconds=self.lease_seconds,
        )
        if not free:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(spec.get("acquireTime") if mine else None, transitions)
        try:
            await json_request(self.api, "PUT", f"{self.path}/{self.name}", body=lease)
        except ApiException as raced:
            if conflict(raced):
                return False
            raise
        self._observe(lease["spec"])
        return True

    async def acquire(self) -> None:
        """Wait until this replica leads. Transient errors are retried; any other error is raised, and then this
        replica does not lead."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.leading.set()
                    log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                    return
            except Exception as error:
                if not transient(error):
                    log.error("leader election: the Lease %s/%s: %s", self.namespace, self.name, describe_error(error))
                    raise
                log.warning("leader election: %s; trying again", describe_error(error))
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew while leading; returns (no longer leading) when the lease went to another replica, a renewal was
        refused for good, or no renewal succeeded within ``renew_deadline``."""
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            await asyncio.sleep(self.retry_period)
            deadline = renewed_at + self.renew_deadline
            try:
                async with asyncio.timeout_at(deadline):
                    renewed = await self.try_acquire_or_renew()
            except Exception as error:
                if not transient(error):
                    log.error("renewing the lease was refused: %s", describe_error(error))
                    break
                if loop.time() >= deadline:
                    log.error("could not renew the lease within %.1fs: %s", self.renew_deadline, describe_error(error))
                    break
                log.warning("could not renew the lease yet: %s", describe_error(error))
                continue
            if not renewed:
                log.error("%s lost the lease to another replica", self.identity)
                break
            renewed_at = loop.time()
        self.leading.clear()

    async def release(self) -> None:
        if not self.leading.is_set():
            return
        try:
            lease = await json_request(self.api, "GET", f"{self.path}/{self.name}")
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                await json_request(self.api, "PUT", f"{self.path}/{self.name}", body=lease)
        except Exception as error:  # best effort: the lease then expires on its own
            log.warning("could not release the lease: %s", describe_error(error))
        self.leading.clear()
