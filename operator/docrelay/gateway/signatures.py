"""Verifying webhook deliveries: the platform's RESThooks and Standard Webhooks.

Pure functions over the raw body and headers; the HTTP layer maps the errors to statuses.
Both checks compare in constant time and refuse timestamps outside a tolerance, so a
captured delivery cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A delivery is not authentic or not fresh; the message is safe to return to callers."""

    status = 401


class StaleTimestamp(SignatureError):
    pass


class MissingSignature(SignatureError):
    pass


@dataclass(frozen=True)
class Verified:
    """What a verified delivery tells us beyond its body."""

    timestamp: int
    delivery_id: str | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _check_fresh(timestamp: int, now: float, tolerance: int) -> None:
    if abs(now - timestamp) > tolerance:
        raise StaleTimestamp(
            f"timestamp outside the {tolerance} s tolerance; deliveries cannot be replayed"
        )


def _parse_timestamp(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SignatureError("signature timestamp is not an integer") from None
    # Milliseconds are accepted too: some senders use them.
    return value // 1000 if value > 10**11 else value


def verify_resthook(
    body: bytes,
    headers: Mapping[str, str],
    keys: Iterable[bytes],
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Verified:
    """``X-Hook-Signature: <timestamp>.<hex HMAC-SHA256 of the raw body>``.

    Several keys may be configured (rotation); any one matching is enough. The HMAC covers
    the body only, so the header's timestamp is not authenticated by itself: the caller
    must also check the body's own ``timestamp`` field for freshness (it is signed).
    """
    header = _header(headers, "X-Hook-Signature")
    if not header:
        raise MissingSignature("missing X-Hook-Signature header")
    timestamp_text, _, signature = header.strip().partition(".")
    if not signature:
        raise SignatureError("X-Hook-Signature must be <timestamp>.<hex signature>")
    timestamp = _parse_timestamp(timestamp_text)
    try:
        given = bytes.fromhex(signature)
    except ValueError:
        raise SignatureError("X-Hook-Signature's signature is not hex") from None
    if not any(
        hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), given) for key in keys
    ):
        raise SignatureError("signature does not match")
    _check_fresh(timestamp, now, tolerance)
    return Verified(timestamp=timestamp)


def sign_resthook(body: bytes, key: bytes, timestamp: int) -> str:
    """The header value a sender computes (used by the platform stand-in and tests)."""
    return f"{timestamp}.{hmac.new(key, body, hashlib.sha256).hexdigest()}"


def standard_webhooks_key(secret: str) -> bytes:
    """A Standard Webhooks secret is base64, often prefixed ``whsec_``."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a Standard Webhooks secret must be base64 (optionally whsec_...)"
        ) from None


def verify_standard_webhook(
    body: bytes,
    headers: Mapping[str, str],
    keys: Iterable[bytes],
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Verified:
    """Standard Webhooks: HMAC-SHA256 over ``id.timestamp.body``; ``webhook-signature`` holds
    space-separated ``v1,<base64>`` entries, any of which may match (key rotation)."""
    delivery_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not (delivery_id and timestamp_text and signatures):
        raise MissingSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = _parse_timestamp(timestamp_text)
    signed = f"{delivery_id}.{timestamp_text}.".encode() + body
    given = []
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            given.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not given:
        raise SignatureError("webhook-signature has no v1 signature")
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    if not any(hmac.compare_digest(e, g) for e in expected for g in given):
        raise SignatureError("signature does not match")
    _check_fresh(timestamp, now, tolerance)
    return Verified(timestamp=timestamp, delivery_id=delivery_id)


def sign_standard_webhook(body: bytes, key: bytes, delivery_id: str, timestamp: int) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
