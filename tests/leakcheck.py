"""The tests' own leak detector: is a canary value in this text, in any form?

Written apart from the product's masker (docrelay/masking.py, which it never imports): a form
the masker misses must not be missed by the tests that check the masker. Instead of listing
encodings one by one, it matches the canary character by character, each character in any
rendering an encoder gives it, in any mix:

- raw; percent-escaped in either case (any URL `safe` set, form encoding's `+` for a space);
- backslash escapes behind any run of backslashes (JSON, JSON inside JSON, `repr`/`ascii` of
  the string, `repr` of its UTF-8 bytes): `\\"`, `\\/`, `\\xe9`, `\\u00e9`, `\\U0001f600`,
  a surrogate pair, one `\\xNN` per UTF-8 byte; a backslash also percent-escaped (`%5C`);
- HTML entities, named or numeric, escaped once or more (`&amp;quot;`);
- a single quote the way shells close and reopen quoting (`'"'"'`, `'\\''`);

and, as wholes: hex of the UTF-8 bytes in either case, and base64 (standard and URL-safe) of
them at each of the three alignments inside a longer base64 text (padded, unpadded or not at
the end). Bytes are searched as UTF-8, undecodable bytes kept apart.

`canary()` makes values with a character that each of those encodings changes, so no form is
the raw value again and a detector that only looked for the raw value would find nothing.
"""

from __future__ import annotations

import base64
import functools
import re
import uuid
from collections.abc import Iterable

# Every encoding changes at least one of these: / + = @ % (URL), " \ (JSON, repr), & ' < (HTML,
# shell), non-ASCII (JSON's ensure_ascii, repr of bytes, ascii), astral (surrogate pairs).
SPECIAL = "/+=@%&'\"\\<"
NON_ASCII = "é€😀"


def canary(header: bool = False) -> str:
    """A fresh canary. `header=True`: printable ASCII only, for a value that must travel in an
    HTTP header or through an API that refuses non-ASCII (the special characters stay)."""
    return f"cnry{SPECIAL}{'' if header else NON_ASCII}-{uuid.uuid4().hex[:16]}"


def _hex(text: str) -> str:
    """A regex matching hex digits in either case."""
    return "".join(f"[{d.lower()}{d.upper()}]" if d.isalpha() else d for d in text)


_BACKSLASHES = r"(?:\\|%5[cC]){1,16}"  # one or more backslashes, also URL-encoded
_ENTITY = r"&(?:amp;)*"  # an HTML entity, escaped once or more
_NAMED = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
_SHORT_ESCAPES = {"\n": "n", "\t": "t", "\r": "r", "\b": "b", "\f": "f"}


