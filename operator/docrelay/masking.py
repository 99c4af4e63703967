"""Masking secret values in text, the way a CI runner masks its secrets, and more.

Every form a value commonly takes in a log is masked. The forms come from one table,
``ENCODINGS``: raw; URL-quoted with each safe set developers commonly pass (``quote``'s
default ``/`` included) and form-encoded, with upper- and lower-case percent escapes;
base64 standard and URL-safe, padded or not (also the part of a value that sits inside a
longer base64 text); hex; every byte percent-escaped; JSON string escaping (``ensure_ascii``
on and off, JSON inside JSON and inside that again, JSON URL-encoded); ``repr``/``ascii`` of
the string, ``repr`` of its ``repr`` and ``repr`` of its UTF-8 bytes; HTML escaping, once and
twice; and the shell-quoted form. A new encoding is one row of the table. A stream masker
holds back just enough text that a value split across two writes is still caught.
Pure: no I/O, used by the runner (what it prints) and the operator (logs it stores).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words and digits everywhere; they are refused when a
# secret is set rather than silently left unmasked (see too_short_to_mask).
MIN_MASKED_LENGTH = 4


def too_short_to_mask(value: str) -> bool:
    return len(value) < MIN_MASKED_LENGTH


# --- the table of encodings --------------------------------------------------------------------

# The `safe` sets passed to urllib.parse.quote in practice: none, the default "/", what a
# path or URL keeps, and JavaScript's encodeURIComponent and encodeURI.
URL_SAFE_SETS = ("", "/", ":", ":/", "@", "/:@", "!'()*~", "!#$&'()*+,/:;=?@~")
_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _lower_escapes(text: str) -> str:
    return _PERCENT.sub(lambda m: m.group().lower(), text)


def _json(value: str, ascii_only: bool = True) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)[1:-1]


def _json_html_safe(value: str) -> str:
    """JSON as Go's encoding/json writes it: also <, > and & as \\u escapes."""
    text = _json(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _html(value: str, quote: bool = True, decimal: bool = False) -> str:
    """HTML escaping as html.escape does it (not imported: html.entities slows the runner's
    start), or with decimal entities for the quotes as markupsafe and Jinja write them."""
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote:
        value = value.replace("'", "&#39;" if decimal else "&#x27;")
        value = value.replace('"', "&#34;" if decimal else "&quot;")
    return value


def _every_byte_escaped(value: str, lower: bool = False) -> str:
    """Every UTF-8 byte percent-escaped, letters and digits too (as some encoders do)."""
    return "".join((f"%{b:02x}" if lower else f"%{b:02X}") for b in value.encode())


def _b64(encode: Callable[[bytes], bytes], padded: bool = True) -> Callable[[str], str]:
    def form(value: str) -> str:
        text = encode(value.encode()).decode()
        return text if padded else text.rstrip("=")

    return form


def _quote(safe: str, plus: bool = False, lower: bool = False) -> Callable[[str], str]:
    def form(value: str) -> str:
        text = quote_plus(value, safe=safe) if plus else quote(value, safe=safe)
        return _lower_escapes(text) if lower else text

    return form


def _url_rows() -> list[tuple[str, Callable[[str], str]]]:
    """URL-quoted with each safe set, form-encoded; each also with lower-case escapes (%2f),
    as some libraries and languages write them."""
    rows = []
    for lower in (False, True):
        case = ", lower-case escapes" if lower else ""
        rows += [(f"quote safe={s!r}{case}", _quote(s, lower=lower)) for s in URL_SAFE_SETS]
        rows += [(f"quote_plus safe={s!r}{case}", _quote(s, True, lower)) for s in ("", "/")]
    return rows


# (name, how a value looks so encoded). Every form the masker looks for comes from here.
ENCODINGS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("raw", lambda v: v),
    *_url_rows(),
    ("base64", _b64(base64.b64encode)),
    ("base64 unpadded", _b64(base64.b64encode, padded=False)),
    ("base64 url-safe", _b64(base64.urlsafe_b64encode)),
    ("base64 url-safe unpadded", _b64(base64.urlsafe_b64encode, padded=False)),
    ("hex", lambda v: v.encode().hex()),
    ("hex upper-case", lambda v: v.encode().hex().upper()),
    ("json", _json),
    ("json ensure_ascii=False", lambda v: _json(v, ascii_only=False)),
    ("json html-safe", _json_html_safe),
    ("json in json", lambda v: _json(_json(v))),
    ("json in json ensure_ascii=False", lambda v: _json(_json(v, False), False)),
    ("json ensure_ascii=False in json", lambda v: _json(_json(v, False))),
    ("json in json in json", lambda v: _json(_json(_json(v)))),
    # A JSON document in a URL: urlencode/quote_plus of json.dumps, quote of it, and
    # encodeURIComponent(JSON.stringify(...)) (no ASCII escaping, JavaScript's safe set).
    ("json url-quoted", lambda v: quote(_json(v), safe="")),
    ("json form-encoded", lambda v: quote_plus(_json(v), safe="")),
    ("json ensure_ascii=False encodeURIComponent", lambda v: quote(_json(v, False), "!'()*~")),
    ("every byte percent-escaped", _every_byte_escaped),
    ("every byte percent-escaped, lower-case", lambda v: _every_byte_escaped(v, lower=True)),
    ("repr", lambda v: repr(v)[1:-1]),
    ("ascii", lambda v: ascii(v)[1:-1]),
    # repr(repr(v)) without the outer quotes and the first and last characters of the inner
    # repr's quoting (an escaped quote keeps its backslash): what stays the value's own.
    ("repr of repr", lambda v: repr(repr(v))[2:-2]),
    ("repr of utf-8 bytes", lambda v: repr(v.encode())[2:-1]),
    ("html", _html),
    ("html quote=False", lambda v: _html(v, quote=False)),
    ("html decimal entities", lambda v: _html(v, decimal=True)),
    ("html escaped twice", lambda v: _html(_html(v))),
    # Inside single quotes, as shlex.quote writes a value, also one quoted with more around it.
    ("shell-quoted", lambda v: v.replace("'", "'\"'\"'")),
)


