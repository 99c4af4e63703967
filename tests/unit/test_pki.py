"""The local cluster's PKI: every identity the control plane relies on, chained to one CA."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devkit.cluster import kubeconfig, pki


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> pki.Pki:
    return pki.generate(tmp_path_factory.mktemp("pki"))


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_apiserver_certificate_names_every_address_clients_use(generated: pki.Pki) -> None:
    cert = _load(generated.cert("apiserver"))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "kubernetes.default.svc"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", pki.SERVICE_IP,
    }
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


@pytest.mark.parametrize(
    ("identity", "common_name", "organization"),
    [
        ("admin", "docrelay-admin", "system:masters"),
        ("kube-controller-manager", "system:kube-controller-manager", None),
        ("kube-scheduler", "system:kube-scheduler", None),
        ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"),
    ],
)
def test_client_identities_are_what_rbac_expects(
    generated: pki.Pki, identity: str, common_name: str, organization: str | None
) -> None:
    cert = _load(generated.cert(identity))
    ca = _load(generated.ca_cert)
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ([organization] if organization else [])


def test_private_keys_are_readable_only_by_their_owner(generated: pki.Pki) -> None:
    for path in (generated.ca_key, generated.key("admin"), generated.service_account_key):
        assert path.stat().st_mode & 0o077 == 0, path


def test_ca_can_be_loaded_again_to_issue_more(generated: pki.Pki) -> None:
    ca = pki.CertificateAuthority.load(generated.ca_cert, generated.ca_key)
    cert_pem, _ = ca.issue("local-node", ip_addresses=("127.0.0.1",), server=True)
    x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(ca.cert)


def test_kubeconfig_points_at_the_server_with_a_client_certificate(
    generated: pki.Pki, tmp_path: Path
) -> None:
    path = kubeconfig.write(
        tmp_path / "kc", server="https://127.0.0.1:6443", ca=generated.ca_cert,
        cert=generated.cert("admin"), key=generated.key("admin"), user="admin",
    )
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert config["users"][0]["user"]["client-certificate"] == str(generated.cert("admin"))
    assert config["current-context"] == kubeconfig.CONTEXT
    assert path.stat().st_mode & 0o077 == 0
