"""Typed errors of the document platform's API.

Callers decide on the type (retry `retryable` ones later, give up on the rest); the message
says what failed (method, path, status, the platform's error code and detail) and never holds
the API key or a hook secret: kopf copies exception messages into annotations and Events.
"""

from __future__ import annotations


class PlatformError(Exception):
    """A platform call failed. `status` is None when no HTTP answer arrived."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.method = method
        self.path = path
        self.retry_after = retry_after


class NotFound(PlatformError):
    """404: no such document, document type or subscription (or not visible to this key)."""


class Unauthorized(PlatformError):
    """401 or 403: the API key is missing, wrong, revoked, or lacks access."""


class InvalidRequest(PlatformError):
    """Another 4xx: the request itself is wrong; repeating it will not help."""


class InvalidResponse(PlatformError):
    """A 2xx whose body is not the JSON the contract promises."""


class RateLimited(PlatformError):
    """429 after the client's bounded retries; `retry_after` says when to try again."""

    retryable = True


class Unavailable(PlatformError):
    """5xx, a timeout or no connection, after the client's bounded retries."""

    retryable = True
