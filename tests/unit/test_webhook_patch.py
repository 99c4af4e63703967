"""The operator writes only the clientConfig of its webhooks into an existing configuration
(a Helm release's): labels, annotations, rules and selectors stay as they are. The cluster
proof is tests/cluster/test_chart_install.py; here the patch itself, and the mounted
certificate directory of cert-manager mode."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import pytest

from docrelay.builders.sealing import (
    webhook_client_config_patch,
    webhook_configuration_patch,
    webhook_configurations,
)
from docrelay.handlers.webhooks import mounted_certificate, serving_certificate
from docrelay.settings import SettingsError, load_settings

SERVICE = {"namespace": "team-a", "name": "acme-docrelay-webhook", "port": 443}


def helm_object(built: dict[str, Any], ca_bundle: str | None) -> dict[str, Any]:
    """What the chart installs: the same webhooks, Helm's metadata, no (or an old) CA."""
    stored = copy.deepcopy(built)
    stored["metadata"] = {
        "name": built["metadata"]["name"],
        "resourceVersion": "41",
        "labels": {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "docrelay-0.1.0"},
        "annotations": {
            "meta.helm.sh/release-name": "acme",
            "meta.helm.sh/release-namespace": "team-a",
        },
    }
    for webhook in stored["webhooks"]:
        if ca_bundle is None:
            del webhook["clientConfig"]["caBundle"]
        else:
            webhook["clientConfig"]["caBundle"] = ca_bundle
    return stored


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("old_ca", [None, "T0xE"])
def test_patch_sets_only_the_client_config(index: int, old_ca: str | None) -> None:
    built = webhook_configurations(namespace="team-a", ca_bundle="TkVX", service=SERVICE)[index]
    stored = helm_object(built, old_ca)
    ops = webhook_client_config_patch(stored, built)
    assert {op["op"] for op in ops} == {"test", "replace"}
    assert all(op["path"].startswith("/webhooks/0/") for op in ops)
    patched = jsonpatch.apply_patch(stored, ops)
    assert patched["metadata"] == stored["metadata"]  # Helm's labels and annotations stay
    assert patched["webhooks"][0]["clientConfig"]["caBundle"] == "TkVX"
    assert patched["webhooks"][0]["rules"] == stored["webhooks"][0]["rules"]
    # Once written, nothing more to do (the API server's port default included).
    del patched["webhooks"][0]["clientConfig"]["service"]["port"]
    assert webhook_client_config_patch(patched, built) == []


def test_patch_switches_url_and_service_whole() -> None:
    by_url = webhook_configurations(
        namespace="team-a", ca_bundle="QQ==", base_url="https://127.0.0.1:9443"
    )[0]
    by_service = webhook_configurations(namespace="team-a", ca_bundle="QQ==", service=SERVICE)[0]
    patched = jsonpatch.apply_patch(by_url, webhook_client_config_patch(by_url, by_service))
    assert "url" not in patched["webhooks"][0]["clientConfig"]
    assert patched["webhooks"][0]["clientConfig"]["service"]["name"] == SERVICE["name"]


def test_patch_leaves_other_webhooks_and_adds_a_missing_one() -> None:
    built = webhook_configurations(namespace="team-a", ca_bundle="TkVX", service=SERVICE)[1]
    foreign = {"name": "someone-else.example.com", "clientConfig": {"url": "https://x"}}
    stored = {"metadata": {"name": "n"}, "webhooks": [foreign]}
    ops = webhook_client_config_patch(stored, built)
    assert ops == [{"op": "add", "path": "/webhooks/-", "value": built["webhooks"][0]}]
    patched = jsonpatch.apply_patch(stored, ops)
    assert patched["webhooks"][0] == foreign
    # Ours second: the test guards the right index.
    patched["webhooks"][1]["clientConfig"]["caBundle"] = "T0xE"
    ops = webhook_client_config_patch(patched, built)
    assert ops[0] == {
        "op": "test",
        "path": "/webhooks/1/name",
        "value": built["webhooks"][0]["name"],
    }


def test_mounted_certificate_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"tls\.crt, tls\.key not found"):
        mounted_certificate(str(tmp_path))
    serving_certificate(["svc.ns.svc"], tmp_path)
    cert, key, ca = mounted_certificate(str(tmp_path))
    assert (cert.name, key.name, ca) == ("tls.crt", "tls.key", None)
    (tmp_path / "ca.crt").write_bytes(cert.read_bytes())
    assert mounted_certificate(str(tmp_path))[2] == tmp_path / "ca.crt"


def test_cert_dir_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCRELAY_WEBHOOK_CERT_DIR", "/etc/docrelay/webhook-tls")
    assert load_settings().webhook_cert_dir == "/etc/docrelay/webhook-tls"
    assert load_settings(webhook_cert_dir="/x").webhook_cert_dir == "/x"


def test_a_configuration_the_operator_created_is_replaced_whole_on_a_new_digest() -> None:
    old = webhook_configurations(namespace="team-a", ca_bundle="T0xE", base_url="https://a:1")[0]
    new = webhook_configurations(namespace="team-a", ca_bundle="TkVX", base_url="https://a:2")[0]
    stored = copy.deepcopy(old)
    stored["metadata"]["resourceVersion"] = "7"
    assert webhook_configuration_patch(stored, old) == []
    ops = webhook_configuration_patch(stored, new)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    patched = jsonpatch.apply_patch(stored, ops)
    assert patched["webhooks"] == new["webhooks"]
    assert patched["metadata"]["annotations"] == new["metadata"]["annotations"]
    # A Helm release's (no digest of ours): only the clientConfig.
    helm = helm_object(new, "T0xE")
    assert {op["path"] for op in webhook_configuration_patch(helm, new)} == {
        "/webhooks/0/name",
        "/webhooks/0/clientConfig",
    }
