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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from docrelay.gateway.egress import literal_address, special_use
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


# --- where a notice may go (docs/api.md, spec.notify) -------------------------------------------


class TargetRefused(ValueError):
    """A notification URL the operator will not call; the reason names no part of the URL
    (it is a sealed value)."""


@dataclass(frozen=True)
class PinnedUrl:
    """A notification URL bound to an address that was checked: the operator connects to
    `url` (the address in place of the name, never resolved again), sends `host` as the Host
    header and, for https, checks the certificate against `sni`."""

    url: str
    host: str
    sni: str | None


def url_host(url: str) -> tuple[str, int]:
    """The host name (or address) and port a notification URL names; TargetRefused if none."""
    try:
        split = urlsplit(url)
        port = split.port or (443 if split.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the value is not a valid URL") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise TargetRefused("the value is not an http(s) URL")
    return split.hostname, port


def pin_url(url: str, addresses: Sequence[str], allow_private: bool) -> PinnedUrl:
    """The URL bound to the first address that may be reached: a public one, or any when
    `allow_private` (the chart's `operator.notify.allowPrivateTargets`). Loopback, private,
    link-local (cloud metadata, 169.254.169.254), multicast, unspecified and other non-public
    addresses are refused otherwise: the operator's network is not the tenant's to reach."""
    split = urlsplit(url)
    host, _ = url_host(url)
    refused: list[str] = []
    for text in addresses:
        address = literal_address(text.split("%")[0])
        if address is None:
            continue
        reason = special_use(address)
        if reason is not None and not allow_private:
            refused.append(reason)
            continue
        literal = f"[{address}]" if address.version == 6 else str(address)
        userinfo = split.netloc.rpartition("@")[0]
        netloc = (f"{userinfo}@" if userinfo else "") + literal
        netloc += f":{split.port}" if split.port else ""
        shown = f"[{host}]" if ":" in host else host
        return PinnedUrl(
            url=urlunsplit((split.scheme, netloc, split.path, split.query, split.fragment)),
            host=shown + (f":{split.port}" if split.port else ""),
            sni=host if split.scheme == "https" and literal_address(host) is None else None,
        )
    if not refused:
        raise TargetRefused("the URL's host has no address")
    raise TargetRefused(
        f"the URL's host is a {refused[0]} address; the operator sends notifications to public "
        "addresses only (the chart's operator.notify.allowPrivateTargets allows others)"
    )
