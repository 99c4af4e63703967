"""Sealed secrets against the real API server and etcd, the operator running as a subprocess in
tenant mode with only the permissions it needs (a namespaced Role, and a ClusterRole for its
two webhook configurations).

One scenario, in the order a user meets it; every canary value is random (and changed by every
encoding, tests/leakcheck.py), and at the end every object of every kind, every log and etcd
(keys and raw data files) are searched for every canary in every form (harness.canary_crawl).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    canary,
    canary_crawl,
    checked,
    cleanup_cluster_scoped,
    condition,
    docrelay,
    etcd_dump,
    eventually,
    get_secret,
    integration_manifest,
    keys_namespace,
    kubectl,
    plaintext_secret,
)
from tests.leakcheck import assert_clean

CODE_V1 = "def lambda_handler(event, context):\n    return {'version': 1}\n"
KEYS_SECRET = "docrelay-sealing-keys"
CERT_CONFIG_MAP = "docrelay-sealing-cert"
SEAL_WEBHOOK = "seal-plaintext.secrets.docrelay.io"

# --- helpers ---------------------------------------------------------------------------------


def newest_key_id(api: client.ApiClient, namespace: str) -> str:
    data = client.CoreV1Api(api).read_namespaced_config_map(CERT_CONFIG_MAP, namespace).data
    return str(data["key-id"])


# --- the scenario ----------------------------------------------------------------------------


def test_sealed_secrets_end_to_end(
    api: client.ApiClient, namespace: str, tenant: Tenant, cluster: Any, tmp_path: Path
) -> None:
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    canaries: list[str] = []
    ns = namespace

    # 0. Startup: the key Secret and the certificate exist, the webhooks are registered.
    eventually(
        lambda: core.read_namespaced_config_map(CERT_CONFIG_MAP, ns).to_dict(),
        lambda o: "cert.pem" in (o.get("data") or {}),
        "the sealing certificate",
    )
    first_key = newest_key_id(api, ns)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        ns,
        "integrations",
        integration_manifest("orders", CODE_V1, secrets=["API_KEY"]),
    )

    # 1. kubectl apply of plaintext: stored sealed, nowhere in etcd.
    plain = canary()
    canaries.append(plain)
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=plaintext_secret("orders-api-key", "orders", "API_KEY", plain),
    )
    stored = checked(api, ns, "orders-api-key")
    assert "value" not in stored["spec"]
    assert stored["spec"]["keyId"] == first_key
    assert stored["spec"]["encryptedValue"]
    assert (condition(stored, "Ready")["status"], condition(stored, "Ready")["reason"]) == (
        "True",
        "Sealed",
    )
    assert condition(stored, "Sealed")["reason"] == "Opened"
    assert stored["status"]["state"] == "Active"
    assert len(stored["status"]["fingerprint"]) == 16
    last_applied = stored["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"
    ]
    assert json.loads(last_applied)["spec"]["encryptedValue"] == stored["spec"]["encryptedValue"]
    assert_clean(etcd_dump(cluster), canaries, "etcd")
    # The Integration's SecretsReady follows the secret that opens.
    eventually(
        lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, "integrations", "orders"),
        lambda o: condition(o, "SecretsReady").get("reason") == "SecretsPresent",
        "SecretsReady=True",
    )
    # Applying the same manifest again re-seals in place; the fingerprint stays.
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=plaintext_secret("orders-api-key", "orders", "API_KEY", plain),
    )
    again = checked(api, ns, "orders-api-key")
    assert "value" not in again["spec"]
    assert again["status"]["fingerprint"] == stored["status"]["fingerprint"]

    # 2. docrelay seal on the "user's machine", applied: Active; the first is Superseded.
    sealed_value = canary()
    canaries.append(sealed_value)
    manifest_text = docrelay(
        "seal", "API_KEY", "--integration", "orders", "-n", ns, stdin=sealed_value + "\n"
    ).stdout
    assert_clean(manifest_text, [sealed_value], "the output of docrelay seal")
    manifest = yaml.safe_load(manifest_text)
    assert manifest["metadata"]["name"].startswith("orders-api-key-")
    time.sleep(1.1)  # a later creationTimestamp (seconds) than the first secret
    kubectl("apply", "-f", "-", stdin=manifest_text)
    newer = checked(api, ns, manifest["metadata"]["name"])
    assert newer["status"]["state"] == "Active"
    assert condition(newer, "Ready")["status"] == "True"
    older = eventually(
        lambda: get_secret(api, ns, "orders-api-key"),
        lambda o: o["status"].get("state") == "Superseded",
        "the older secret to be superseded",
    )
    assert older["status"]["supersededBy"] == manifest["metadata"]["name"]
    assert condition(older, "Ready")["reason"] == "Superseded"
    assert condition(older, "Sealed")["status"] == "True"  # it still opens

    # 3. Ciphertext renamed to another key, and copied to another namespace (whose operator
    #    holds the same keys, restored from the backup): neither opens, the condition says why.
    renamed = json.loads(json.dumps(manifest))
    renamed["metadata"]["name"] = "orders-other-key"
    renamed["spec"]["key"] = "OTHER_KEY"
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(renamed))
    moved_key = checked(api, ns, "orders-other-key")
    ready = condition(moved_key, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BindingMismatch")
    assert "seal it again" in ready["message"] and "docrelay seal" in ready["message"]
    assert "fingerprint" not in moved_key["status"]

    other_ns = f"{ns[:40]}-b-{uuid.uuid4().hex[:4]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other_ns)))
    try:
        eventually(
            lambda: core.read_namespaced_service_account("default", other_ns).to_dict(),
            lambda o: True,
            "the other namespace",
        )
        other = Tenant(api, other_ns, tmp_path)  # and its keys namespace, as the chart's
        try:
            # Restore: the key Secret copied as it is into the other install's keys
            # namespace (docs/secrets.md, "Backup and restore").
            keys = core.read_namespaced_secret(KEYS_SECRET, keys_namespace(ns))
            core.create_namespaced_secret(
                keys_namespace(other_ns), {"metadata": {"name": KEYS_SECRET}, "data": keys.data}
            )
            other.start()
            assert newest_key_id(api, other_ns) == first_key  # restored, not regenerated
            moved = json.loads(json.dumps(manifest))
            moved["metadata"]["namespace"] = other_ns
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump(moved))
            moved_ns = checked(api, other_ns, manifest["metadata"]["name"])
            ready = condition(moved_ns, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "BindingMismatch")
            assert f"than {other_ns}/orders/API_KEY" in ready["message"]
            # The Event is posted right after the status: it may trail it by a moment.
            eventually(
                lambda: core.list_namespaced_event(
                    other_ns, field_selector=f"involvedObject.name={manifest['metadata']['name']}"
                ),
                lambda events: any(e.reason == "BindingMismatch" for e in events.items),
                "a BindingMismatch Event about the moved secret",
            )
        finally:
            other.stop()
            cleanup_cluster_scoped(api, other_ns)
            tenant.logs.extend(other.logs)  # crawled below with the rest
    finally:
        core.delete_namespace(other_ns)

    # 4. Three forced renewals: new keys, old ones kept; new seals use the newest key.
    key_ids = [first_key]
    for _ in range(3):
        out = docrelay("keys", "renew", "-n", ns).stdout
        key_ids.append(newest_key_id(api, ns))
        assert f"new sealing key {key_ids[-1]}" in out
        value = canary()
        canaries.append(value)
        out = docrelay(
            "secret", "set", "LEDGER", "--integration", "orders", "-n", ns, stdin=value
        ).stdout
        assert "Active: fingerprint " in out
        assert f"sealing key {key_ids[-1]}" in out
        assert_clean(out, [value], "the output of docrelay secret set")
    assert len(set(key_ids)) == 4

    # 5. Restart: the ring is reloaded, not regenerated; everything still opens.
    tenant.stop()
    tenant.start()
    assert newest_key_id(api, ns) == key_ids[-1]
    stored_keys = core.read_namespaced_secret(KEYS_SECRET, keys_namespace(ns)).data
    assert sum(1 for k in stored_keys if k.startswith("sealing-key-")) == 4
    after_restart = canary()
    canaries.append(after_restart)
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=plaintext_secret("orders-late", "orders", "LATE_KEY", after_restart),
    )
    assert checked(api, ns, "orders-late")["spec"]["keyId"] == key_ids[-1]
    listed = docrelay("secret", "list", "-n", ns).stdout
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, ns, "integrationsecrets")[
        "items"
    ]:
        name = item["metadata"]["name"]
        assert name in listed
        item = checked(api, ns, name)
        expected = "False" if name == "orders-other-key" else "True"
        assert condition(item, "Sealed")["status"] == expected, name
    assert "Superseded" in listed and "Active" in listed
    assert_clean(listed, canaries, "the output of docrelay secret list")

    # 6. The operator (and so the webhook) stopped: plaintext is refused, never stored;
    #    sealed secrets still apply.
    tenant.stop()
    refused_value = canary()
    canaries.append(refused_value)
    result = kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        expect=None,
        stdin=plaintext_secret("orders-refused", "orders", "API_KEY", refused_value),
    )
    assert result.returncode != 0
    assert SEAL_WEBHOOK in result.stderr, result.stderr
    with pytest.raises(client.ApiException) as missing:
        get_secret(api, ns, "orders-refused")
    assert missing.value.status == 404
    offline = docrelay(
        "seal", "API_KEY", "--integration", "orders", "-n", ns, stdin=canary_append(canaries)
    ).stdout
    kubectl("apply", "-f", "-", stdin=offline)

    # 7. The canary crawl: every object of every kind, every log (the operators' whole), etcd.
    everything = canary_crawl(cluster, canaries, tenant.logs)
    # The crawl covers the keys namespace: the private keys there are in it, decoded.
    keys_data = core.read_namespaced_secret(KEYS_SECRET, keys_namespace(ns)).data
    pem = next(v for k, v in keys_data.items() if k.startswith("sealing-key-"))
    assert base64.b64decode(pem).decode() in everything
    # The crawl can find things: the sealed values themselves are in it.
    current = get_secret(api, ns, "orders-api-key")["spec"]["encryptedValue"]
    assert current[:40] in everything


def canary_append(canaries: list[str]) -> str:
    value = canary()
    canaries.append(value)
    return value
