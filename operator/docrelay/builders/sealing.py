"""Manifests of sealed secrets: the key Secret, the certificate ConfigMap, the webhook
configurations and the IntegrationSecret `docrelay seal` prints. Pure: dicts in, dicts out."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization

from docrelay.models.common import API_VERSION, GROUP, VERSION
from docrelay.sealing import KeyRing

KEYS_SECRET = "docrelay-sealing-keys"
# The private keys live in a namespace of their own, never where users keep Integrations:
# whoever may read Secrets there (the built-in `edit` and `admin` roles) would open every value.
KEYS_NAMESPACE_SUFFIX = "-docrelay-keys"
NAMESPACE_MAX = 63
CERT_CONFIG_MAP = "docrelay-sealing-cert"
CERT_ENTRY = "cert.pem"
KEY_ID_ENTRY = "key-id"

# Outside kopf's `docrelay.io/` prefix: these are ours, not kopf's bookkeeping.
RENEW_REQUESTED_ANNOTATION = "sealing.docrelay.io/renew-requested"
RENEW_HANDLED_ANNOTATION = "sealing.docrelay.io/renew-handled"
SEALED_AT_ANNOTATION = "sealing.docrelay.io/sealed-at"
CONFIG_DIGEST_ANNOTATION = "sealing.docrelay.io/config-digest"
# The admission sequence of an IntegrationSecret: stamped by the mutating webhook at CREATE,
# it orders the secrets of one key (the largest is Active); never set or changed by a user.
SEQUENCE_ANNOTATION = "sealing.docrelay.io/sequence"

LABELS = {"app.kubernetes.io/name": "docrelay", "app.kubernetes.io/component": "sealing"}

SEAL_WEBHOOK_ID = "seal-plaintext"
REFUSE_WEBHOOK_ID = "refuse-plaintext"
STAMP_WEBHOOK_ID = "stamp-sequence"
GUARD_WEBHOOK_ID = "guard-sequence"
WEBHOOK_TIMEOUT_SECONDS = 10
# The API server calls the webhooks only for objects carrying plaintext: sealed secrets apply
# (e.g. from Git) even while the operator is down, plaintext is then refused (Fail).
HAS_PLAINTEXT = "has(object.spec) && has(object.spec.value)"

# The sequence annotation of the new and the stored object ('' when absent), in CEL.
_NEW_SEQUENCE = (
    f"(has(object.metadata.annotations) && '{SEQUENCE_ANNOTATION}' in "
    f"object.metadata.annotations ? object.metadata.annotations['{SEQUENCE_ANNOTATION}'] : '')"
)
_OLD_SEQUENCE = (
    f"(has(oldObject.metadata.annotations) && '{SEQUENCE_ANNOTATION}' in "
    f"oldObject.metadata.annotations ? oldObject.metadata.annotations['{SEQUENCE_ANNOTATION}'] "
    ": '')"
)
# Stamp every CREATE; on UPDATE only put back a sequence the update removed. Failure policy
# Ignore: while the operator is down sealed secrets still apply, unstamped (they order by
# their creation time), and the guard below refuses any that carries a sequence.
STAMP_CONDITION = (
    "request.operation == 'CREATE' || (request.operation == 'UPDATE' && "
    f"{_OLD_SEQUENCE} != '' && {_NEW_SEQUENCE} == '')"
)
# Check every CREATE that carries a sequence (ours, or one a user wrote that got past the
# stamp) and every UPDATE that would add, change or remove it. Failure policy Fail.
GUARD_CONDITION = (
    f"(request.operation == 'CREATE' && {_NEW_SEQUENCE} != '') || "
    f"(request.operation == 'UPDATE' && {_OLD_SEQUENCE} != {_NEW_SEQUENCE})"
)


def default_keys_namespace(namespace: str) -> str:
    """`<namespace>-docrelay-keys`: where the key Secret of the install whose operator runs in
    `namespace` lives unless a setting names another. ValueError when too long for a name."""
    name = f"{namespace}{KEYS_NAMESPACE_SUFFIX}"
    if len(name) > NAMESPACE_MAX:
        raise ValueError(
            f"the keys namespace {name} would be longer than {NAMESPACE_MAX} characters: "
            "name one with the keys-namespace setting"
        )
    return name


def keys_secret(namespace: str, ring: KeyRing, annotations: dict[str, str]) -> dict[str, Any]:
    data = {
        name: base64.b64encode(raw).decode("ascii") for name, raw in ring.to_secret_data().items()
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": KEYS_SECRET,
            "namespace": namespace,
            "labels": dict(LABELS),
            "annotations": dict(annotations),
        },
        "data": data,
    }


def certificate_pem(ring: KeyRing, tenant: str) -> str:
    cert = ring.newest.certificate(tenant)
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def cert_config_map(namespace: str, ring: KeyRing) -> dict[str, Any]:
    """The newest public certificate: all `docrelay seal` needs, safe to hand to anyone."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CERT_CONFIG_MAP, "namespace": namespace, "labels": dict(LABELS)},
        "data": {
            CERT_ENTRY: certificate_pem(ring, namespace),
            KEY_ID_ENTRY: ring.newest.key_id,
        },
    }


