"""Masking secret values in text, the way a CI runner masks its secrets, and more.

Every form a value commonly takes in a log is masked: raw, base64 (standard and URL-safe,
also when it sits inside a longer base64 text), JSON-escaped and URL-encoded. A stream
masker holds back just enough text that a value split across two writes is still caught.
Pure: no I/O, used by the runner (what it prints) and the operator (logs it stores).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# Shorter values would mask ordinary words and digits everywhere; they are refused when a
# secret is set rather than silently left unmasked (see too_short_to_mask).
MIN_MASKED_LENGTH = 4


def too_short_to_mask(value: str) -> bool:
    return len(value) < MIN_MASKED_LENGTH


def _base64_forms(raw: bytes) -> set[str]:
    """Base64 of the value alone, and the part that survives at each alignment inside a
    longer base64 text (the characters touched by neighbouring bytes are dropped)."""
    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms.add(whole)
        forms.add(whole.rstrip("="))
        for offset in (1, 2):
            shifted = encode(b"\0" * offset + raw).decode().rstrip("=")
            # Drop the characters that encode the padding bytes, and the last character,
            # which also depends on what follows the value.
            start = (offset * 8 + 5) // 6
            inner = shifted[start:-1]
            if len(inner) >= MIN_MASKED_LENGTH:
                forms.add(inner)
    return forms


def variants(value: str) -> set[str]:
    """Every form of one value that the masker looks for."""
    if not value:
        return set()
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
             json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= _base64_forms(raw)
    return {f for f in forms if len(f) >= MIN_MASKED_LENGTH}


class Masker:
    """Replaces every form of the given values with ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        self.multiline = False  # a value holding a newline can span what looks like lines
        for value in values:
            forms |= variants(value)
            self.multiline = self.multiline or "\n" in value
        # Longest first, so a value's longer encoding wins over a shorter one inside it.
        ordered = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.longest = len(ordered[0]) if ordered else 0

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
