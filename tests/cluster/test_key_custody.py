"""Who holds the sealing keys (docs/secrets.md, "Who can read what"), on the real control plane.

The private keys live in the install's keys namespace (`<namespace>-docrelay-keys`), never in
the namespace where users keep their Integrations: a user bound there to the built-in `edit`
or `admin` ClusterRole, who may read every Secret of that namespace, cannot read them. Runs
still open their secrets (the broker reads the keys there), renewal still works, and an
upgrade that finds the keys in the old place stops instead of making new ones.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from docrelay.builders.sealing import CERT_CONFIG_MAP, KEYS_SECRET, certificate_pem, keys_secret
from docrelay.sealing import KeyRing
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    Tenant,
    canary,
    checked,
    cleanup_cluster_scoped,
    condition,
    create_run,
    docrelay,
    eventually,
    gateway_kubeconfig,
    get_secret,
    keys_namespace,
    kubectl,
    make_integration,
    platform_secret,
    platform_standin,
    set_secret,
    stop_stack,
    token_kubeconfig,
    wait_finished,
)
from tests.leakcheck import assert_clean

# The run proves it holds both values without printing or sending them: it compares digests.
CODE_CHECKS_BOTH = """
import hashlib, os

def lambda_handler(event, context):
    def same(key):
        return hashlib.sha256(os.environ[key].encode()).hexdigest() == EXPECTED[key]
    return {"summary": f"old={same('OLD_KEY')} new={same('NEW_KEY')}"}
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture
def stack(
    api: client.ApiClient, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Tenant, Gateway]]:
    """Gateway + broker and the operator, each with only its own RBAC (devkit.rbac)."""
    ns = namespace
    with platform_standin() as platform:
        platform_secret(api, ns, platform)
        kubeconfig = gateway_kubeconfig(api, ns, tmp_path / "gateway.kubeconfig")
        gateway = Gateway(
            tmp_path,
            ["-n", ns],
            env={"KUBECONFIG": str(kubeconfig), "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1"},
        )
        monkeypatch.setenv("DOCRELAY_BROKER_URL", gateway.url)
        tenant = Tenant(api, ns, tmp_path)
        try:
            gateway.wait_ready()
            tenant.start()
            yield tenant, gateway
        finally:
            stop_stack(api, ns, tenant, gateway)


def tenant_user(api: client.ApiClient, ns: str, role: str, tmp_path: Path) -> Path:
    """A user of the tenant namespace bound there to a built-in ClusterRole (`edit`,
    `admin`), as a platform team binds its people: a kubeconfig with that user's token."""
    account = f"tenant-{role}"
    # The built-in roles are aggregated by the controller manager: filled once it has run.
    eventually(
        lambda: client.RbacAuthorizationV1Api(api).read_cluster_role(role),
        lambda found: any("secrets" in (rule.resources or []) for rule in found.rules or []),
        f"the built-in {role} role to be aggregated",
    )
    client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": account}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": account},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    )
    return token_kubeconfig(api, ns, account, tmp_path / f"{account}.kubeconfig", ns)


def may(user: client.ApiClient, verb: str, namespace: str, name: str | None = None) -> bool:
    review = client.AuthorizationV1Api(user).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "resource": "secrets",
                    "verb": verb,
                    "namespace": namespace,
                    **({"name": name} if name else {}),
                }
            }
        }
    )
    return bool(review.status.allowed)


def status_of(call: Any) -> int:
    try:
        call()
    except client.ApiException as exc:
        return int(exc.status)
    return 200


@pytest.mark.parametrize("role", ["edit", "admin"])
def test_tenant_users_cannot_read_the_keys_and_runs_still_open_their_secrets(
    api: client.ApiClient,
    namespace: str,
    stack: tuple[Tenant, Gateway],
    tmp_path: Path,
    role: str,
) -> None:
    ns, keys_ns = namespace, keys_namespace(namespace)
    core = client.CoreV1Api(api)
    # The operator made the keys in the keys namespace; none are where users work.
    ring = core.read_namespaced_secret(KEYS_SECRET, keys_ns)
    assert any(entry.startswith("sealing-key-") for entry in ring.data)
    assert status_of(lambda: core.read_namespaced_secret(KEYS_SECRET, ns)) == 404
    first_key = core.read_namespaced_config_map(CERT_CONFIG_MAP, ns).data["key-id"]

    kubeconfig = tenant_user(api, ns, role, tmp_path)
    user = config.new_client_from_config(config_file=str(kubeconfig))
    user_core = client.CoreV1Api(user)
    # The user really is powerful at home: every Secret of the tenant namespace...
    assert may(user, "get", ns) and may(user, "list", ns)
    assert status_of(lambda: user_core.list_namespaced_secret(ns)) == 200
    # ...and nothing in the keys namespace: the review says no, the API answers 403.
    assert not may(user, "get", keys_ns, KEYS_SECRET)
    assert not may(user, "list", keys_ns)
    assert not may(user, "watch", keys_ns)
    assert status_of(lambda: user_core.read_namespaced_secret(KEYS_SECRET, keys_ns)) == 403
    assert status_of(lambda: user_core.list_namespaced_secret(keys_ns)) == 403
    assert status_of(lambda: user_core.read_namespaced_secret(KEYS_SECRET, ns)) == 404
    shown = kubectl(
        "--kubeconfig", str(kubeconfig), "-n", keys_ns, "get", "secret", KEYS_SECRET, expect=1
    )
    assert "Forbidden" in shown.stderr, shown.stderr
    # The certificate stays where users and `docrelay seal` find it.
    assert user_core.read_namespaced_config_map(CERT_CONFIG_MAP, ns).data["key-id"] == first_key
    # Renewal is not theirs to ask for either: it annotates the key Secret.
    refused = docrelay("keys", "renew", "-n", ns, "--kubeconfig", str(kubeconfig), expect=1)
    assert f"403 (forbidden) while reading Secret {keys_ns}/{KEYS_SECRET}" in refused.stderr

    # A value sealed under the first key, a renewal by whoever holds the keys namespace (here
    # the cluster admin), a value sealed under the new key: a run opens both.
    old, new = canary(), canary()
    set_secret(api, ns, "both", "OLD_KEY", old)
    out = docrelay("keys", "renew", "-n", ns).stdout
    second_key = core.read_namespaced_config_map(CERT_CONFIG_MAP, ns).data["key-id"]
    assert second_key != first_key and f"new sealing key {second_key}" in out
    set_secret(api, ns, "both", "NEW_KEY", new)
    assert get_secret(api, ns, "both-new-key")["spec"]["keyId"] == second_key
    assert get_secret(api, ns, "both-old-key")["spec"]["keyId"] == first_key
    expected = {"OLD_KEY": digest(old), "NEW_KEY": digest(new)}
    code = f"EXPECTED = {expected!r}\n{CODE_CHECKS_BOTH}"
    make_integration(api, ns, "both", code, secrets=["OLD_KEY", "NEW_KEY"])
    status = wait_finished(api, ns, create_run(api, ns, "both"))
    assert status["phase"] == "Succeeded", status
    assert status["resultSummary"] == "old=True new=True"
    assert_clean(str(status), [old, new], "the run's status")
    stored = core.read_namespaced_secret(KEYS_SECRET, keys_ns).data
    assert sum(1 for entry in stored if entry.startswith("sealing-key-")) == 2


