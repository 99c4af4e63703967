"""Every encoding in the masker's table, over generated values: the plain masker (what the
operator stores) and the runner's masked stdout (a value split at every position across two
writes) both leave no trace of the encoded value.

The encodings are written out here again from the standard library, independently of the
table in docrelay/masking.py; a test checks that the two name the same encodings, so a row
added to the table without a rendering here fails.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shlex
from collections.abc import Callable
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docrelay.masking import ENCODINGS, MASK, Masker
from docrelay.runner.main import MaskedStream
from tests.leakcheck import canary, found


def lower_escapes(text: str) -> str:
    return re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), text)


def json_in_json(value: str, inner_ascii: bool, outer_ascii: bool) -> str:
    inner = json.dumps({"k": value}, ensure_ascii=inner_ascii)
    outer = json.dumps({"doc": inner}, ensure_ascii=outer_ascii)
    start = outer.index('\\"k\\": \\"') + len('\\"k\\": \\"')
    return outer[start : outer.rindex('\\"}"}')]


def json_three_deep(value: str) -> str:
    """A JSON document inside a string of one inside a string of another."""
    doc = json.dumps({"k": value})
    doc = json.dumps({"d": doc})
    doc = json.dumps({"e": doc})
    marker = '\\\\\\"k\\\\\\": \\\\\\"'  # \\\"k\\\": \\\" three levels down
    start = doc.index(marker) + len(marker)
    return doc[start : doc.rindex('\\\\\\"}')]


def go_json(value: str) -> str:
    text = json.dumps(value)[1:-1]
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def jinja_escape(value: str) -> str:
    table = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&#39;", '"': "&#34;"}
    return "".join(table.get(char, char) for char in value)


SAFE_SETS = ["", "/", ":", ":/", "@", "/:@", "!'()*~", "!#$&'()*+,/:;=?@~"]
URL: dict[str, Callable[[str], str]] = {
    **{f"quote safe={s!r}": (lambda v, s=s: quote(v, safe=s)) for s in SAFE_SETS},
    "quote_plus safe=''": quote_plus,
    "quote_plus safe='/'": lambda v: quote_plus(v, safe="/"),
}
RENDER: dict[str, Callable[[str], str]] = {
    "raw": lambda v: v,
    **URL,
    **{
        f"{name}, lower-case escapes": (lambda v, f=f: lower_escapes(f(v)))
        for name, f in URL.items()
    },
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64 unpadded": lambda v: base64.b64encode(v.encode()).decode().rstrip("="),
    "base64 url-safe": lambda v: base64.urlsafe_b64encode(v.encode()).decode(),
    "base64 url-safe unpadded": lambda v: (
        base64.urlsafe_b64encode(v.encode()).decode().replace("=", "")
    ),
    "hex": lambda v: v.encode().hex(),
    "hex upper-case": lambda v: v.encode().hex().upper(),
    "json": lambda v: json.dumps({"k": v})[7:-2],
    "json ensure_ascii=False": lambda v: json.dumps([v], ensure_ascii=False)[2:-2],
    "json html-safe": go_json,
    # A JSON document carried as a string inside another: the value's escapes escaped again.
    "json in json": lambda v: json_in_json(v, True, True),
    "json in json ensure_ascii=False": lambda v: json_in_json(v, False, False),
    "json ensure_ascii=False in json": lambda v: json_in_json(v, False, True),
    "json in json in json": json_three_deep,
    # A JSON document as a URL's query value: urlencode (form-encoded), quote, and what
    # JavaScript's encodeURIComponent(JSON.stringify([v])) makes ('["' and '"]' cut off).
    "json url-quoted": lambda v: quote(json.dumps([v]), safe="")[6:-6],
    "json form-encoded": lambda v: urlencode({"q": json.dumps([v])})[8:-6],
    "json ensure_ascii=False encodeURIComponent": lambda v: quote(
        json.dumps([v], ensure_ascii=False, separators=(",", ":")), safe="!'()*~"
    )[6:-6],
    "every byte percent-escaped": lambda v: "".join(f"%{b:02X}" for b in bytearray(v, "utf-8")),
    "every byte percent-escaped, lower-case": lambda v: "".join(
        f"%{b:02x}" for b in bytearray(v, "utf-8")
    ),
    # repr of a repr, as print(repr(repr(v))) or a log of a list of reprs shows it.
    "repr of repr": lambda v: repr([repr(v)])[2:-2],
    "html escaped twice": lambda v: html.escape(html.escape(v)),
    "repr": lambda v: repr([v])[2:-2],
    "ascii": lambda v: ascii([v])[2:-2],
    "repr of utf-8 bytes": lambda v: repr([v.encode()])[3:-2],
    "html": html.escape,
    "html quote=False": lambda v: html.escape(v, quote=False),
    "html decimal entities": jinja_escape,
    # The value inside a longer single-quoted word: shlex.quote("a b" + v) is 'a b...'.
    "shell-quoted": lambda v: shlex.quote("a b" + v)[4:-1],
}

# Characters that some encoding changes, plus any other (no lone surrogates: not text; no "*":
# a value made of the mask's own character would be found again in masked text).
SPECIAL = st.sampled_from(list("/+=@%\"'\\&<>:;?#~ !()$,\n\té€😀\x00"))
ORDINARY = st.sampled_from(list("abcXYZ0189-_."))
ANY = st.characters(exclude_categories=("Cs",), exclude_characters="*")
VALUES = st.lists(st.one_of(SPECIAL, ORDINARY, ANY), min_size=4, max_size=16).map("".join)
# Deterministic (the same examples on every run, so CI cannot flake) and no example database
# written into the checkout; hypothesis still shrinks a failure to a minimal value.
PROPERTY = settings(max_examples=40, derandomize=True, database=None, deadline=None)


def test_the_rendering_here_covers_every_row_of_the_table() -> None:
    assert sorted(RENDER) == sorted(name for name, _ in ENCODINGS)


@pytest.mark.parametrize("encoding", sorted(RENDER))
@PROPERTY
@given(value=VALUES)
def test_every_encoding_is_masked_plain_and_in_the_runners_stream(
    encoding: str, value: str
) -> None:
    form = RENDER[encoding](value)
    masker = Masker([value, "tok-9f8e7d6c"])
    before, after = "GET /x?key=", " HTTP/1.1\n"
    line = before + form + after

    masked = masker.mask(line)
    assert form not in masked
    assert MASK in masked

    # The runner's stdout: the line written in two pieces, split at every position of the
    # encoded value (and just before and after it).
    for split in range(len(before), len(before) + len(form) + 1):
        out = io.StringIO()
        stream = MaskedStream(out, masker)
        stream.write(line[:split])
        stream.write(line[split:])
        stream.close_masking()
        assert out.getvalue() == masked, split


# The forms the tests' own detector (tests/leakcheck.py) found and the table once missed.
GAPS: dict[str, Callable[[str], str]] = {
    name: RENDER[name]
    for name in (
        "json in json in json",
        "html escaped twice",
        "json url-quoted",
        "json form-encoded",
        "json ensure_ascii=False encodeURIComponent",
        "repr of repr",
        "every byte percent-escaped",
        "every byte percent-escaped, lower-case",
    )
}


@pytest.mark.parametrize("encoding", sorted(GAPS))
def test_a_canary_in_a_form_the_masker_once_missed_is_gone_once_masked(encoding: str) -> None:
    value = canary()
    line = f"POST /hook?payload={GAPS[encoding](value)}&x=1 from the code"
    assert found(line, [value]), "the detector sees the canary before masking"
    masked = Masker([value]).mask(line)
    assert found(masked, [value]) == []
    assert MASK in masked and masked.endswith("&x=1 from the code")


def test_quote_with_its_default_safe_slash_is_masked() -> None:
    """The form that leaked into a stored log and a run's errorMessage."""
    value = "acct/7781 secret+key"
    text = f"GET https://api.example.com/export?token={quote(value)}"
    assert quote(value) == "acct/7781%20secret%2Bkey"
    assert Masker([value]).mask(text) == "GET https://api.example.com/export?token=***"


