"""Test vectors for the Node.js runner's masker, generated from docrelay.masking's table.

`python -m devkit.maskvectors` writes tests/unit/vectors/masking.json: for each sample value,
every form `docrelay.masking.variants` looks for, and texts with what `Masker.mask` makes of
them. tests/node/masking.test.mjs checks the JavaScript masker against it; a unit test fails
when the file no longer matches the Python table (run this module again then).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from docrelay.masking import ENCODINGS, Masker, variants

PATH = Path(__file__).resolve().parents[1] / "tests" / "unit" / "vectors" / "masking.json"

# Values that exercise every row: URL-reserved characters, both quotes, backslash, control
# characters, DEL, non-ASCII (Latin, CJK, an emoji outside the BMP), characters Python does
# not print (zero-width space, no-break space, line separator), HTML and shell specials.
VALUES: tuple[str, ...] = (
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "p@ss w/rd:+&=?#~!*()",
    "it's \"quoted\" \\back",
    "only'single",
    'only"double',
    "tab\there\nnew\rline",
    "ctl\x01\x1f\x7fdel",
    "grüße-Ünïcødé",
    "日本語のパスワード",
    "emoji😀key🔑",
    "zero\u200bwidth\u00a0nbsp\u2028sep",
    "<a href='x'>&amp;</a>",
    "a b+c%20d",
    "AAAA",
    "abc",  # too short: no forms
)


def _texts(values: tuple[str, ...]) -> list[dict[str, Any]]:
    """Texts holding values in several forms among other words, and their masked form."""
    out = []
    for value in values:
        if len(value) < 4:
            continue
        text = (
            f"start {value} middle {quote(value, safe='')} b64="
            f"{base64.b64encode(('prefix:' + value).encode()).decode()} "
            f"json={json.dumps({'k': value})} end"
        )
        out.append({"values": [value], "text": text, "masked": Masker([value]).mask(text)})
    together = list(values[:4])
    text = " | ".join(f"{v!r} {json.dumps(v)}" for v in together)
    out.append({"values": together, "text": text, "masked": Masker(together).mask(text)})
    return out


def generate() -> dict[str, Any]:
    return {
        "generatedBy": "python -m devkit.maskvectors (from docrelay.masking.ENCODINGS)",
        "encodings": [name for name, _ in ENCODINGS],
        "variants": [{"value": v, "forms": sorted(variants(v))} for v in VALUES],
        "texts": _texts(VALUES),
    }


def render() -> str:
    return json.dumps(generate(), indent=1, ensure_ascii=True, sort_keys=True) + "\n"


def main() -> int:
    PATH.parent.mkdir(parents=True, exist_ok=True)
    PATH.write_text(render())
    print(f"wrote {PATH.relative_to(PATH.parents[3])}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
