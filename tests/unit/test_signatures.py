"""Webhook verification: what is accepted, and what each refusal says."""

from __future__ import annotations

import base64

import pytest

from docrelay.gateway.signatures import (
    MissingSignature,
    SignatureError,
    StaleTimestamp,
    sign_resthook,
    sign_standard_webhook,
    standard_webhooks_key,
    verify_resthook,
    verify_standard_webhook,
)

KEY = b"org-signature-key"
OTHER_TENANT_KEY = b"another-org-key"
BODY = b'{"event":"document.parse.completed","timestamp":1700000000,"payload":{}}'
NOW = 1_700_000_000


def test_resthook_signed_with_the_key_is_accepted() -> None:
    headers = {"X-Hook-Signature": sign_resthook(BODY, KEY, NOW)}
    assert verify_resthook(BODY, headers, [KEY], now=NOW).timestamp == NOW


def test_resthook_header_name_is_case_insensitive() -> None:
    headers = {"x-hook-signature": sign_resthook(BODY, KEY, NOW)}
    assert verify_resthook(BODY, headers, [KEY], now=NOW + 10).timestamp == NOW


def test_resthook_any_configured_key_may_match() -> None:
    headers = {"X-Hook-Signature": sign_resthook(BODY, KEY, NOW)}
    assert verify_resthook(BODY, headers, [OTHER_TENANT_KEY, KEY], now=NOW)


@pytest.mark.parametrize(
    ("case", "body", "header", "now", "error", "message"),
    [
        ("forged", BODY, f"{NOW}.{'ab' * 32}", NOW, SignatureError, "does not match"),
        ("other tenant's key", BODY, sign_resthook(BODY, OTHER_TENANT_KEY, NOW), NOW,
         SignatureError, "does not match"),
        ("tampered body", BODY + b" ", sign_resthook(BODY, KEY, NOW), NOW, SignatureError,
         "does not match"),
        ("6 minutes old", BODY, sign_resthook(BODY, KEY, NOW - 360), NOW, StaleTimestamp,
         "tolerance"),
        ("from the future", BODY, sign_resthook(BODY, KEY, NOW + 360), NOW, StaleTimestamp,
         "tolerance"),
        ("no dot", BODY, "abcdef", NOW, SignatureError, "<timestamp>.<hex signature>"),
        ("not hex", BODY, f"{NOW}.zz", NOW, SignatureError, "not hex"),
        ("bad timestamp", BODY, "yesterday.abcd", NOW, SignatureError, "not an integer"),
    ],
)
def test_resthook_refusals(
    case: str, body: bytes, header: str, now: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        verify_resthook(body, {"X-Hook-Signature": header}, [KEY], now=now)


def test_resthook_without_header() -> None:
    with pytest.raises(MissingSignature, match="missing X-Hook-Signature"):
        verify_resthook(BODY, {}, [KEY], now=NOW)


def _standard_headers(key: bytes, timestamp: int = NOW, delivery: str = "msg_1") -> dict[str, str]:
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard_webhook(BODY, key, delivery, timestamp),
    }


def test_standard_webhook_accepted_with_delivery_id() -> None:
    verified = verify_standard_webhook(BODY, _standard_headers(KEY), [KEY], now=NOW)
    assert verified.delivery_id == "msg_1"


def test_standard_webhook_several_signatures_for_key_rotation() -> None:
    headers = _standard_headers(KEY)
    old = sign_standard_webhook(BODY, OTHER_TENANT_KEY, "msg_1", NOW)
    headers["webhook-signature"] = f"{old} v2,ignored {headers['webhook-signature']}"
    assert verify_standard_webhook(BODY, headers, [KEY], now=NOW)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda h: h.update({"webhook-id": "msg_2"}), SignatureError, "does not match"),
        (lambda h: h.pop("webhook-id"), MissingSignature, "missing webhook-id"),
        (lambda h: h.update({"webhook-signature": "v2,abc"}), SignatureError, "no v1"),
        (lambda h: h.update({"webhook-timestamp": str(NOW - 360)}), SignatureError,
         "does not match"),
    ],
)
def test_standard_webhook_refusals(mutate, error: type[Exception], message: str) -> None:  # type: ignore[no-untyped-def]
    headers = _standard_headers(KEY)
    mutate(headers)
    with pytest.raises(error, match=message):
        verify_standard_webhook(BODY, headers, [KEY], now=NOW)


def test_standard_webhook_stale_even_when_signed() -> None:
    with pytest.raises(StaleTimestamp):
        verify_standard_webhook(BODY, _standard_headers(KEY, NOW - 360), [KEY], now=NOW)


def test_standard_webhooks_secret_format() -> None:
    raw = b"0123456789abcdef"
    assert standard_webhooks_key("whsec_" + base64.b64encode(raw).decode()) == raw
    with pytest.raises(ValueError, match="must be base64"):
        standard_webhooks_key("whsec_***")