def _char(char: str) -> str:
    """A regex for one character of the canary in every rendering above."""
    cp = ord(char)
    utf8 = char.encode()
    alternatives = [re.escape(char)]
    alternatives.append("".join("%" + _hex(f"{b:02x}") for b in utf8))
    if char == " ":
        alternatives.append(r"\+")
    escapes = []  # what follows the backslash(es)
    if char == "\\":
        alternatives.append(_BACKSLASHES)
    if char in "\"'/":
        escapes.append(re.escape(char))
        escapes.append("%" + _hex(f"{cp:02x}"))  # JSON then URL-encoded: %5C%22
    if char in _SHORT_ESCAPES:
        escapes.append(_SHORT_ESCAPES[char])
    if cp < 0x100:
        escapes.append("x" + _hex(f"{cp:02x}"))
    if cp < 0x10000:
        escapes.append("u" + _hex(f"{cp:04x}"))
    else:
        high = 0xD800 + ((cp - 0x10000) >> 10)
        low = 0xDC00 + ((cp - 0x10000) & 0x3FF)
        escapes.append("u" + _hex(f"{high:04x}") + _BACKSLASHES + "u" + _hex(f"{low:04x}"))
    escapes.append("U" + _hex(f"{cp:08x}"))
    alternatives.append(_BACKSLASHES + "(?:" + "|".join(escapes) + ")")
    if cp >= 0x80:  # repr of the UTF-8 bytes
        alternatives.append("".join(_BACKSLASHES + "x" + _hex(f"{b:02x}") for b in utf8))
    entities = [f"#0*{cp}", "#[xX]0*" + _hex(f"{cp:x}")]
    if char in _NAMED:
        entities.append(_NAMED[char])
    alternatives.append(_ENTITY + "(?:" + "|".join(entities) + ");")
    if char == "'":
        alternatives += ["'\"'\"'", r"'\\''"]
    return "(?:" + "|".join(alternatives) + ")"


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 characters that depend only on the value, at each alignment."""
    cores = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in range(3):
            text = encode(b"\0" * offset + raw).decode()
            start = -(-8 * offset // 6)  # the first character holding no byte before the value
            end = 8 * (offset + len(raw)) // 6  # the last holding no byte after it
            cores.append(text[start:end])
    return cores


# The search is slow per character (every rendering of every character is tried at each
# position), too slow for etcd's files. So it starts from an anchor that plain string search
# finds fast: a canary from canary() ends in 16 hex digits, which no encoder above escapes
# except hex and base64 (searched as wholes); the character pattern then only runs on the text
# just before each anchor. The anchor is also looked for escaped as a whole (every digit
# %-escaped, \x- or \u-escaped, or an entity). Another canary is searched everywhere.
_ANCHOR = re.compile(r"[0-9A-Za-z]{8,}\Z")
_LONGEST_RENDERING = 80  # characters one character of the canary can take, at most


class _Search:
    def __init__(self, value: str) -> None:
        raw = value.encode()
        self.value = value
        self.text = re.compile("".join(map(_char, value)))
        self.ending = re.compile(self.text.pattern + r"\Z")
        wholes = [("hex", raw.hex()), ("hex", raw.hex().upper())]
        wholes += [("base64", core) for core in _base64_cores(raw)]
        self.wholes = sorted(set(wholes))
        anchor = _ANCHOR.search(value)
        self.anchors: list[str] = []
        if anchor:
            tail = anchor.group().encode()
            self.anchors = sorted(
                {
                    tail.decode(),
                    "".join(f"%{b:02X}" for b in tail),
                    "".join(f"%{b:02x}" for b in tail),
                    "".join(f"\\x{b:02x}" for b in tail),
                    "".join(f"\\u{b:04x}" for b in tail),
                    "".join(f"&#{b};" for b in tail),
                }
            )

    def run(self, haystack: str | bytes) -> list[tuple[str, str]]:
        """Bytes are searched as they are (the needles are ASCII) and only the text before an
        anchor is decoded: decoding a large binary file whole would be slow."""
        as_bytes = isinstance(haystack, bytes)

        def needle(text: str) -> str | bytes:
            return text.encode() if as_bytes else text

        def decoded(start: int, end: int) -> str:
            part = haystack[start:end]
            return part.decode("utf-8", "surrogateescape") if isinstance(part, bytes) else part

        hits = [(kind, form) for kind, form in self.wholes if needle(form) in haystack]
        if not self.anchors:
            text = decoded(0, len(haystack))
            return hits + [("text", m.group()) for m in self.text.finditer(text)]
        for anchor in map(needle, self.anchors):
            position = haystack.find(anchor)  # type: ignore[arg-type]
            while position >= 0:
                end = position + len(anchor)
                start = max(0, position - _LONGEST_RENDERING * len(self.value))
                match = self.ending.search(decoded(start, end))
                if match:
                    hits.append(("text", match.group()))
                position = haystack.find(anchor, end)  # type: ignore[arg-type]
        return hits


@functools.lru_cache(maxsize=256)
def _search(value: str) -> _Search:
    return _Search(value)


def found(haystack: str | bytes, canaries: Iterable[str]) -> list[str]:
    """Where each canary occurs, one line per finding (what kind of form, and the text);
    empty when none does."""
    findings = []
    for value in canaries:
        if len(value) < 8:
            raise ValueError("a canary this short would be found by chance")
        for kind, text in _search(value).run(haystack):
            kind = "raw" if text == value else kind
            findings.append(f"{value!r} as {kind}: {text[:120]!r}")
    return findings


def assert_clean(haystack: str | bytes, canaries: Iterable[str], where: str) -> None:
    """Fail naming every form of every canary found in `where`."""
    leaks = found(haystack, list(canaries))
    assert not leaks, f"a canary value in {where}:\n" + "\n".join(leaks)
