"""The console seals in the browser with WebCrypto (static/seal.js); Python's opener must open
what it makes, and refuse it anywhere else. The same file runs here under Node.js's WebCrypto
(the browser test runs it in Chromium)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from docrelay.sealing import Binding, BindingMismatch, key_id, open_sealed
from docrelay.sealing.envelope import parse

SEAL_JS = (
    Path(__file__).resolve().parents[2] / "operator" / "docrelay" / "console" / "static" / "seal.js"
)
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js (Debian's nodejs)")

DRIVER = """
import { sealValue, checkValue } from %s;
const input = JSON.parse(await new Promise((ok) => {
  let text = "";
  process.stdin.on("data", (c) => (text += c));
  process.stdin.on("end", () => ok(text));
}));
const out = [];
for (const c of input.cases) {
  try {
    out.push(await sealValue(input.spki, c.namespace, c.integration, c.key, c.value));
  } catch (error) {
    out.push({ error: error.message, check: checkValue(c.value) });
  }
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def seal_in_node(tmp_path: Path, key: rsa.RSAPrivateKey, cases: list[dict[str, str]]) -> list:
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    driver = tmp_path / "driver.mjs"
    driver.write_text(DRIVER % json.dumps(SEAL_JS.as_uri()))
    done = subprocess.run(
        [NODE or "node", str(driver)],
        input=json.dumps({"spki": base64.b64encode(spki).decode(), "cases": cases}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(json.loads(done.stdout))


def test_python_opens_what_the_browser_sealed(tmp_path: Path, private_key) -> None:
    values = ["s3cret-api-key", "ünïcødé ✓ value", "x" * 32768]
    cases = [
        {"namespace": "team-a", "integration": "orders", "key": "API_KEY", "value": v}
        for v in values
    ]
    results = seal_in_node(tmp_path, private_key, cases)
    kid = key_id(private_key.public_key())
    for value, result in zip(values, results, strict=True):
        assert result["keyId"] == kid
        assert parse(result["sealed"]).key_id == kid
        opened = open_sealed(
            {kid: private_key}, Binding("team-a", "orders", "API_KEY"), result["sealed"]
        )
        assert opened.decode() == value


@pytest.mark.parametrize(
    "elsewhere",
    [
        Binding("team-b", "orders", "API_KEY"),
        Binding("team-a", "invoices", "API_KEY"),
        Binding("team-a", "orders", "OTHER_KEY"),
    ],
)
def test_a_browser_seal_does_not_open_in_another_place(
    tmp_path: Path, private_key, elsewhere: Binding
) -> None:
    [result] = seal_in_node(
        tmp_path,
        private_key,
        [{"namespace": "team-a", "integration": "orders", "key": "API_KEY", "value": "value-1"}],
    )
    with pytest.raises(BindingMismatch):
        open_sealed({key_id(private_key.public_key()): private_key}, elsewhere, result["sealed"])


def test_the_browser_refuses_values_the_cli_refuses(tmp_path: Path, private_key) -> None:
    short, long = "abc", "x" * 32769
    results = seal_in_node(
        tmp_path,
        private_key,
        [{"namespace": "n", "integration": "i", "key": "K", "value": v} for v in (short, long)],
    )
    assert "shorter than 4 characters" in results[0]["error"]
    assert "longer than 32768 bytes" in results[1]["error"]
