"""The JavaScript SDK offers what `docrelay.sdk` offers, in JavaScript's spelling, and its typed
declarations (index.d.ts) declare exactly what index.js exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import docrelay.sdk

SDK = Path(docrelay.__file__).parent / "runner" / "node" / "sdk"
# Kept in Python for code written against earlier versions; never raised, never in JavaScript.
PYTHON_ONLY = {"NoConnectedAccounts"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _js_exports() -> set[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on PATH (Debian: apt-get install nodejs)")
    listed = subprocess.run(
        [node, "-e", "console.log(JSON.stringify(Object.keys(require(process.argv[1]))))",
         str(SDK / "index.js")],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(json.loads(listed))


def test_the_javascript_sdk_exports_the_python_sdks_helpers_and_errors() -> None:
    expected = {_camel(name) for name in docrelay.sdk.__all__ if name not in PYTHON_ONLY}
    assert _js_exports() == expected


def test_the_declarations_declare_exactly_what_index_js_exports() -> None:
    text = (SDK / "index.d.ts").read_text()
    declared = set(re.findall(r"^export (?:declare )?(?:function|class|const) (\w+)", text, re.M))
    assert declared == _js_exports()
    package = json.loads((SDK / "package.json").read_text())
    assert (package["main"], package["types"]) == ("index.js", "index.d.ts")
    assert not package.get("dependencies")  # Node.js's standard library only
