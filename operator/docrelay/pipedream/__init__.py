"""Pipedream Connect: the client the broker uses to reach connected apps (docs/pipedream.md)."""

from docrelay.pipedream.client import ConnectClient, encode_target_url
from docrelay.pipedream.errors import (
    ActionFailed,
    ConnectError,
    ConnectUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from docrelay.pipedream.ratelimit import Acquired, ProjectBuckets, TokenBucket

__all__ = [
    "Acquired",
    "ActionFailed",
    "ConnectClient",
    "ConnectError",
    "ConnectUnavailable",
    "NotFound",
    "ProjectBuckets",
    "RateLimited",
    "TokenBucket",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "encode_target_url",
]
