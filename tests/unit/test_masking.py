"""Secret values are masked in every form a log commonly carries them."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from docrelay.masking import MASK, Masker, contains_any_form, too_short_to_mask

CANARY = 'sk_live_c4n4ry/+=&"value'
OTHER = "tok-9f8e7d6c"


@pytest.fixture
def masker() -> Masker:
    return Masker([CANARY, OTHER])


@pytest.mark.parametrize(
    ("form", "encoded"),
    [
        ("raw", CANARY),
        ("base64", base64.b64encode(CANARY.encode()).decode()),
        ("base64 unpadded", base64.b64encode(CANARY.encode()).decode().rstrip("=")),
        ("urlsafe base64", base64.urlsafe_b64encode(CANARY.encode()).decode()),
        ("json-escaped", json.dumps(CANARY)[1:-1]),
        ("url-encoded", quote(CANARY, safe="")),
        ("form-encoded", quote_plus(CANARY)),
    ],
)
def test_every_form_is_masked(masker: Masker, form: str, encoded: str) -> None:
    line = f"calling api with {encoded} now"
    masked = masker.mask(line)
    assert encoded not in masked
    assert masked.startswith("calling api with ") and masked.endswith(" now")
    assert MASK in masked


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"Authorization: Basic "])
def test_base64_inside_a_longer_base64_text_is_masked(masker: Masker, prefix: bytes) -> None:
    blob = base64.b64encode(prefix + b"user:" + CANARY.encode() + b":tail").decode()
    masked = masker.mask(blob)
    assert masked.count(MASK) == 1
    # Put filler where the mask is and decode: the value must not come back.
    hidden = len(blob) - (len(masked) - len(MASK))
    refilled = masked.replace(MASK, "A" * hidden)
    assert CANARY.encode() not in base64.b64decode(refilled)
    assert CANARY.encode()[:8] not in base64.b64decode(refilled)


def test_text_without_secrets_is_untouched(masker: Masker) -> None:
    line = "invoice INV-001 exported: 200 OK"
    assert masker.mask(line) == line


def test_no_values_means_no_change() -> None:
    assert Masker([]).mask("anything") == "anything"


@pytest.mark.parametrize("split", range(1, len(CANARY)))
def test_value_split_across_two_writes_is_masked(masker: Masker, split: int) -> None:
    stream = masker.stream()
    out = stream.feed(f"key={CANARY[:split]}") + stream.feed(f"{CANARY[split:]} end\n")
    out += stream.flush()
    assert out == f"key={MASK} end\n"


def test_stream_emits_promptly_what_cannot_be_a_secret(masker: Masker) -> None:
    stream = masker.stream()
    emitted = stream.feed("x" * 200)
    assert len(emitted) >= 200 - masker.longest
    assert emitted + stream.flush() == "x" * 200


def test_stream_of_many_small_writes(masker: Masker) -> None:
    text = f"a {CANARY} b {OTHER} c " * 3
    stream = masker.stream()
    out = "".join(stream.feed(ch) for ch in text) + stream.flush()
    assert out == masker.mask(text)
    assert CANARY not in out and OTHER not in out


@pytest.mark.parametrize(("value", "short"), [("abc", True), ("abcd", False), ("", True)])
def test_values_too_short_to_mask_are_named(value: str, short: bool) -> None:
    assert too_short_to_mask(value) is short


def test_contains_any_form_finds_encoded_canaries() -> None:
    text = "leak: " + quote(CANARY, safe="")
    assert contains_any_form(text, [CANARY]) == [quote(CANARY, safe="")]
    assert contains_any_form("clean", [CANARY]) == []


def test_a_long_value_is_masked_in_every_form() -> None:
    """A private key or a long token: thousands of characters, every form masked."""
    value = "-----BEGIN KEY-----\n" + "é/+😀" * 1500 + "\n-----END KEY-----"
    masker = Masker([value])
    in_json_in_json = json.dumps(json.dumps(value)[1:-1])[1:-1]
    for form in (value, in_json_in_json, value.encode().hex(), quote(value)):
        assert masker.mask(f"x {form} y") == f"x {MASK} y"
