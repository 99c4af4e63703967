"""Sealed values: round trips, bindings that do not move, tampering detected, vectors."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from docrelay.sealing import (
    Binding,
    BindingMismatch,
    KeyRing,
    MalformedCiphertext,
    SealingError,
    Tampered,
    UnknownKey,
    public_key_from_certificate,
)
from docrelay.sealing.keyring import SealingKey
from tests.leakcheck import assert_clean, canary

VECTORS = json.loads((Path(__file__).parent / "vectors" / "sealing.json").read_text())
CANARY = canary().encode()
HOME = Binding("tenant-a", "xero-export", "XERO_API_KEY")


@pytest.fixture(scope="module")
def ring() -> KeyRing:
    return KeyRing.create()


@pytest.fixture(scope="module")
def renewed(ring: KeyRing) -> KeyRing:
    # RSA-4096 key generation takes seconds: each test module makes as few keys as it can.
    return ring.renewed()


@pytest.fixture(scope="module")
def sealed(ring: KeyRing) -> str:
    return ring.seal(HOME, CANARY)[0]


@functools.cache
def _vector_ring() -> KeyRing:
    key = serialization.load_pem_private_key(VECTORS["privateKeyPem"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return KeyRing(
        keys=(SealingKey(key, dt.datetime(2026, 11, 25, tzinfo=dt.UTC)),),
        install_secret=bytes.fromhex(VECTORS["installSecretHex"]),
    )


def test_round_trip(ring: KeyRing, sealed: str) -> None:
    assert ring.open(HOME, sealed) == CANARY


def test_sealing_twice_gives_different_ciphertext(ring: KeyRing, sealed: str) -> None:
    assert ring.seal(HOME, CANARY)[0] != sealed


@pytest.mark.parametrize(
    "elsewhere",
    [
        Binding("tenant-b", "xero-export", "XERO_API_KEY"),  # moved to another namespace
        Binding("tenant-a", "sheets-export", "XERO_API_KEY"),  # to another integration
        Binding("tenant-a", "xero-export", "OTHER_KEY"),  # renamed to another key
    ],
    ids=["namespace", "integration", "key"],
)
def test_every_binding_mismatch_fails(ring: KeyRing, sealed: str, elsewhere: Binding) -> None:
    with pytest.raises(BindingMismatch, match="sealed for another namespace, integration or key"):
        ring.open(elsewhere, sealed)


def _flip(sealed: str, index: int) -> str:
    blob = bytearray(base64.b64decode(sealed))
    blob[index] ^= 0x01
    return base64.b64encode(bytes(blob)).decode()


@pytest.mark.parametrize(
    ("part", "index"),
    [("wrapped key", 30), ("nonce", -40), ("ciphertext", -20), ("tag", -1)],
)
def test_tampered_ciphertext_fails(ring: KeyRing, sealed: str, part: str, index: int) -> None:
    with pytest.raises(Tampered, match="altered"):
        ring.open(HOME, _flip(sealed, index))


def test_forged_binding_digest_still_does_not_open(ring: KeyRing) -> None:
    # An attacker who rewrites the clear binding digest to the new place gains nothing:
    # the binding is also the OAEP label and the GCM associated data.
    sealed_elsewhere = ring.seal(Binding("tenant-b", "x", "K"), CANARY)[0]
    blob = bytearray(base64.b64decode(sealed_elsewhere))
    blob[12:20] = HOME.digest()
    with pytest.raises(Tampered):
        ring.open(HOME, base64.b64encode(bytes(blob)).decode())


def test_unknown_key_names_the_key(sealed: str) -> None:
    other = _vector_ring()
    with pytest.raises(UnknownKey, match=r"sealed with key [0-9a-f]{16}"):
        other.open(HOME, sealed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not base64!!", "not valid base64"),
        (base64.b64encode(b"XXXX" + bytes(40)).decode(), "not in docrelay's format"),
        (base64.b64encode(b"DRS1" + bytes(10)).decode(), "not in docrelay's format"),
        (base64.b64encode(b"DRS1" + bytes(16) + b"\x02\x00" + bytes(20)).decode(), "truncated"),
    ],
)
def test_malformed_values_are_named(ring: KeyRing, text: str, message: str) -> None:
    with pytest.raises(MalformedCiphertext, match=message):
        ring.open(HOME, text)


def test_no_error_message_holds_the_value(ring: KeyRing, sealed: str) -> None:
    attempts = [
        lambda: ring.open(Binding("x", "y", "Z"), sealed),
        lambda: ring.open(HOME, _flip(sealed, -1)),
        lambda: _vector_ring().open(HOME, sealed),
        lambda: ring.seal(HOME, CANARY * 10_000),
    ]
    for attempt in attempts:
        with pytest.raises(SealingError) as caught:
            attempt()
        assert_clean(str(caught.value), [CANARY.decode()], "the error")
        assert caught.value.__cause__ is None  # no chained exception carrying internals


def test_renewal_seals_with_the_newest_key_and_old_secrets_still_open(
    ring: KeyRing, renewed: KeyRing, sealed: str
) -> None:
    new_sealed, used = renewed.seal(HOME, CANARY)
    assert used == renewed.newest.key_id != ring.newest.key_id
    assert renewed.open(HOME, sealed) == renewed.open(HOME, new_sealed) == CANARY


@pytest.mark.parametrize(
    ("age_days", "expected"), [(0, False), (29, False), (30, True), (45, True)]
)
def test_renewal_is_due_after_the_period(age_days: int, expected: bool) -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ring = KeyRing(keys=(SealingKey(_vector_ring().newest.private_key, created),),
                   install_secret=bytes(32))
    now = created + dt.timedelta(days=age_days)
    assert ring.needs_renewal(now, dt.timedelta(days=30)) is expected


def test_keyring_survives_storage_in_a_secret(renewed: KeyRing) -> None:
    restored = KeyRing.from_secret_data(renewed.to_secret_data())
    assert [k.key_id for k in restored.keys] == [k.key_id for k in renewed.keys]
    assert restored.install_secret == renewed.install_secret
    assert restored.newest.key_id == renewed.newest.key_id


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "no usable 'install-secret'"),
        ({"install-secret": bytes(32)}, "holds no sealing key"),
    ],
)
def test_broken_key_secret_is_a_clear_error(data: dict[str, bytes], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing.from_secret_data(data)


def test_fingerprint_is_short_keyed_and_tells_values_apart(ring: KeyRing) -> None:
    fingerprint = ring.fingerprint(HOME, CANARY)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint == ring.fingerprint(HOME, CANARY)
    assert fingerprint != ring.fingerprint(HOME, CANARY + b"x")
    assert fingerprint != ring.fingerprint(Binding("tenant-b", "xero-export", "XERO_API_KEY"),
                                           CANARY)
    # Keyed by the install: another install's fingerprint of the same value differs.
    assert fingerprint != _vector_ring().fingerprint(HOME, CANARY)


def test_run_keys_are_per_run_and_attempt(ring: KeyRing) -> None:
    assert ring.run_key("uid-1", 1) == ring.run_key("uid-1", 1)
    assert len({ring.run_key("uid-1", 1), ring.run_key("uid-1", 2),
                ring.run_key("uid-2", 1)}) == 3


def test_certificate_carries_the_sealing_key(ring: KeyRing) -> None:
    pem = ring.newest.certificate("tenant-a").public_bytes(serialization.Encoding.PEM)
    public_key = public_key_from_certificate(pem)
    assert public_key.public_numbers() == ring.newest.private_key.public_key().public_numbers()
    with pytest.raises(ValueError, match="not a PEM certificate"):
        public_key_from_certificate(b"-----BEGIN NOTHING-----")


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["key"])
def test_committed_vectors_open(case: dict[str, str]) -> None:
    ring = _vector_ring()
    binding = Binding(case["namespace"], case["integration"], case["key"])
    assert ring.newest.key_id == case["keyId"]
    assert ring.open(binding, case["sealed"]) == case["plaintext"].encode()
    assert ring.fingerprint(binding, case["plaintext"].encode()) == case["fingerprint"]


def test_committed_run_key_vectors() -> None:
    ring = _vector_ring()
    for vector in VECTORS["runKeys"]:
        assert ring.run_key(vector["runUid"], vector["attempt"]).hex() == vector["keyHex"]


def test_renewal_within_the_same_second_still_seals_with_the_new_key() -> None:
    created = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    ring = KeyRing(keys=(SealingKey(_vector_ring().newest.private_key, created),),
                   install_secret=bytes(32))
    renewed = ring.renewed(now=created)
    assert renewed.newest.key_id != ring.newest.key_id
    restored = KeyRing.from_secret_data(renewed.to_secret_data())
    assert restored.newest.key_id == renewed.newest.key_id
