"""A tenant's sealing keys: every key pair it ever had, the newest used for sealing.

Kept in one Secret in the operator's namespace. Keys are renewed on a schedule and on
demand; old ones stay so older secrets still open. Each public key is published as a
self-signed certificate (what `docrelay seal --cert` and `/v1/cert.pem` hand out).
The install secret beside them keys fingerprints and derives one-run keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from docrelay.sealing.envelope import Binding, key_id, open_sealed, seal

KEY_BITS = 4096
CERT_VALIDITY = dt.timedelta(days=3650)  # the cert only carries the key; renewal is by key
INSTALL_SECRET_ENTRY = "install-secret"
_KEY_ENTRY = re.compile(r"^sealing-key-(?P<created>\d{8}T\d{6}Z)-(?P<kid>[0-9a-f]{16})\.pem$")
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
FINGERPRINT_HEX_CHARS = 16


@dataclass(frozen=True)
class SealingKey:
    private_key: rsa.RSAPrivateKey
    created: dt.datetime

    @property
    def key_id(self) -> str:
        return key_id(self.private_key.public_key())

    @property
    def entry_name(self) -> str:
        return f"sealing-key-{self.created.strftime(_TIME_FORMAT)}-{self.key_id}.pem"

    def certificate(self, tenant: str) -> x509.Certificate:
        """A self-signed certificate carrying the public key, deterministic per key."""
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "docrelay"),
                # A common name holds at most 64 characters; a namespace name up to 63.
                x509.NameAttribute(NameOID.COMMON_NAME, f"docrelay sealing key {tenant}"[:64]),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(int(self.key_id, 16))
            .not_valid_before(self.created)
            .not_valid_after(self.created + CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.private_key, hashes.SHA256())
        )


def generate_key(now: dt.datetime | None = None) -> SealingKey:
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    return SealingKey(rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS), created)


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[SealingKey, ...]
    install_secret: bytes = field(repr=False)

    @classmethod
    def create(cls, now: dt.datetime | None = None) -> KeyRing:
        return cls(keys=(generate_key(now),), install_secret=os.urandom(32))

    @property
    def newest(self) -> SealingKey:
        return max(self.keys, key=lambda k: k.created)

    def private_keys(self) -> dict[str, rsa.RSAPrivateKey]:
        return {k.key_id: k.private_key for k in self.keys}

    def renewed(self, now: dt.datetime | None = None) -> KeyRing:
        """The same ring with one more key, which becomes the one used for sealing."""
        # Keys are ordered by creation time, kept to the second: a key renewed within the
        # same second as the newest must still sort after it.
        created = max(now or dt.datetime.now(dt.UTC), self.newest.created + dt.timedelta(seconds=1))
        return KeyRing(keys=(*self.keys, generate_key(created)), install_secret=self.install_secret)

    def needs_renewal(self, now: dt.datetime, period: dt.timedelta) -> bool:
        return now - self.newest.created >= period

    def seal(self, binding: Binding, plaintext: bytes) -> tuple[str, str]:
        """Seal with the newest key; returns the sealed text and the key id used."""
        newest = self.newest
        return seal(newest.private_key.public_key(), binding, plaintext), newest.key_id

    def open(self, binding: Binding, sealed: str) -> bytes:
        return open_sealed(self.private_keys(), binding, sealed)

    def fingerprint(self, binding: Binding, plaintext: bytes) -> str:
        """A keyed, truncated hash: tells two values apart, reveals nothing about either."""
        key = self._derive(b"docrelay.io/fingerprint/v1")
        mac = hmac.new(key, binding.encode() + b"\0" + plaintext, hashlib.sha256)
        return mac.hexdigest()[:FINGERPRINT_HEX_CHARS]

    def run_key(self, run_uid: str, attempt: int) -> bytes:
        """The one-run key: derivable by the operator and broker, never stored anywhere."""
        return self._derive(f"docrelay.io/run-key/v1/{run_uid}/{attempt}".encode())

    def _derive(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self.install_secret
        )

    # -- storage in a Secret's data (entry name -> bytes) ---------------------------------

    def to_secret_data(self) -> dict[str, bytes]:
        data = {INSTALL_SECRET_ENTRY: self.install_secret}
        for key in self.keys:
            data[key.entry_name] = key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return data

    @classmethod
    def from_secret_data(cls, data: dict[str, bytes]) -> KeyRing:
        install_secret = data.get(INSTALL_SECRET_ENTRY)
        if not install_secret or len(install_secret) < 32:
            raise ValueError(f"the key Secret has no usable {INSTALL_SECRET_ENTRY!r} entry")
        keys = []
        for name, pem in data.items():
            match = _KEY_ENTRY.match(name)
            if not match:
                continue
            private_key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise ValueError(f"key entry {name} is not an RSA private key")
            created = dt.datetime.strptime(match["created"], _TIME_FORMAT).replace(tzinfo=dt.UTC)
            key = SealingKey(private_key, created)
            if key.key_id != match["kid"]:
                raise ValueError(f"key entry {name} does not hold the key its name says")
            keys.append(key)
        if not keys:
            raise ValueError("the key Secret holds no sealing key")
        return cls(keys=tuple(sorted(keys, key=lambda k: k.created)), install_secret=install_secret)


def public_key_from_certificate(pem: bytes) -> rsa.RSAPublicKey:
    """The sealing key inside a certificate from `/v1/cert.pem` or the published ConfigMap."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ValueError("not a PEM certificate (expected docrelay's sealing cert.pem)") from None
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < KEY_BITS:
        raise ValueError(f"the certificate does not carry an RSA-{KEY_BITS} sealing key")
    return public_key
