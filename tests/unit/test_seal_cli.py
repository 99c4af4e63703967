"""`docrelay seal`: the value comes from stdin or a hidden prompt, never argv; the manifest."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from docrelay.builders.sealing import SEALED_AT_ANNOTATION, secret_name
from docrelay.cli import build_parser
from docrelay.cli.common import CliError
from docrelay.cli.keys import newest_key_id
from docrelay.cli.seal import history_rows, read_value, sealed_manifest, secret_rows
from docrelay.models.secret import IntegrationSecret
from docrelay.sealing import Binding, KeyRing
from tests.leakcheck import assert_clean, canary

CANARY = canary()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.create()


def test_piped_value_drops_one_trailing_newline() -> None:
    assert read_value(io.StringIO(CANARY + "\n"), _no_prompt, "K") == CANARY
    assert read_value(io.StringIO(CANARY + "\r\n"), _no_prompt, "K") == CANARY
    assert read_value(io.StringIO(CANARY + "\n\n"), _no_prompt, "K") == CANARY + "\n"


def _no_prompt(_: str) -> str:
    raise AssertionError("piped input must not prompt")


def test_terminal_prompts_twice_hidden() -> None:
    answers = iter([CANARY, CANARY])
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return next(answers)

    assert read_value(Tty(), prompt, "API_KEY") == CANARY
    assert len(prompts) == 2 and all("API_KEY" in p for p in prompts)
    mismatch = iter([CANARY, CANARY + "x"])
    with pytest.raises(CliError, match="differ"):
        read_value(Tty(), lambda _: next(mismatch), "API_KEY")


@pytest.mark.parametrize(("text", "message"), [("", "no value"), ("abc", "shorter than 4")])
def test_empty_and_short_values_refused(text: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        read_value(io.StringIO(text), _no_prompt, "K")


@pytest.mark.parametrize("command", [["seal"], ["secret", "set"]])
def test_no_way_to_pass_the_value_on_the_command_line(command: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args([*command, "API_KEY", "--integration", "orders"])
    assert not any(CANARY in str(v) for v in vars(args).values())
    for extra in (["--value", CANARY], [CANARY], [f"--value={CANARY}"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "API_KEY", "--integration", "orders", *extra])


def test_manifest_is_valid_sealed_and_named_for_git(ring: KeyRing) -> None:
    cert = ring.newest.certificate("tenant-a").public_bytes(serialization.Encoding.PEM)
    manifest = sealed_manifest(
        cert,
        namespace="tenant-a",
        integration="orders",
        key="XERO_API_KEY",
        value=CANARY,
        now=datetime(2026, 11, 25, 12, 0, 0, 123, tzinfo=UTC),
    )
    text = yaml.safe_dump(manifest)
    assert_clean(text, [CANARY], "the manifest")
    parsed = IntegrationSecret.model_validate(manifest)
    assert parsed.spec.key_id == ring.newest.key_id
    sealed = manifest["spec"]["encryptedValue"]
    assert ring.open(Binding("tenant-a", "orders", "XERO_API_KEY"), sealed) == CANARY.encode()
    assert manifest["metadata"]["name"] == secret_name("orders", "XERO_API_KEY", sealed)
    assert manifest["metadata"]["name"].startswith("orders-xero-api-key-")
    assert manifest["metadata"]["annotations"][SEALED_AT_ANNOTATION] == "2026-11-25T12:00:00Z"
    assert set(manifest["spec"]) == {"integration", "key", "encryptedValue", "keyId"}


def test_bad_certificate_is_a_clear_error() -> None:
    with pytest.raises(CliError, match="not a PEM certificate"):
        sealed_manifest(
            b"junk", namespace="n", integration="i", key="K", value=CANARY, now=datetime.now(UTC)
        )


def test_list_rows_show_no_value_or_ciphertext() -> None:
    objects: list[dict[str, Any]] = [
        {
            "metadata": {"name": "orders-api-key-1", "creationTimestamp": "2026-11-25T11:00:00Z"},
            "spec": {
                "integration": "orders",
                "key": "API_KEY",
                "encryptedValue": "SEALEDXYZ",
                "keyId": "k1",
            },
            "status": {
                "state": "Superseded",
                "fingerprint": "ab12",
                "keyId": "k1",
                "conditions": [{"type": "Ready", "status": "False", "reason": "Superseded"}],
            },
        }
    ]
    rows = secret_rows(objects, datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    assert rows == [
        ["orders-api-key-1", "orders", "API_KEY", "Superseded", "Superseded", "ab12", "k1", "1h"]
    ]


def test_newest_key_id_from_entry_names() -> None:
    entries = {
        "install-secret": b"",
        "sealing-key-20261101T000000Z-aaaaaaaaaaaaaaaa.pem": b"",
        "sealing-key-20261125T000000Z-bbbbbbbbbbbbbbbb.pem": b"",
    }
    assert newest_key_id(entries) == "bbbbbbbbbbbbbbbb"


def test_history_rows_newest_first_per_key_fingerprints_and_dates_only() -> None:
    def secret(name: str, key: str, created: str, sequence: str | None, state: str) -> dict:
        annotations = {"sealing.docrelay.io/sealed-at": created}
        if sequence is not None:
            annotations["sealing.docrelay.io/sequence"] = sequence
        return {
            "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
            "spec": {"integration": "orders", "key": key, "encryptedValue": "SEALEDXYZ"},
            "status": {"state": state, "fingerprint": f"fp-{name}", "keyId": "k1"},
        }

    objects = [
        # Same second: the later admission (larger sequence) is the newest, whatever its name.
        secret("z-first", "API_KEY", "2026-11-25T11:00:00Z", "1795604400000000100", "Superseded"),
        secret("a-second", "API_KEY", "2026-11-25T11:00:00Z", "1795604400000000200", "Active"),
        secret("pre-upgrade", "API_KEY", "2026-11-24T09:00:00Z", None, "Superseded"),
        secret("ledger", "LEDGER", "2026-11-20T08:30:00Z", "1795163400000000000", "Active"),
    ]
    rows = history_rows(objects)
    assert rows == [
        ["orders", "API_KEY", "a-second", "Active", "fp-a-second", "2026-11-25T11:00:00Z",
         "2026-11-25T11:00:00Z"],
        ["orders", "API_KEY", "z-first", "Superseded", "fp-z-first", "2026-11-25T11:00:00Z",
         "2026-11-25T11:00:00Z"],
        ["orders", "API_KEY", "pre-upgrade", "Superseded", "fp-pre-upgrade",
         "2026-11-24T09:00:00Z", "2026-11-24T09:00:00Z"],
        ["orders", "LEDGER", "ledger", "Active", "fp-ledger", "2026-11-20T08:30:00Z",
         "2026-11-20T08:30:00Z"],
    ]  # fmt: skip
    assert "SEALEDXYZ" not in repr(rows)
