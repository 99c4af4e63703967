"""Sealed secrets against the real API server and etcd, the operator running as a subprocess in
tenant mode with only the permissions it needs (a namespaced Role, and a ClusterRole for its
two webhook configurations).

One scenario, in the order a user meets it; every canary value is random, and at the end
every object of every kind, the operator's log and etcd (keys and raw data files) are searched
for every canary in raw, base64 and URL-encoded form.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devkit import toolchain
from docrelay.masking import contains_any_form
from tests.cluster.test_operator_lifecycle import (
    CODE_V1,
    GROUP,
    REPO_ROOT,
    VERSION,
    Operator,
    integration_manifest,
    tenant_kubeconfig,
)

WAIT_SECONDS = 45
KEYS_SECRET = "docrelay-sealing-keys"
CERT_CONFIG_MAP = "docrelay-sealing-cert"
SEAL_WEBHOOK = "seal-plaintext.secrets.docrelay.io"

# What sealing adds to the operator's tenant Role, and the one cluster-scoped grant.
SEALING_RULES: list[dict[str, Any]] = [
    # The key Secret: created once, renewed in place (create cannot be limited by name).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]},
    # The published certificate.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
    # Status of secrets: Active/Superseded, fingerprint, conditions.
    {"apiGroups": [GROUP], "resources": ["integrationsecrets/status"], "verbs": ["get", "patch"]},
]
WEBHOOK_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        "verbs": ["get", "create", "update"],
    }
]


def grant_sealing(api: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    subject = {"kind": "ServiceAccount", "name": "docrelay-operator", "namespace": namespace}
    rbac.create_namespaced_role(
        namespace, {"metadata": {"name": "docrelay-sealing"}, "rules": SEALING_RULES}
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "docrelay-sealing"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "docrelay-sealing",
            },
            "subjects": [subject],
        },
    )
    name = f"docrelay-webhooks-{namespace}"
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": WEBHOOK_RULES})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [subject],
        }
    )


def cleanup_cluster_scoped(api: client.ApiClient, namespace: str) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    for delete in (
        lambda: rbac.delete_cluster_role_binding(f"docrelay-webhooks-{namespace}"),
        lambda: rbac.delete_cluster_role(f"docrelay-webhooks-{namespace}"),
        lambda: admission.delete_mutating_webhook_configuration(f"docrelay-secrets.{namespace}"),
        lambda: admission.delete_validating_webhook_configuration(f"docrelay-secrets.{namespace}"),
    ):
        try:
            delete()
        except client.ApiException as exc:
            if exc.status != 404:
                raise


class Tenant:
    """One tenant namespace with its operator, which can be stopped and started again."""

    def __init__(self, api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
        self.api, self.namespace, self.tmp_path = api, namespace, tmp_path
        self.kubeconfig = tenant_kubeconfig(api, namespace, tmp_path / f"{namespace}.kubeconfig")
        grant_sealing(api, namespace)
        self.operator: Operator | None = None
        self.logs: list[Path] = []

    def start(self) -> None:
        from tests.cluster.test_operator_lifecycle import free_port

        log = self.tmp_path / f"operator-{self.namespace}-{len(self.logs)}.log"
        self.logs.append(log)
        port = free_port()
        self.operator = Operator(
            self.kubeconfig,
            log,
            [
                "--webhook-host",
                "127.0.0.1",
                "--webhook-port",
                str(port),
                "--key-check-seconds",
                "1",
            ],
        )
        self.operator.wait_healthy()
        # Each start has a new serving certificate (and here a new port): wait until both
        # configurations point at this process.
        admission = client.AdmissionregistrationV1Api(self.api)
        name = f"docrelay-secrets.{self.namespace}"
        for read in (
            admission.read_mutating_webhook_configuration,
            admission.read_validating_webhook_configuration,
        ):
            eventually(
                lambda read=read: read(name).to_dict(),
                lambda o: f":{port}/" in o["webhooks"][0]["client_config"]["url"],
                f"the webhooks of {self.namespace} to be registered",
            )

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None

    def log_text(self) -> str:
        return "".join(p.read_text() for p in self.logs if p.exists())


@pytest.fixture
def tenant(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    started = Tenant(api, namespace, tmp_path)
    try:
        started.start()
        yield started
    finally:
        started.stop()
        cleanup_cluster_scoped(api, namespace)
        print(f"\n--- operator log ---\n{started.log_text()}")


# --- helpers ---------------------------------------------------------------------------------


def run(argv: list[str], stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'operator'}{os.pathsep}{REPO_ROOT}"},
    )
    if expect is not None:
        assert result.returncode == expect, (
            f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result


def docrelay(*args: str, stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "docrelay.cli", *args], stdin, expect)


def kubectl(*args: str, stdin: str = "", expect: int | None = 0) -> subprocess.CompletedProcess:
    return run(["kubectl", *args], stdin, expect)


def canary() -> str:
    return f"cnry-{uuid.uuid4().hex}"


def plaintext_secret(name: str, integration: str, key: str, value: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IntegrationSecret",
            "metadata": {"name": name},
            "spec": {"integration": integration, "key": key, "value": value},
        }
    )


def get_secret(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrationsecrets", name
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), {})


def eventually(
    fetch: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = fetch()
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        else:
            if ok(obj):
                return obj
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last seen: {obj.get('status', obj)}")


def checked(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The secret once the operator has checked its current generation."""

    def fetch() -> dict[str, Any]:
        return get_secret(api, namespace, name)

    return eventually(
        fetch,
        lambda o: (
            (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
            and bool(condition(o, "Ready"))
        ),
        f"the operator to check {namespace}/{name}",
    )


def newest_key_id(api: client.ApiClient, namespace: str) -> str:
    data = client.CoreV1Api(api).read_namespaced_config_map(CERT_CONFIG_MAP, namespace).data
    return str(data["key-id"])


def etcd_dump(endpoint: str) -> bytes:
    etcdctl = toolchain.ensure("etcdctl")
    result = subprocess.run(
        [str(etcdctl), f"--endpoints={endpoint}", "get", "", "--prefix"],
        capture_output=True,
        env={**os.environ, "ETCDCTL_API": "3"},
        timeout=60,
        check=True,
    )
    assert len(result.stdout) > 10_000  # the whole keyspace, not an empty answer
    return result.stdout


def etcd_files(state_dir: Path) -> bytes:
    """Every byte etcd wrote (WAL and database): what was ever stored, not only what is now."""
    return b"".join(p.read_bytes() for p in sorted((state_dir / "etcd").rglob("*")) if p.is_file())


def leaks(blob: bytes, canaries: list[str]) -> list[str]:
    return contains_any_form(blob.decode("latin-1"), canaries)


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
    assert not leaks(etcd_dump(cluster.etcd_endpoint), canaries)
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
    assert not contains_any_form(manifest_text, [sealed_value])
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
        # Restore: the key Secret copied as it is (docs/secrets.md, "Backup and restore").
        keys = core.read_namespaced_secret(KEYS_SECRET, ns)
        core.create_namespaced_secret(
            other_ns, {"metadata": {"name": KEYS_SECRET}, "data": keys.data}
        )
        other = Tenant(api, other_ns, tmp_path)
        try:
            other.start()
            assert newest_key_id(api, other_ns) == first_key  # restored, not regenerated
            moved = json.loads(json.dumps(manifest))
            moved["metadata"]["namespace"] = other_ns
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump(moved))
            moved_ns = checked(api, other_ns, manifest["metadata"]["name"])
            ready = condition(moved_ns, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "BindingMismatch")
            assert f"than {other_ns}/orders/API_KEY" in ready["message"]
            events = core.list_namespaced_event(
                other_ns, field_selector=f"involvedObject.name={manifest['metadata']['name']}"
            ).items
            assert any(e.reason == "BindingMismatch" for e in events)
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
    assert len(set(key_ids)) == 4

    # 5. Restart: the ring is reloaded, not regenerated; everything still opens.
    tenant.stop()
    tenant.start()
    assert newest_key_id(api, ns) == key_ids[-1]
    stored_keys = core.read_namespaced_secret(KEYS_SECRET, ns).data
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
    assert not contains_any_form(listed, canaries)

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

    # 7. The canary crawl: every object of every kind, the operator's log, etcd.
    everything = crawl()
    found = contains_any_form(everything, canaries)
    assert not found, f"canary forms found in the API: {found}"
    assert not contains_any_form(tenant.log_text(), canaries)
    assert not leaks(etcd_dump(cluster.etcd_endpoint), canaries)
    assert not leaks(etcd_files(cluster.state_dir), canaries)
    # The crawl can find things: the sealed values themselves are in it.
    current = get_secret(api, ns, "orders-api-key")["spec"]["encryptedValue"]
    assert current[:40] in everything


def canary_append(canaries: list[str]) -> str:
    value = canary()
    canaries.append(value)
    return value


def crawl() -> str:
    """Every object of every listable kind in every namespace (discovery through kubectl), as
    JSON, with the data of Secrets and ConfigMaps base64-decoded too."""
    kinds = kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    assert "events" in kinds and "secrets" in kinds
    listed = json.loads(kubectl("get", ",".join(kinds), "-A", "-o", "json").stdout)
    parts: list[str] = []
    for item in listed["items"]:
        parts.append(json.dumps(item))
        for field in ("data", "binaryData"):
            for raw in (item.get(field) or {}).values():
                with contextlib.suppress(ValueError, TypeError):
                    parts.append(base64.b64decode(raw).decode("latin-1"))
    text = "\n".join(parts)
    assert '"kind": "IntegrationSecret"' in text and '"kind": "Event"' in text
    return text
