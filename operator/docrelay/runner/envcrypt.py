"""The per-run env value format: AES-256-GCM under the one-run key, bound to run, attempt and
variable name. The operator encrypts; the runner (once the broker hands it the key) decrypts.

`v1.<base64url(nonce || ciphertext+tag)>`; associated data `docrelay.io/run-env/v1/<run uid>/
<attempt>/<name>`, so a value cannot be moved to another run, attempt or variable.
"""

from __future__ import annotations

import base64
import os

PREFIX = "v1."
NONCE_BYTES = 12


class EnvDecryptError(Exception):
    """The value does not open under this key for this run, attempt and name."""


def _aad(run_uid: str, attempt: int, name: str) -> bytes:
    return f"docrelay.io/run-env/v1/{run_uid}/{attempt}/{name}".encode()


def encrypt_value(key: bytes, run_uid: str, attempt: int, name: str, plaintext: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # lazy: runner start-up

    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, _aad(run_uid, attempt, name))
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def _aesgcm() -> type:
    """cryptography's AESGCM, taken from its compiled bindings where it lives: the same class
    the public module re-exports, without the Python modules around it (a quarter of a run's
    start with a secret; bench/bench_runner.py)."""
    try:
        from cryptography.hazmat.bindings._rust import openssl as rust_openssl

        return rust_openssl.aead.AESGCM
    except (ImportError, AttributeError):  # laid out otherwise in another version
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM


def decrypt_value(key: bytes, run_uid: str, attempt: int, name: str, text: str) -> bytes:
    if not text.startswith(PREFIX):
        raise EnvDecryptError(f"{name}: not a per-run sealed value")
    try:
        raw = base64.urlsafe_b64decode(text[len(PREFIX) :])
        opened: bytes = _aesgcm()(key).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(run_uid, attempt, name)
        )
        return opened
    except Exception as exc:
        from cryptography.exceptions import InvalidTag  # only when it does not open

        if isinstance(exc, InvalidTag | ValueError):
            raise EnvDecryptError(f"{name}: does not open for this run and attempt") from None
        raise