def _inside_base64(raw: bytes) -> set[str]:
    """The part of the value's base64 that survives at each alignment inside a longer base64
    text (the characters touched by neighbouring bytes are dropped)."""
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for offset in (0, 1, 2):
            shifted = encode(b"\0" * offset + raw).decode().rstrip("=")
            # Drop the characters that encode the padding bytes, and the last character,
            # which also depends on what follows the value (at offset 0 too, where the whole
            # form above covers a value standing alone).
            start = (offset * 8 + 5) // 6
            inner = shifted[start:-1]
            if len(inner) >= MIN_MASKED_LENGTH:
                forms.add(inner)
    return forms


def variants(value: str) -> set[str]:
    """Every form of one value that the masker looks for."""
    if not value:
        return set()
    forms = {encode(value) for _, encode in ENCODINGS}
    forms |= _inside_base64(value.encode())
    return {f for f in forms if len(f) >= MIN_MASKED_LENGTH}


def _trie_pattern(forms: Iterable[str]) -> str:
    """One regular expression for all the forms, as a trie: forms sharing a prefix share its
    test, several times faster than one alternative per form (the runner masks every write).
    At each character the longer continuation is tried first, so at a position the longest
    form wins (a value's longer encoding over a shorter one inside it)."""
    trie: dict[str, dict] = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}  # a form ends here

    def emit(node: dict[str, dict]) -> str:
        branches = [chain(char, child) for char, child in node.items() if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    def chain(char: str, node: dict[str, dict]) -> str:
        # Follow a run of nodes with one way on in a loop (a long value is a long run):
        # recursion only where forms part or end, which is a few levels deep.
        text = [char]
        while len(node) == 1 and "" not in node:
            ((char, node),) = node.items()
            text.append(char)
        return re.escape("".join(text)) + emit(node)

    return emit(trie)


class Masker:
    """Replaces every form of the given values with ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        self.multiline = False  # a value holding a newline can span what looks like lines
        for value in values:
            forms |= variants(value)
            self.multiline = self.multiline or "\n" in value
        self._pattern = re.compile(_trie_pattern(forms)) if forms else None
        self.longest = max(map(len, forms), default=0)

    def mask(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def stream(self) -> StreamMasker:
        return StreamMasker(self)

    def _masked_prefix(self, buffer: str, final: bool) -> tuple[str, str]:
        """Mask what can be emitted safely; return (emitted, held back)."""
        if self._pattern is None:
            return buffer, ""
        cut = len(buffer) if final else max(0, len(buffer) - (self.longest - 1))
        pieces = []
        position = 0
        for match in self._pattern.finditer(buffer):
            if match.start() >= cut:
                break
            pieces.append(buffer[position : match.start()])
            pieces.append(MASK)
            position = match.end()
            cut = max(cut, position)
        pieces.append(buffer[position:cut])
        return "".join(pieces), buffer[cut:]


class StreamMasker:
    """Masks text that arrives in pieces; call ``flush`` at the end of the stream."""

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._held = ""

    def feed(self, text: str) -> str:
        emitted, self._held = self._masker._masked_prefix(self._held + text, final=False)
        return emitted

    def flush(self) -> str:
        emitted, self._held = self._masker._masked_prefix(self._held, final=True)
        return emitted

    def feed_lines(self, text: str) -> str:
        """Like ``feed``, but also releases held text up to its last newline (so a printed line
        shows at once), unless a value contains a newline and could continue past it."""
        emitted = self.feed(text)
        if self._masker.multiline or "\n" not in self._held:
            return emitted
        cut = self._held.rindex("\n") + 1
        line, self._held = self._held[:cut], self._held[cut:]
        return emitted + self._masker.mask(line)


def contains_any_form(text: str, values: Iterable[str]) -> list[str]:
    """Which forms of which values occur in ``text``: for tests and canary crawls."""
    found = []
    for value in values:
        found += sorted(form for form in variants(value) if form in text)
    return found
