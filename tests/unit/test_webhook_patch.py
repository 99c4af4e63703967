"""The operator writes only the clientConfig of its webhooks into an existing configuration
(a Helm release's): labels, annotations, rules and selectors stay as they are. The cluster
proof is tests/cluster/test_chart_install.py; here the patch itself, and the mounted
certificate directory of cert-manager mode."""

from __future__ import annotations

import copy
import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

import jsonpatch  # type: ignore[import-untyped]
import pytest

from docrelay.builders.sealing import (
    webhook_client_config_patch,
    webhook_configuration_patch,
    webhook_configurations,
)
from docrelay.handlers.webhooks import Sequencer, mounted_certificate, serving_certificate
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
    # Each configuration holds two webhooks (plaintext, sequence): both get the new CA.
    assert {op["path"].split("/")[2] for op in ops} == {"0", "1"}
    patched = jsonpatch.apply_patch(stored, ops)
    assert patched["metadata"] == stored["metadata"]  # Helm's labels and annotations stay
    for at in (0, 1):
        assert patched["webhooks"][at]["clientConfig"]["caBundle"] == "TkVX"
        assert patched["webhooks"][at]["rules"] == stored["webhooks"][at]["rules"]
        # Once written, nothing more to do (the API server's port default included).
        del patched["webhooks"][at]["clientConfig"]["service"]["port"]
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
    assert ops == [{"op": "add", "path": "/webhooks/-", "value": w} for w in built["webhooks"]]
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
        "/webhooks/1/name",
        "/webhooks/1/clientConfig",
    }


@pytest.mark.parametrize("index", [0, 1])
def test_an_older_chart_gets_the_sequence_webhooks_added(index: int) -> None:
    """A release installed before the admission sequence has only the plaintext webhook: the
    operator adds the sequence one whole, and leaves the chart's own as it is."""
    built = webhook_configurations(namespace="team-a", ca_bundle="TkVX", service=SERVICE)[index]
    stored = helm_object(built, "TkVX")
    del stored["webhooks"][1]
    ops = webhook_client_config_patch(stored, built)
    assert ops == [{"op": "add", "path": "/webhooks/-", "value": built["webhooks"][1]}]
    assert built["webhooks"][1]["name"].startswith(("stamp-sequence.", "guard-sequence."))


def test_the_sequence_webhooks_fail_open_to_stamp_and_closed_to_guard() -> None:
    """While the operator is down sealed secrets still apply (unstamped), but nothing that
    sets or changes a sequence gets through."""
    mutating, validating = webhook_configurations(
        namespace="team-a", ca_bundle="X", service=SERVICE
    )
    stamp, guard = mutating["webhooks"][1], validating["webhooks"][1]
    assert stamp["failurePolicy"] == "Ignore" and guard["failurePolicy"] == "Fail"
    assert stamp["clientConfig"]["service"]["path"] == "/stamp-sequence"
    assert guard["clientConfig"]["service"]["path"] == "/guard-sequence"
    assert "request.operation == 'CREATE'" in stamp["matchConditions"][0]["expression"]
    assert "oldObject" in guard["matchConditions"][0]["expression"]
    for webhook in (stamp, guard):
        assert webhook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert "spec.value" not in webhook["matchConditions"][0]["expression"]


def test_sequences_are_unique_and_increase_under_concurrent_admissions() -> None:
    """Admission handlers run in threads: with a clock that stands still (or goes back), every
    sequence is still new, and each thread sees its own admissions strictly increase."""
    clock = iter([5_000] * 1_000 + [1_000] * 1_000)
    sequencer = Sequencer(clock=lambda: next(clock))
    barrier = threading.Barrier(8)
    seen: list[list[int]] = [[] for _ in range(8)]

    def admit(mine: list[int]) -> None:
        barrier.wait()
        for _ in range(250):
            mine.append(sequencer.issue())

    threads = [threading.Thread(target=admit, args=(mine,)) for mine in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [n for mine in seen for n in mine]
    assert len(set(every)) == 2_000 and min(every) == 5_000
    assert all(a < b for mine in seen for a, b in pairwise(mine))
    assert all(sequencer.issued(str(n)) for n in every)
    assert not sequencer.issued(str(max(every) + 1)) and not sequencer.issued("forged")


def test_the_sequencer_remembers_a_bounded_number() -> None:
    ticks = iter(range(1, 10**9))
    sequencer = Sequencer(clock=lambda: next(ticks))
    first = sequencer.issue()
    for _ in range(Sequencer.REMEMBERED):
        sequencer.issue()
    assert not sequencer.issued(str(first)) and sequencer.issued(str(first + 1))
