"""The tests' leak detector (tests/leakcheck.py) finds a canary in every form, alone or inside
other text and binary data, and nothing where there is none."""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
import shlex
from urllib.parse import quote, quote_plus

import pytest

from tests.leakcheck import SPECIAL, assert_clean, canary, found

CANARY = canary()
HEADER = canary(header=True)
# A value not made by canary(): no run of digits at its end to start the search from.
OTHER = "p@ss/wörd+\"x'=="


FORMS = {
    "raw": lambda v: v,
    "quote": quote,
    "quote safe=''": lambda v: quote(v, safe=""),
    "quote lower-case escapes": lambda v: quote(v).lower(),
    "quote_plus": quote_plus,
    "every byte %-escaped": lambda v: "".join(f"%{b:02x}" for b in v.encode()),
    "json": json.dumps,
    "json ensure_ascii=False": lambda v: json.dumps(v, ensure_ascii=False),
    "json in json": lambda v: json.dumps(json.dumps(v)),
    "json in json in json": lambda v: json.dumps(json.dumps(json.dumps(v))),
    "json, url-encoded": lambda v: quote(json.dumps(v)),
    "json html-safe (Go)": lambda v: json.dumps(v).replace("<", "\\u003c").replace("&", "\\u0026"),
    "repr": repr,
    "ascii": ascii,
    "repr of bytes": lambda v: repr(v.encode()),
    "repr of bytes in json": lambda v: json.dumps(repr(v.encode())),
    "repr in repr": lambda v: repr(repr(v)),
    "html": html.escape,
    "html quote=False": lambda v: html.escape(v, quote=False),
    "html twice": lambda v: html.escape(html.escape(v)),
    "html numeric": lambda v: "".join(f"&#{ord(c)};" for c in v),
    "shell": shlex.quote,
    "hex": lambda v: v.encode().hex(),
    "hex upper-case": lambda v: v.encode().hex().upper(),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64 url-safe unpadded": lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
    "base64 after 1 byte": lambda v: base64.b64encode(b"u" + v.encode() + b"!").decode(),
    "base64 after 2 bytes": lambda v: base64.b64encode(b"u:" + v.encode() + b"!?").decode(),
    "base64 url-safe after 2 bytes": lambda v: base64.urlsafe_b64encode(
        b"u:" + v.encode()
    ).decode(),
}


def test_canaries_change_under_every_encoding() -> None:
    assert all(char in CANARY and char in HEADER for char in SPECIAL)
    assert not CANARY.isascii() and HEADER.isascii() and HEADER.isprintable()
    for name, encode in FORMS.items():
        if name != "raw":
            assert CANARY not in encode(CANARY), name
            assert HEADER not in encode(HEADER), name


@pytest.mark.parametrize("value", [CANARY, HEADER, OTHER], ids=["canary", "header", "other"])
@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_is_found_in_text_and_in_bytes(name: str, value: str) -> None:
    form = FORMS[name](value)
    text = f"INFO request {{'a': 1}} \\ body={form}; done\n"
    assert found(text, [value]), form
    binary = os.urandom(3000) + text.encode() + b"\0" * 5000
    assert found(binary, [value]), form


def test_nothing_is_found_where_there_is_nothing() -> None:
    other = canary()
    text = "\n".join(encode(other) for encode in FORMS.values())
    assert found(text, [CANARY]) == []
    assert found(text.encode() + os.urandom(10_000), [CANARY]) == []
    # Parts of it are not it: the detector looks for the whole value.
    assert found(CANARY[:-1] + " " + CANARY[1:], [CANARY]) == []
    assert found(gzip.compress(CANARY.encode()), [CANARY]) == []  # the caller unzips


def test_a_finding_says_what_and_where() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_clean("token=" + quote(CANARY), [HEADER, CANARY], "the operator's log")
    message = str(failure.value)
    assert "the operator's log" in message and quote(CANARY) in message
    assert found(CANARY, [CANARY]) == [f"{CANARY!r} as raw: {CANARY!r}"]


def test_a_canary_too_short_to_be_found_reliably_is_refused() -> None:
    with pytest.raises(ValueError):
        found("text", ["abc"])
