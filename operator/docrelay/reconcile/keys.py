"""When the sealing key ring gets a new key: on schedule, or when someone asked for one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from docrelay.builders.sealing import RENEW_HANDLED_ANNOTATION, RENEW_REQUESTED_ANNOTATION
from docrelay.sealing import KeyRing


@dataclass(frozen=True)
class Renewal:
    why: str  # for the log and the Secret's annotations: "scheduled" or "requested"
    handled_request: str | None  # the request id to record as handled


def decide_renewal(
    ring: KeyRing, annotations: Mapping[str, str], now: datetime, period: timedelta
) -> Renewal | None:
    """A renewal, or None. A request is handled once: its id is recorded with the new key."""
    requested = annotations.get(RENEW_REQUESTED_ANNOTATION)
    if requested and requested != annotations.get(RENEW_HANDLED_ANNOTATION):
        return Renewal("requested", requested)
    if ring.needs_renewal(now, period):
        return Renewal("scheduled", None)
    return None
