"""Leader election over a coordination.k8s.io Lease: what to do next, decided without I/O.

Two or more operator processes share one Lease; the one named in `holderIdentity` is active,
the others wait (docs/operator.md, "High availability"). As in client-go's leaderelection, a
lease is judged expired by this process's own clock: the record (holder and renewTime) must
stay unchanged for `leaseDurationSeconds` since this process first saw it, so clocks that
disagree between machines cannot make two leaders. An empty holder is a lease given back on
a clean shutdown: it is free at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Step = Literal["create", "take", "renew", "wait"]

# The active process's webhook address (host:port), which standbys relay the webhook port to.
WEBHOOK_ANNOTATION = "docrelay.io/webhook-endpoint"


@dataclass(frozen=True)
class Timing:
    """Failover takes at most `duration` + `retry` after the active process's last renewal,
    then the new one's start. `renew_deadline` < `duration`: an active process that could not
    renew that long stops acting before anyone else may take over."""

    duration: int = 8  # leaseDurationSeconds
    renew_every: float = 2.0
    renew_deadline: float = 5.0
    retry: float = 1.0  # how often a waiting process looks

    def __post_init__(self) -> None:
        if not self.retry <= self.renew_every < self.renew_deadline < self.duration:
            raise ValueError("need retry <= renew_every < renew_deadline < duration")


@dataclass(frozen=True)
class Seen:
    """The record as this process last saw it, and when (its monotonic clock) it first did."""

    holder: str
    renew_time: str
    since: float


def spec_of(lease: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (lease or {}).get("spec") or {}


def observe(previous: Seen | None, lease: Mapping[str, Any], now: float) -> Seen:
    """`previous` if the record did not change, else the new record seen from `now`."""
    spec = spec_of(lease)
    holder = str(spec.get("holderIdentity") or "")
    renewed = str(spec.get("renewTime") or "")
    if previous is not None and (previous.holder, previous.renew_time) == (holder, renewed):
        return previous
    return Seen(holder, renewed, now)


def next_step(lease: Mapping[str, Any] | None, me: str, seen: Seen | None, now: float) -> Step:
    """What this process (`me`) does with the Lease as read (None: there is none)."""
    if lease is None:
        return "create"
    spec = spec_of(lease)
    holder = str(spec.get("holderIdentity") or "")
    if holder == me:
        return "renew"
    if not holder:
        return "take"
    duration = int(spec.get("leaseDurationSeconds") or 0)
    if seen is None or seen.holder != holder:
        return "wait"  # first sight of this holder: give it a full duration from now
    return "take" if now - seen.since >= duration else "wait"


def micro_time(at: datetime) -> str:
    """A MicroTime as the API server writes it."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claimed(
    lease: Mapping[str, Any] | None, me: str, timing: Timing, at: datetime
) -> dict[str, Any]:
    """The Lease's spec with `me` holding it from `at` (acquired now, or renewed)."""
    spec = dict(spec_of(lease))
    now = micro_time(at)
    if spec.get("holderIdentity") != me:  # acquired now: a new holder (none at creation)
        transitions = int(spec.get("leaseTransitions") or 0) + (1 if spec else 0)
        spec.update(acquireTime=now, leaseTransitions=transitions)
    spec.update(holderIdentity=me, leaseDurationSeconds=timing.duration, renewTime=now)
    return spec


def released(lease: Mapping[str, Any], at: datetime) -> dict[str, Any]:
    """The Lease's spec given back (a clean shutdown): no holder, free at once."""
    spec = dict(spec_of(lease))
    spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time(at))
    return spec


def webhook_target(lease: Mapping[str, Any] | None) -> tuple[str, int] | None:
    """Where the Lease's holder serves its webhooks (None: no holder, or not said)."""
    if not spec_of(lease).get("holderIdentity"):
        return None
    annotations = ((lease or {}).get("metadata") or {}).get("annotations") or {}
    host, _, port = str(annotations.get(WEBHOOK_ANNOTATION) or "").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


def webhook_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
