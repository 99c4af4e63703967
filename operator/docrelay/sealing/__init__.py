"""Sealed secrets: write-only values bound to namespace, integration and key name."""

from docrelay.sealing.envelope import (
    Binding,
    BindingMismatch,
    MalformedCiphertext,
    SealingError,
    Tampered,
    UnknownKey,
    key_id,
    open_sealed,
    seal,
)
from docrelay.sealing.keyring import KeyRing, SealingKey, public_key_from_certificate

__all__ = [
    "Binding",
    "BindingMismatch",
    "KeyRing",
    "MalformedCiphertext",
    "SealingError",
    "SealingKey",
    "Tampered",
    "UnknownKey",
    "key_id",
    "open_sealed",
    "public_key_from_certificate",
    "seal",
]
