"""The gateway's two platform calls (references.md §1), through the shared platform client.

`docrelay.platform.client` owns the HTTP details (auth header, retries, safe errors); this
module only says which requests the gateway and `docrelay subscribe` make.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from docrelay.platform.client import PlatformClient, activate_subscription, create_subscription
from docrelay.platform.errors import PlatformError

DEFAULT_EVENTS = ("document.parse.completed", "document.validate.completed")

__all__ = ["DEFAULT_EVENTS", "PlatformError", "activate", "subscribe"]


def _client(base_url: str, token: str | None) -> PlatformClient:
    if not token:
        raise PlatformError("no platform token (DOCRELAY_GATEWAY_PLATFORM_TOKEN)")
    return PlatformClient(base_url, token)


def activate(base_url: str, token: str | None, hook_secret: str) -> None:
    """Second half of the handshake: the platform sent X-Hook-Secret; hand it back."""
    with _client(base_url, token) as platform:
        platform.call(activate_subscription(hook_secret))


def subscribe(
    base_url: str,
    token: str | None,
    *,
    target_url: str,
    events: Iterable[str],
    organization: str,
    workspace: str | None,
) -> list[tuple[str, dict[str, Any]]]:
    """One subscription per event; returns (event, the platform's answer) pairs."""
    created = []
    with _client(base_url, token) as platform:
        for event in events:
            answer = platform.call(
                create_subscription(target_url, event, organization, workspace=workspace)
            )
            created.append((event, answer))
    return created