def webhook_configuration_name(namespace: str | None) -> str:
    """One pair of configurations per install: per tenant namespace, or one cluster-wide."""
    return f"docrelay-secrets.{namespace}" if namespace else "docrelay-secrets"


def _client_config(
    base_url: str | None, service: dict[str, Any] | None, ca_bundle: str, webhook_id: str
) -> dict[str, Any]:
    if service is not None:
        return {"service": {**service, "path": f"/{webhook_id}"}, "caBundle": ca_bundle}
    assert base_url is not None
    return {"url": f"{base_url.rstrip('/')}/{webhook_id}", "caBundle": ca_bundle}


def webhook_configurations(
    *,
    namespace: str | None,
    ca_bundle: str,
    base_url: str | None = None,
    service: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Mutating (seal plaintext) and Validating (refuse plaintext) configurations.

    `namespace` scopes them to one tenant; None serves every namespace (cluster mode).
    Each carries a digest of its content, so the operator rewrites it only on a change.
    """
    name = webhook_configuration_name(namespace)
    common: dict[str, Any] = {
        "rules": [
            {
                "apiGroups": [GROUP],
                "apiVersions": [VERSION],
                "resources": ["integrationsecrets"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }
        ],
        "matchConditions": [{"name": "has-plaintext-value", "expression": HAS_PLAINTEXT}],
        "failurePolicy": "Fail",  # webhook down: plaintext refused, never stored
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": WEBHOOK_TIMEOUT_SECONDS,
    }
    if namespace:
        common["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}

    mutating: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "webhooks": [
            {
                **common,
                "name": "seal-plaintext.secrets.docrelay.io",
                "reinvocationPolicy": "Never",
                "clientConfig": _client_config(base_url, service, ca_bundle, SEAL_WEBHOOK_ID),
            },
            {
                **common,
                "name": "stamp-sequence.secrets.docrelay.io",
                "matchConditions": [
                    {"name": "create-or-sequence-removed", "expression": STAMP_CONDITION}
                ],
                "failurePolicy": "Ignore",  # operator down: unstamped, the guard refuses forgeries
                "reinvocationPolicy": "Never",
                "clientConfig": _client_config(base_url, service, ca_bundle, STAMP_WEBHOOK_ID),
            },
        ],
    }
    validating: dict[str, Any] = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": dict(LABELS)},
        "webhooks": [
            {
                **common,
                "name": "refuse-plaintext.secrets.docrelay.io",
                "clientConfig": _client_config(base_url, service, ca_bundle, REFUSE_WEBHOOK_ID),
            },
            {
                **common,
                "name": "guard-sequence.secrets.docrelay.io",
                "matchConditions": [
                    {"name": "sequence-set-or-changed", "expression": GUARD_CONDITION}
                ],
                "clientConfig": _client_config(base_url, service, ca_bundle, GUARD_WEBHOOK_ID),
            },
        ],
    }
    for config in (mutating, validating):
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        config["metadata"]["annotations"] = {CONFIG_DIGEST_ANNOTATION: digest}
    return mutating, validating


def _normal_client_config(config: dict[str, Any]) -> dict[str, Any]:
    """A clientConfig as the API server stores it (a Service's port defaults to 443)."""
    out = {key: value for key, value in config.items() if value is not None}
    if isinstance(out.get("service"), dict):
        out["service"] = {k: v for k, v in out["service"].items() if v is not None}
        out["service"].setdefault("port", 443)
    return out


def webhook_client_config_patch(
    current: dict[str, Any], desired: dict[str, Any]
) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that gives each of our webhooks in `current` (a stored
    configuration, camelCase) the clientConfig of `desired`; [] when nothing differs.

    The operator owns only the clientConfig (where to call, and the CA bundle): the object's
    labels and annotations (Helm's), its rules and selectors stay whoever set them. Each
    replacement is guarded by a `test` of the webhook's name at that index, so a concurrent
    reordering fails the patch (422) instead of writing into another webhook. A webhook of
    ours that is missing is added whole.
    """
    ops: list[dict[str, Any]] = []
    stored = list(current.get("webhooks") or [])
    index = {webhook.get("name"): i for i, webhook in enumerate(stored)}
    for webhook in desired["webhooks"]:
        want = _normal_client_config(webhook["clientConfig"])
        at = index.get(webhook["name"])
        if at is None:
            ops.append({"op": "add", "path": "/webhooks/-", "value": webhook})
            continue
        if _normal_client_config(stored[at].get("clientConfig") or {}) == want:
            continue
        ops.append({"op": "test", "path": f"/webhooks/{at}/name", "value": webhook["name"]})
        ops.append({"op": "replace", "path": f"/webhooks/{at}/clientConfig", "value": want})
    return ops


def webhook_configuration_patch(
    current: dict[str, Any], desired: dict[str, Any]
) -> list[dict[str, Any]]:
    """The JSON patch from a stored configuration to `desired`; [] when nothing differs.

    One the operator created (it carries our digest annotation) is ours whole: its webhooks
    are replaced when the digest differs (a new certificate, or a new version's rules). Any
    other (a Helm release's) gets only the clientConfig of our webhooks
    (`webhook_client_config_patch`).
    """
    metadata = current.get("metadata") or {}
    digest = (metadata.get("annotations") or {}).get(CONFIG_DIGEST_ANNOTATION)
    if digest is None:
        return webhook_client_config_patch(current, desired)
    want = desired["metadata"]["annotations"][CONFIG_DIGEST_ANNOTATION]
    if digest == want:
        return []
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": metadata["resourceVersion"]},
        {"op": "replace", "path": "/webhooks", "value": desired["webhooks"]},
        {
            "op": "replace",
            "path": "/metadata/annotations/" + CONFIG_DIGEST_ANNOTATION.replace("/", "~1"),
            "value": want,
        },
    ]


# --- the IntegrationSecret `docrelay seal` prints ------------------------------------------------

NAME_HASH_CHARS = 8


def secret_name(integration: str, key: str, sealed: str) -> str:
    """`<integration>-<key>-<hash of the ciphertext>`: readable, and new per seal, so a new seal
    is a new object that supersedes the older one (history stays until you delete it)."""
    digest = hashlib.sha256(sealed.encode("ascii")).hexdigest()[:NAME_HASH_CHARS]
    return f"{integration}-{key.lower().replace('_', '-')}-{digest}"


def integration_secret(
    *,
    namespace: str,
    integration: str,
    key: str,
    sealed: str,
    key_id: str,
    sealed_at: datetime,
    name: str | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "IntegrationSecret",
        "metadata": {
            "name": name or secret_name(integration, key, sealed),
            "namespace": namespace,
            "annotations": {
                SEALED_AT_ANNOTATION: sealed_at.replace(microsecond=0)
                .isoformat()
                .replace("+00:00", "Z")
            },
        },
        "spec": {
            "integration": integration,
            "key": key,
            "encryptedValue": sealed,
            "keyId": key_id,
        },
    }