# Bytes that never occur in UTF-8: the text around the value cannot repeat a part of it.
NOT_UTF8 = st.lists(st.sampled_from([0xC0, 0xC1, *range(0xF5, 0x100)]), max_size=5).map(bytes)


@PROPERTY
@given(value=VALUES, before=NOT_UTF8, after=NOT_UTF8, urlsafe=st.booleans())
def test_a_value_inside_a_longer_base64_text_cannot_be_decoded_back(
    value: str, before: bytes, after: bytes, urlsafe: bool
) -> None:
    """E.g. `Authorization: Basic base64(user:password)`: at every alignment, what is left
    visible does not decode to the value."""
    encode, decode = (
        (base64.urlsafe_b64encode, base64.urlsafe_b64decode)
        if urlsafe
        else (base64.b64encode, base64.b64decode)
    )
    raw = value.encode()
    blob = encode(before + raw + after).decode()
    masked = Masker([value]).mask(blob)
    assert masked.count(MASK) == 1, masked
    # Put filler where the mask is and decode: no part of the value comes back. The filler is
    # the last base64 digit (all bits set), so it decodes to bytes UTF-8 never has.
    filler = "_" if urlsafe else "/"
    refilled = masked.replace(MASK, filler * (len(blob) - len(masked) + len(MASK)))
    decoded = decode(refilled)
    assert raw not in decoded
    assert raw[:2] not in decoded and raw[-2:] not in decoded