def test_keys_found_in_the_old_place_are_moved_by_hand_never_replaced(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """An install from before the keys namespace: the Secret is in the tenant namespace. The
    operator makes no new keys (they would open none of the existing secrets, and a Secret
    there may have been planted by a tenant user); it says what to do, and picks the keys up
    once moved as docs/secrets.md says. A secret sealed before the move opens after it."""
    ns, keys_ns = namespace, keys_namespace(namespace)
    core = client.CoreV1Api(api)
    ring = KeyRing.create(datetime.now(UTC))
    core.create_namespaced_secret(ns, keys_secret(ns, ring, {}))
    cert = tmp_path / "cert.pem"
    cert.write_text(certificate_pem(ring, ns))
    sealed = yaml.safe_load(
        docrelay(
            "seal", "MOVED_KEY", "--integration", "orders", "-n", ns, "--cert", str(cert),
            stdin="value-sealed-before-the-move",
        ).stdout
    )  # fmt: skip
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationsecrets", sealed
    )
    tenant = Tenant(api, ns, tmp_path)
    try:
        tenant.start()  # returns after the first key check (the webhooks come after it)
        assert status_of(lambda: core.read_namespaced_secret(KEYS_SECRET, keys_ns)) == 404
        assert status_of(lambda: core.read_namespaced_config_map(CERT_CONFIG_MAP, ns)) == 404
        log = eventually(tenant.log_text, lambda text: "Moving the keys" in text, "the advice")
        assert f"no Secret {keys_ns}/{KEYS_SECRET}, but {ns}/{KEYS_SECRET} exists" in log
        assert "no new keys are made meanwhile" in log
        waiting = checked(api, ns, sealed["metadata"]["name"])
        assert condition(waiting, "Ready")["reason"] == "KeysUnavailable"

        # The move, as docs/secrets.md shows it.
        shown = kubectl("get", "secret", KEYS_SECRET, "-n", ns, "-o", "yaml").stdout
        moved = kubectl("create", "-f", "-", "-o", "name", stdin=move_to(shown, ns, keys_ns)).stdout
        assert moved.strip() == f"secret/{KEYS_SECRET}"
        kubectl("delete", "secret", KEYS_SECRET, "-n", ns)
        published = eventually(
            lambda: core.read_namespaced_config_map(CERT_CONFIG_MAP, ns),
            lambda cm: cm is not None,
            "the certificate of the moved keys",
        )
        assert published.data["key-id"] == ring.newest.key_id  # the same keys, not new ones
        kept = core.read_namespaced_secret(KEYS_SECRET, keys_ns).data
        assert set(kept) == set(ring.to_secret_data())
        opened = eventually(
            lambda: get_secret(api, ns, sealed["metadata"]["name"]),
            lambda o: condition(o, "Sealed").get("status") == "True",
            "the secret sealed before the move to open",
        )
        assert condition(opened, "Ready")["reason"] == "Sealed"
    finally:
        tenant.stop()
        cleanup_cluster_scoped(api, ns)
        print(f"\n--- operator log ---\n{tenant.log_text()}")


def move_to(manifest: str, old: str, new: str) -> str:
    """docs/secrets.md's `sed` over `kubectl get -o yaml`: the namespace changed, the fields
    the API server sets dropped."""
    done = subprocess.run(
        [
            "sed",
            "-e",
            f"s/^  namespace: {old}$/  namespace: {new}/",
            "-e",
            "/^  resourceVersion:/d",
            "-e",
            "/^  uid:/d",
            "-e",
            "/^  creationTimestamp:/d",
        ],
        input=manifest,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout
