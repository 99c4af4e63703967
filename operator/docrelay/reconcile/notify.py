"""Notifications (spec.notify): what is sent, and whether it is sent now. Pure: the handler
(docrelay.handlers.notify) opens the sealed URL, signs and posts.

A notice names the namespace, the integration, what happened and the run (identifiers and our
own words only: never an error text from the code, a value or document data). The same notice
(integration, event, run) is sent once; at most RATE_LIMIT notices per integration per
RATE_WINDOW seconds, the rest dropped and counted in the next one that goes out.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from docrelay.models.integration import NotifyEvent

RATE_LIMIT = 10
RATE_WINDOW = 600.0
DEDUPE_MEMORY = 1000  # notices remembered for deduplication, per operator process

TYPES = {
    NotifyEvent.DEAD_LETTERED: "docrelay.run.dead_lettered",
    NotifyEvent.PAUSED: "docrelay.integration.paused",
    NotifyEvent.AGENT_TEST_FAILED: "docrelay.agent.test_failed",
}


@dataclass(frozen=True)
class Notice:
    namespace: str
    integration: str
    event: NotifyEvent
    subject: str  # the run or revision it is about; "" for the integration itself
    summary: str  # our words: phase and error class, a count; never foreign text

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.integration, self.event.value, self.subject)

    def text(self, dropped: int = 0) -> str:
        about = f" ({self.subject})" if self.subject else ""
        more = f" [{dropped} more notice(s) were rate-limited]" if dropped else ""
        return (
            f"docrelay: {self.namespace}/{self.integration}: {self.event.value}{about}: "
            f"{self.summary}{more}"
        )


def slack_body(notice: Notice, dropped: int = 0) -> bytes:
    """A Slack incoming webhook's message: `{"text": ...}`."""
    return json.dumps({"text": notice.text(dropped)}, separators=(",", ":")).encode()


def standard_body(notice: Notice, now: datetime, dropped: int = 0) -> bytes:
    """A Standard Webhooks event: `{type, timestamp, data}`."""
    return json.dumps(
        {
            "type": TYPES[notice.event],
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": {
                "namespace": notice.namespace,
                "integration": notice.integration,
                "event": notice.event.value,
                "subject": notice.subject or None,
                "summary": notice.summary,
                "text": notice.text(dropped),
                "rateLimited": dropped,
            },
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class Gate:
    """Deduplication and a sliding-window rate limit per integration."""

    limit: int = RATE_LIMIT
    window: float = RATE_WINDOW
    seen: deque[tuple[str, str, str, str]] = field(
        default_factory=lambda: deque(maxlen=DEDUPE_MEMORY)
    )
    sent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)

    def admit(self, notice: Notice, now: float) -> tuple[bool, int]:
        """Whether to send `notice` now, and how many were dropped before it (to say so).
        A duplicate is neither sent nor counted."""
        if notice.key in self.seen:
            return False, 0
        self.seen.append(notice.key)
        scope = (notice.namespace, notice.integration)
        times = self.sent.setdefault(scope, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            self.dropped[scope] = self.dropped.get(scope, 0) + 1
            return False, 0
        times.append(now)
        return True, self.dropped.pop(scope, 0)
