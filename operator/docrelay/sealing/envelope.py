"""The sealed-value format: RSA-OAEP-SHA256 wraps a fresh AES-256-GCM key.

A sealed value is bound to its place: namespace, integration and key name. The binding is
both the OAEP label and the GCM associated data, so ciphertext copied to another namespace,
integration or key name does not open (unlike Sealed Secrets' item keys, which can be
swapped). Wire format, base64 (standard alphabet) of::

    b"DRS1"                      magic and format version
    key id (8 bytes)             first 8 bytes of SHA-256 over the public key (SPKI DER)
    binding digest (8 bytes)     first 8 bytes of SHA-256 over the binding: names a move
    wrapped key length (2, BE)
    wrapped key                  RSA-OAEP-SHA256(label=binding) of the 32-byte AES key
    nonce (12 bytes)
    ciphertext || tag            AES-256-GCM(associated data=binding)

Only names and digests travel in the clear; none of them is secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"DRS1"
KEY_ID_BYTES = 8
BINDING_DIGEST_BYTES = 8
NONCE_BYTES = 12
MAX_PLAINTEXT_BYTES = 64 * 1024  # an env var value; anything larger is a mistake


class SealingError(ValueError):
    """A value could not be sealed or opened. Messages never contain the value."""

    reason = "SealingError"


class MalformedCiphertext(SealingError):
    reason = "Malformed"


class UnknownKey(SealingError):
    reason = "UnknownKey"


class BindingMismatch(SealingError):
    reason = "BindingMismatch"


class Tampered(SealingError):
    reason = "Tampered"


@dataclass(frozen=True)
class Binding:
    """Where a sealed value may be opened: its namespace, integration and env var name."""

    namespace: str
    integration: str
    key: str

    def encode(self) -> bytes:
        # NUL cannot occur in Kubernetes names or env var names, so the encoding is unique.
        return b"\0".join(
            [
                b"docrelay.io/sealed/v1",
                *(p.encode() for p in (self.namespace, self.integration, self.key)),
            ]
        )

    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()[:BINDING_DIGEST_BYTES]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.integration}/{self.key}"


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """A short, stable name for a sealing key: hex of a digest of its public key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()[:KEY_ID_BYTES].hex()


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
    )


def seal(public_key: rsa.RSAPublicKey, binding: Binding, plaintext: bytes) -> str:
    """Seal ``plaintext`` for ``binding``; returns the base64 text stored in the cluster."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise SealingError(f"a secret value may be at most {MAX_PLAINTEXT_BYTES} bytes")
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    label = binding.encode()
    wrapped = public_key.encrypt(data_key, _oaep(label))
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, label)
    blob = b"".join(
        [
            MAGIC,
            bytes.fromhex(key_id(public_key)),
            binding.digest(),
            struct.pack(">H", len(wrapped)),
            wrapped,
            nonce,
            ciphertext,
        ]
    )
    return base64.b64encode(blob).decode("ascii")


@dataclass(frozen=True)
class Envelope:
    """The clear parts of a sealed value, readable without any key."""

    key_id: str
    binding_digest: bytes
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


def parse(sealed: str) -> Envelope:
    try:
        blob = base64.b64decode(sealed.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedCiphertext("the sealed value is not valid base64") from None
    header = len(MAGIC) + KEY_ID_BYTES + BINDING_DIGEST_BYTES + 2
    if len(blob) < header or not blob.startswith(MAGIC):
        raise MalformedCiphertext(
            "the sealed value is not in docrelay's format (expected a value made by "
            "`docrelay seal`)"
        )
    offset = len(MAGIC)
    kid = blob[offset : offset + KEY_ID_BYTES].hex()
    offset += KEY_ID_BYTES
    binding_digest = blob[offset : offset + BINDING_DIGEST_BYTES]
    offset += BINDING_DIGEST_BYTES
    (wrapped_len,) = struct.unpack(">H", blob[offset : offset + 2])
    offset += 2
    wrapped = blob[offset : offset + wrapped_len]
    offset += wrapped_len
    nonce = blob[offset : offset + NONCE_BYTES]
    offset += NONCE_BYTES
    ciphertext = blob[offset:]
    if len(wrapped) != wrapped_len or len(nonce) != NONCE_BYTES or len(ciphertext) < 16:
        raise MalformedCiphertext("the sealed value is truncated")
    return Envelope(kid, binding_digest, wrapped, nonce, ciphertext)


def open_sealed(private_keys: dict[str, rsa.RSAPrivateKey], binding: Binding, sealed: str) -> bytes:
    """The plaintext, if ``sealed`` was made for ``binding`` with one of ``private_keys``."""
    envelope = parse(sealed)
    private_key = private_keys.get(envelope.key_id)
    if private_key is None:
        raise UnknownKey(
            f"sealed with key {envelope.key_id}, which this install does not hold (sealed "
            "for another install, or its key was lost)"
        )
    if envelope.binding_digest != binding.digest():
        raise BindingMismatch(
            f"sealed for another namespace, integration or key name than {binding}; "
            "seal the value again for this place"
        )
    label = binding.encode()
    try:
        data_key = private_key.decrypt(envelope.wrapped_key, _oaep(label))
        return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, label)
    except (ValueError, InvalidTag):
        raise Tampered("the sealed value was altered and does not open") from None
