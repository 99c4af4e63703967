"""The document platform's v3 API: an httpx client, typed errors, and per-document-type
pydantic models generated from the types' JSON schemas (`docrelay.platform.models`)."""

from docrelay.platform.client import (
    DEFAULT_TIMEOUT,
    ApiRequest,
    AsyncPlatformClient,
    PlatformClient,
    RetryPolicy,
)
from docrelay.platform.errors import (
    InvalidRequest,
    InvalidResponse,
    NotFound,
    PlatformError,
    RateLimited,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiRequest",
    "AsyncPlatformClient",
    "InvalidRequest",
    "InvalidResponse",
    "NotFound",
    "PlatformClient",
    "PlatformError",
    "RateLimited",
    "RetryPolicy",
    "Unauthorized",
    "Unavailable",
]
