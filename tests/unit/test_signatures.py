"""Webhook verification: what is accepted, and what each refusal says."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from docrelay.gateway.signatures import (
    MissingSignature,
    SignatureError,
    StaleTimestamp,
    Verified,
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


# --- known answers: signatures made by someone else, not by our own sign_* functions -----------

# The Standard Webhooks project's published test vector: the secret, message id, timestamp,
# payload and expected signature its reference libraries' tests pin (TestWebhookSign in
# libraries/go/webhook_test.go, test_sign_function in libraries/python/tests/test_webhooks.py,
# github.com/standard-webhooks/standard-webhooks).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_PAYLOAD = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The same libraries' refusal vectors: the valid signature with its last character changed,
# and an unrelated v1 signature.
SW_WRONG_LAST_CHAR = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
SW_UNRELATED = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="


def _sw_headers(signature: str = SW_SIGNATURE, **changes: str) -> dict[str, str]:
    return {
        "webhook-id": SW_MSG_ID,
        "webhook-timestamp": str(SW_TIMESTAMP),
        "webhook-signature": signature,
        **changes,
    }


@pytest.mark.parametrize("secret", [SW_SECRET, SW_SECRET.removeprefix("whsec_")])
def test_standard_webhooks_published_vector_verifies(secret: str) -> None:
    key = standard_webhooks_key(secret)
    verified = verify_standard_webhook(SW_PAYLOAD, _sw_headers(), [key], now=SW_TIMESTAMP)
    assert verified == Verified(timestamp=SW_TIMESTAMP, delivery_id=SW_MSG_ID)


def test_our_standard_webhooks_signer_matches_the_published_vector() -> None:
    key = standard_webhooks_key(SW_SECRET)
    assert sign_standard_webhook(SW_PAYLOAD, key, SW_MSG_ID, SW_TIMESTAMP) == SW_SIGNATURE


def test_standard_webhooks_published_multi_signature_header_verifies() -> None:
    header = f"{SW_UNRELATED} v2,{SW_UNRELATED[3:]} {SW_SIGNATURE} {SW_UNRELATED}"
    key = standard_webhooks_key(SW_SECRET)
    assert verify_standard_webhook(SW_PAYLOAD, _sw_headers(header), [key], now=SW_TIMESTAMP)


@pytest.mark.parametrize(
    ("case", "payload", "headers"),
    [
        ("one byte of the body changed", b'{"test": 2432232315}', _sw_headers()),
        ("a space added to the body", SW_PAYLOAD + b" ", _sw_headers()),
        ("the body re-serialized", b'{"test":2432232314}', _sw_headers()),
        ("the published wrong signature", SW_PAYLOAD, _sw_headers(SW_WRONG_LAST_CHAR)),
        ("an unrelated signature", SW_PAYLOAD, _sw_headers(SW_UNRELATED)),
        ("another message id", SW_PAYLOAD, _sw_headers(**{"webhook-id": "msg_other"})),
        (
            "another timestamp",
            SW_PAYLOAD,
            _sw_headers(**{"webhook-timestamp": str(SW_TIMESTAMP + 1)}),
        ),
    ],
)
def test_standard_webhooks_published_vector_tampered_is_refused(
    case: str, payload: bytes, headers: dict[str, str]
) -> None:
    key = standard_webhooks_key(SW_SECRET)
    with pytest.raises(SignatureError, match="does not match"):
        verify_standard_webhook(payload, headers, [key], now=SW_TIMESTAMP + 1)


# A RESThook delivery signed as the platform documents it (docs/platform.md; the platform's
# webhook docs): X-Hook-Signature is "<timestamp>.<hex HMAC-SHA256 of the raw body with the
# organisation's signature key>". The digest below was computed outside Python with
# `printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$KEY"`; the test recomputes it with hmac.
RH_KEY = b"org-signature-key-from-the-platform"
RH_BODY = (
    b'{"event":"document.parse.completed","timestamp":"2026-01-01T00:00:00Z","payload":'
    b'{"identifier":"doc_7Qm2","workspace":"mEFayXdO","documentType":"tVpGRBWd"}}'
)
RH_TIMESTAMP = 1767225600  # 2026-01-01T00:00:00Z
RH_DIGEST = "d9679ae8e2adc482d94a94d832a66e3a5e36078804f9ecb50100405dd9a72db5"


def test_resthook_signature_computed_by_hand_verifies() -> None:
    by_hand = hmac.new(RH_KEY, RH_BODY, hashlib.sha256).hexdigest()
    assert by_hand == RH_DIGEST  # the hand computation agrees with openssl's
    header = f"{RH_TIMESTAMP}.{by_hand}"
    verified = verify_resthook(RH_BODY, {"X-Hook-Signature": header}, [RH_KEY], now=RH_TIMESTAMP)
    assert verified == Verified(timestamp=RH_TIMESTAMP)
    # Upper-case hex and the timestamp in milliseconds are the same signature.
    header = f"{RH_TIMESTAMP * 1000}.{by_hand.upper()}"
    assert verify_resthook(RH_BODY, {"X-Hook-Signature": header}, [RH_KEY], now=RH_TIMESTAMP)
    assert sign_resthook(RH_BODY, RH_KEY, RH_TIMESTAMP) == f"{RH_TIMESTAMP}.{RH_DIGEST}"


def test_resthook_hand_signature_over_a_tampered_body_is_refused() -> None:
    header = f"{RH_TIMESTAMP}.{RH_DIGEST}"
    tampered = RH_BODY.replace(b"doc_7Qm2", b"doc_7Qm3")
    with pytest.raises(SignatureError, match="does not match"):
        verify_resthook(tampered, {"X-Hook-Signature": header}, [RH_KEY], now=RH_TIMESTAMP)


# --- the 300 s tolerance, exactly at the boundary and one second past, on both sides ---------


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (-300, True), (300, True), (-301, False), (301, False)],
    ids=["now", "300s-old", "300s-ahead", "301s-old", "301s-ahead"],
)
def test_resthook_tolerance_boundary(offset: int, accepted: bool) -> None:
    # Signed by hand at a timestamp `offset` seconds from now (a negative offset: in the past).
    header = f"{RH_TIMESTAMP + offset}.{RH_DIGEST}"
    check = lambda: verify_resthook(  # noqa: E731
        RH_BODY, {"X-Hook-Signature": header}, [RH_KEY], now=RH_TIMESTAMP, tolerance=300
    )
    if accepted:
        assert check().timestamp == RH_TIMESTAMP + offset
    else:
        with pytest.raises(StaleTimestamp, match="outside the 300 s tolerance"):
            check()


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(0, True), (-300, True), (300, True), (-301, False), (301, False)],
    ids=["now", "300s-old", "300s-ahead", "301s-old", "301s-ahead"],
)
def test_standard_webhooks_tolerance_boundary(offset: int, accepted: bool) -> None:
    # The published vector is signed at SW_TIMESTAMP; the receiver's clock moves instead.
    key = standard_webhooks_key(SW_SECRET)
    now = SW_TIMESTAMP - offset  # the delivery's timestamp is `offset` from the receiver's now
    check = lambda: verify_standard_webhook(  # noqa: E731
        SW_PAYLOAD, _sw_headers(), [key], now=now, tolerance=300
    )
    if accepted:
        assert check().delivery_id == SW_MSG_ID
    else:
        with pytest.raises(StaleTimestamp, match="outside the 300 s tolerance"):
            check()


def test_the_default_tolerance_is_300_seconds() -> None:
    key = standard_webhooks_key(SW_SECRET)
    assert verify_standard_webhook(SW_PAYLOAD, _sw_headers(), [key], now=SW_TIMESTAMP + 300)
    with pytest.raises(StaleTimestamp):
        verify_standard_webhook(SW_PAYLOAD, _sw_headers(), [key], now=SW_TIMESTAMP + 301)
    header = {"X-Hook-Signature": f"{RH_TIMESTAMP}.{RH_DIGEST}"}
    assert verify_resthook(RH_BODY, header, [RH_KEY], now=RH_TIMESTAMP - 300)
    with pytest.raises(StaleTimestamp):
        verify_resthook(RH_BODY, header, [RH_KEY], now=RH_TIMESTAMP - 301)
