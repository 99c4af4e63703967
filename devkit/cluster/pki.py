"""A throwaway PKI for the local control plane: the certificates each part needs.

Three CAs, as kubeadm lays them out: the cluster CA (API server, its clients, the local
node's log endpoint), the front-proxy CA (aggregation layer) and etcd's own CA, so that no
certificate the cluster CA signs (the local node holds its key) opens etcd. etcd requires
a client certificate from its CA on both its client and peer ports.

Everything is generated fresh for each cluster with ``cryptography``; nothing here is ever
used outside this machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
SERVICE_IP = "10.0.0.1"  # first address of --service-cluster-ip-range


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "docrelay-local-ca") -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not an EC private key")
        return cls(cert=cert, key=key)

    def issue(
        self,
        common_name: str,
        *,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ip_addresses: tuple[str, ...] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, both PEM."""
        key = _new_key()
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False,
                    crl_sign=False, content_commitment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if dns_names or ip_addresses:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)


@dataclass(frozen=True)
class Pki:
    """Paths of every credential the control plane uses, all under one directory."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    def cert(self, identity: str) -> Path:
        return self.path(f"{identity}.crt")

    def key(self, identity: str) -> Path:
        return self.path(f"{identity}.key")

    @property
    def etcd_ca_cert(self) -> Path:
        return self.path("etcd-ca.crt")

    @property
    def service_account_key(self) -> Path:
        return self.path("service-account.key")

    @property
    def service_account_pub(self) -> Path:
        return self.path("service-account.pub")


# identity -> (common name, organizations); all are client certificates of the API server.
CLIENT_IDENTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("docrelay-admin", ("system:masters",)),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
    # What the API server presents to the local node's log endpoint (kubectl logs).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}

# identity -> common name; client certificates of etcd, signed by etcd's CA.
ETCD_CLIENT_IDENTITIES: dict[str, str] = {
    "apiserver-etcd-client": "kube-apiserver-etcd-client",
    # Health checks and etcdctl (tests that read etcd directly).
    "etcd-admin-client": "docrelay-etcd-admin",
}


def generate(directory: Path) -> Pki:
    """Write a fresh CA, serving and client certificates and the service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    pki = Pki(directory)
    ca = CertificateAuthority.create()
    _write(pki.ca_cert, _cert_pem(ca.cert))
    _write(pki.ca_key, _key_pem(ca.key), private=True)

    cert, key = ca.issue(
        "kube-apiserver",
        dns_names=(
            "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", SERVICE_IP),
        server=True,
    )
    _write(pki.cert("apiserver"), cert)
    _write(pki.key("apiserver"), key, private=True)

    for identity, (common_name, organizations) in CLIENT_IDENTITIES.items():
        cert, key = ca.issue(common_name, organizations=organizations, client=True)
        _write(pki.cert(identity), cert)
        _write(pki.key(identity), key, private=True)

    # The aggregation layer's own CA: without it every component logs a missing bundle.
    front_proxy_ca = CertificateAuthority.create("docrelay-local-front-proxy-ca")
    _write(pki.path("front-proxy-ca.crt"), _cert_pem(front_proxy_ca.cert))
    cert, key = front_proxy_ca.issue("front-proxy-client", client=True)
    _write(pki.cert("front-proxy-client"), cert)
    _write(pki.key("front-proxy-client"), key, private=True)

    # etcd: its own CA; the server certificate also serves the peer port (one member).
    etcd_ca = CertificateAuthority.create("docrelay-local-etcd-ca")
    _write(pki.etcd_ca_cert, _cert_pem(etcd_ca.cert))
    cert, key = etcd_ca.issue("etcd", dns_names=("localhost",), ip_addresses=("127.0.0.1",),
                              server=True, client=True)
    _write(pki.cert("etcd-server"), cert)
    _write(pki.key("etcd-server"), key, private=True)
    for identity, common_name in ETCD_CLIENT_IDENTITIES.items():
        cert, key = etcd_ca.issue(common_name, client=True)
        _write(pki.cert(identity), cert)
        _write(pki.key(identity), key, private=True)

    # Service-account tokens are signed with RSA, the algorithm every consumer accepts.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.service_account_key, _key_pem(sa_key), private=True)
    _write(
        pki.service_account_pub,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)
