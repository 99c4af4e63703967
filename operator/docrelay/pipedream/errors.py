"""Typed errors of the Pipedream Connect client.

Every error carries ``status_code`` (or None) and ``retryable``: the attributes the runner's
contract reads (docs/runner.md), so an error that reaches user code classifies itself.
Messages name the call and the status only: never a secret, a token or a response body
(kopf stores exception text in annotations; runs show it to users).
"""

from __future__ import annotations


class ConnectError(Exception):
    """A Pipedream Connect call failed."""

    retryable: bool = False

    def __init__(
        self, message: str, *, status_code: int | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        if retryable is not None:
            self.retryable = retryable


class ConnectUnavailable(ConnectError):
    """Pipedream could not be reached (connection refused, timeout, protocol error)."""

    retryable = True


class RateLimited(ConnectError):
    """429: Pipedream's limit (or ours, before the call) was hit. Retry after ``retry_after``."""

    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, status_code: int | None = 429
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class UpstreamTimeout(ConnectError):
    """504: the target API did not answer within the proxy's 30 s."""

    retryable = True


class Unauthorized(ConnectError):
    """401 from Pipedream: wrong client credentials, or a token refused even after a refresh."""


class NotFound(ConnectError):
    """404: no such account, action or project."""


class UpstreamError(ConnectError):
    """The target API answered non-2xx through the proxy. Retryable when 5xx."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, retryable=status_code >= 500)
        # Kept for the caller to inspect; deliberately not part of the message.
        self.body = body
        self.headers = headers or {}


class ActionFailed(ConnectError):
    """actions/run answered 2xx but the action itself reported an error."""
