"""Leader election: the Lease calls (decisions: docrelay.reconcile.lease).

`LeaderElection.acquire()` blocks until this process holds the Lease; `keep()` renews it from a
thread and, if renewing fails for `renew_deadline`, calls `lost` (the operator then exits at
once: a process that may no longer be the only active one must stop acting, and its restart
waits as a standby); `release()` gives it back on a clean shutdown so a standby takes over
without waiting out the lease. Writes carry the resourceVersion read, so two processes racing
for a free lease cannot both win (the loser gets 409 and waits).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from docrelay.reconcile.lease import (
    WEBHOOK_ANNOTATION,
    Seen,
    Timing,
    claimed,
    next_step,
    observe,
    released,
    webhook_target,
)

log = logging.getLogger("docrelay.lease")

LEASE_NAME = "docrelay-operator"


class LeaderElection:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        timing: Timing | None = None,
        webhook_endpoint: str | None = None,
    ) -> None:
        """`webhook_endpoint` (host:port): where this process serves its webhooks once
        active, written on the Lease for the standbys' relay."""
        self._api = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or Timing()
        self._annotations = {WEBHOOK_ANNOTATION: webhook_endpoint} if webhook_endpoint else {}
        self._seen: Seen | None = None
        self._last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.leading = False

    # --- the calls ----------------------------------------------------------------------------

    def _read(self) -> dict[str, Any] | None:
        try:
            answer = self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=(3, 5)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(answer.data))

    def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
        """Create or replace (compare-and-set on resourceVersion); False: someone was first."""
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "annotations": self._annotations,
                    },
                    "spec": spec,
                }
                self._api.create_namespaced_lease(self.namespace, body, _request_timeout=(3, 5))
            else:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "namespace": self.namespace,
                        "resourceVersion": lease["metadata"]["resourceVersion"],
                        "annotations": (
                            self._annotations
                            if spec.get("holderIdentity") == self.identity
                            else {}  # given back: nobody's address
                        ),
                    },
                    "spec": spec,
                }
                self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=(3, 5)
                )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def try_acquire_or_renew(self) -> bool:
        """One look at the Lease; True if this process holds it afterwards."""
        lease = self._read()
        self._last = lease
        now = time.monotonic()
        if lease is not None:
            self._seen = observe(self._seen, lease, now)
        step = next_step(lease, self.identity, self._seen, now)
        if step == "wait":
            return False
        if step == "take" and lease is not None:
            holder = (lease.get("spec") or {}).get("holderIdentity") or "nobody"
            log.info("taking over the operator lease from %s", holder)
        return self._write(lease, claimed(lease, self.identity, self.timing, datetime.now(UTC)))

    def active_webhook(self) -> tuple[str, int] | None:
        """The holder's webhook address as last read (a standby relays to it)."""
        return webhook_target(self._last)

    # --- the lifecycle ------------------------------------------------------------------------

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until this process holds the Lease (True), or until `stop` is set (False)."""
        stop = stop or self._stop
        announced = False
        while not stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    self.leading = True
                    log.info("active: holding the lease %s/%s", self.namespace, self.name)
                    return True
            except (ApiException, OSError, ValueError) as exc:
                log.warning("operator lease not readable yet (%s); retrying", _why(exc))
            if not announced:
                holder = self._seen.holder if self._seen else "?"
                log.info(
                    "standby: the lease %s/%s is held by %s", self.namespace, self.name, holder
                )
                announced = True
            stop.wait(self.timing.retry)
        return False

    def keep(self, lost: Callable[[], None]) -> None:
        """Renew from a daemon thread; `lost()` once renewing has failed for renew_deadline."""

        def renew() -> None:
            last_ok = time.monotonic()
            while not self._stop.wait(self.timing.renew_every):
                try:
                    if self.try_acquire_or_renew():
                        last_ok = time.monotonic()
                        continue
                    why = "another process holds it"
                except (ApiException, OSError, ValueError) as exc:
                    why = _why(exc)
                if self._stop.is_set():
                    return
                if self._seen is not None and self._seen.holder not in ("", self.identity):
                    break  # taken over: stop at once
                if time.monotonic() - last_ok >= self.timing.renew_deadline:
                    break
                log.warning("operator lease not renewed (%s); retrying", why)
            if self._stop.is_set():
                return
            self.leading = False
            log.error("lost the operator lease %s/%s; stopping", self.namespace, self.name)
            lost()

        self._thread = threading.Thread(target=renew, name="operator-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and give the Lease back if this process still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timing.renew_deadline)
        if not self.leading:
            return
        self.leading = False
        try:
            lease = self._read()
            holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
            if lease is not None and holder == self.identity:
                self._write(lease, released(lease, datetime.now(UTC)))
                log.info("gave back the operator lease %s/%s", self.namespace, self.name)
        except (ApiException, OSError, ValueError) as exc:
            log.warning("could not give back the operator lease (%s)", _why(exc))


def _why(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"API {exc.status}"
    return type(exc).__name__
