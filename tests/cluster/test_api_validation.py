"""The real API server enforces the docrelay API: what a user sees when a manifest is wrong.

INVALID_CASES is also run against the pydantic models (tests/unit/test_models.py): every
manifest the API server rejects, the models reject too, which is how we know the CEL rules and
the Python validators say the same thing.
"""

from __future__ import annotations

import copy
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from docrelay.models import GROUP, KINDS, VERSION

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
DELETE = object()
"""In a patch: remove this key."""

BASES: dict[str, dict[str, Any]] = {
    "Integration": {
        "metadata": {"name": "invoices"},
        "spec": {
            "workspace": "mEFayXdO",
            "documentType": "tVpGRBWd",
            "trigger": "DocumentValidated",
            "code": "def lambda_handler(event, context):\n    pass\n",
        },
    },
    "IntegrationRevision": {
        "metadata": {"name": "invoices-3f9a1c2b7d"},
        "spec": {
            "integration": "invoices",
            "codeConfigMap": {"name": "invoices-3f9a1c2b7d-code"},
            "codeHash": "sha256:" + "3f" * 32,
            "source": {"type": "User"},
        },
    },
    "IntegrationRun": {
        "metadata": {"name": "invoices-5c1e0a9b4f"},
        "spec": {
            "integration": "invoices",
            "documentIdentifier": "dKxA71Zq",
            "trigger": "DocumentValidated",
            "eventId": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            "idempotencyKey": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        },
    },
    "IntegrationSecret": {
        "metadata": {"name": "invoices-ledger-code"},
        "spec": {
            "integration": "invoices",
            "key": "LEDGER_CODE",
            "encryptedValue": "AgBy3i4OJSWK+PiTySYZZA==",
            "keyId": "k-20250101",
        },
    },
    "ConnectedAccount": {
        "metadata": {"name": "xero-finance"},
        "spec": {
            "app": "xero_accounting_api",
            "accountId": "apn_kqAb12Cd",
            "externalUserId": "finance-team",
        },
    },
    "IntegrationConversation": {
        "metadata": {"name": "invoices-build-1"},
        "spec": {
            "integration": "invoices",
            "purpose": "Build",
            "turns": [{"id": "u-1", "text": "Post each invoice to the ERP."}],
        },
    },
}


def patched(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in: dicts merge, DELETE removes, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = patched(out[key], value)
        else:
            out[key] = value
    return out


def manifest(kind: str, patch: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind} | patched(BASES[kind], patch or {})


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    patch: dict[str, Any]
    api_error: str
    """A substring of the API server's message: what `kubectl apply` prints."""
    model_error: str
    """A substring of the pydantic ValidationError's text."""
    status: int = 422

    @property
    def manifest(self) -> dict[str, Any]:
        return manifest(self.kind, self.patch)


def _spec(**fields: Any) -> dict[str, Any]:
    return {"spec": fields}


INVALID_CASES: tuple[Case, ...] = (
    # --- Integration ---------------------------------------------------------------------------
    Case(
        "integration-timeout-above-max",
        "Integration",
        _spec(timeoutSeconds=4000),
        "spec.timeoutSeconds: Invalid value: 4000: spec.timeoutSeconds in body should be less "
        "than or equal to 3600",
        "less than or equal to 3600",
    ),
    Case(
        "integration-timeout-zero",
        "Integration",
        _spec(timeoutSeconds=0),
        "spec.timeoutSeconds in body should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    Case(
        "integration-timeout-string",
        "Integration",
        _spec(timeoutSeconds="300"),
        'spec.timeoutSeconds: Invalid value: "string": spec.timeoutSeconds in body must be of '
        "type integer",
        "Input should be a valid integer",
    ),
    Case(
        "integration-unknown-trigger",
        "Integration",
        _spec(trigger="DocumentRejected"),
        'spec.trigger: Unsupported value: "DocumentRejected": supported values: '
        '"DocumentParseCompleted", "DocumentValidated"',
        "Input should be 'DocumentParseCompleted' or 'DocumentValidated'",
    ),
    Case(
        "integration-missing-workspace",
        "Integration",
        _spec(workspace=DELETE),
        "spec.workspace: Required value",
        "workspace\n  Field required",
    ),
    Case(
        "integration-no-code-no-instructions",
        "Integration",
        _spec(code=DELETE),
        "spec: Invalid value: set code, instructions, or both",
        "set code, instructions, or both",
    ),
    Case(
        "integration-code-too-big",
        "Integration",
        _spec(code="#" * 65537),
        "spec.code: Too long: may not be more than 65536 bytes",
        "at most 65536 characters",
    ),
    Case(
        "integration-workspace-not-an-identifier",
        "Integration",
        _spec(workspace="my workspace"),
        'spec.workspace: Invalid value: "my workspace": spec.workspace in body should match',
        "String should match pattern",
    ),
    Case(
        "integration-retry-cap-below-base",
        "Integration",
        _spec(retry={"backoffBaseSeconds": 600, "backoffCapSeconds": 60}),
        "spec.retry.backoffCapSeconds: Invalid value: backoffCapSeconds must be at least "
        "backoffBaseSeconds",
        "backoffCapSeconds must be at least backoffBaseSeconds",
    ),
    Case(
        "integration-retry-too-many-attempts",
        "Integration",
        _spec(retry={"maxAttempts": 11}),
        "spec.retry.maxAttempts in body should be less than or equal to 10",
        "less than or equal to 10",
    ),
    Case(
        "integration-secret-name-lowercase",
        "Integration",
        _spec(secrets=["api_key"]),
        'spec.secrets[0]: Invalid value: "api_key": spec.secrets[0] in body should match '
        "'^[A-Z_][A-Z0-9_]*$'",
        "String should match pattern '^[A-Z_][A-Z0-9_]*$'",
    ),
    Case(
        "integration-secret-name-reserved",
        "Integration",
        _spec(secrets=["PYTHONPATH"]),
        'spec.secrets[0]: Invalid value: "PYTHONPATH": is reserved: names starting with DOCRELAY_',
        "PYTHONPATH is reserved",
    ),
    Case(
        "integration-secret-name-duplicate",
        "Integration",
        _spec(secrets=["API_KEY", "API_KEY"]),
        'spec.secrets[1]: Duplicate value: "API_KEY"',
        "duplicate value 'API_KEY'",
    ),
    Case(
        "integration-egress-host-is-url",
        "Integration",
        _spec(egress={"hosts": ["https://api.example.com"]}),
        'spec.egress.hosts[0]: Invalid value: "https://api.example.com"',
        "String should match pattern",
    ),
    Case(
        "integration-egress-host-port-out-of-range",
        "Integration",
        _spec(egress={"hosts": ["api.example.com:65536"]}),
        'spec.egress.hosts[0]: Invalid value: "api.example.com:65536"',
        "String should match pattern",
    ),
    Case(
        "integration-egress-cidr-host-bits",
        "Integration",
        _spec(egress={"cidrs": ["10.0.0.1/8"]}),
        'spec.egress.cidrs[0]: Invalid value: "10.0.0.1/8": must be a CIDR block with no host '
        "bits set",
        "must be a CIDR block with no host bits set",
    ),
    Case(
        "integration-egress-dry-run-safe-host-not-listed",
        "Integration",
        _spec(egress={"hosts": ["api.example.com"], "dryRunSafeHosts": ["sandbox.example.com"]}),
        "spec.egress.dryRunSafeHosts: Invalid value: every entry of dryRunSafeHosts must be "
        "listed in hosts too, exactly as written there",
        "every entry of dryRunSafeHosts must be listed in hosts too",
    ),
    Case(
        "integration-memory-request-above-limit",
        "Integration",
        _spec(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
        "spec.resources: Invalid value: requests.memory must not exceed limits.memory",
        "requests.memory must not exceed limits.memory",
    ),
    Case(
        "integration-cpu-not-a-quantity",
        "Integration",
        _spec(resources={"limits": {"cpu": "two"}}),
        'spec.resources.limits.cpu: Invalid value: "two": spec.resources.limits.cpu in body '
        "should match",
        "String should match pattern",
    ),
    Case(
        "integration-python-unsupported",
        "Integration",
        _spec(runtime={"python": "3.9"}),
        'spec.runtime.python: Unsupported value: "3.9"',
        "Input should be '3.11', '3.12' or '3.13'",
    ),
    Case(
        "integration-python-unquoted",
        "Integration",
        _spec(runtime={"python": 3.12}),
        'spec.runtime.python: Invalid value: "number": spec.runtime.python in body must be of '
        "type string",
        "Input should be '3.11', '3.12' or '3.13'",
    ),
    Case(
        "integration-runtime-two-languages",
        "Integration",
        _spec(runtime={"python": "3.12", "nodejs": "20"}),
        "runtime names one language: python or nodejs, not both",
        "runtime names one language: python or nodejs, not both",
    ),
    Case(
        "integration-nodejs-unsupported",
        "Integration",
        _spec(runtime={"nodejs": "18"}),
        'spec.runtime.nodejs: Unsupported value: "18"',
        "Input should be '20', '22', '24' or '26'",
    ),
    Case(
        "integration-concurrency-zero",
        "Integration",
        _spec(maxConcurrency=0),
        "spec.maxConcurrency in body should be greater than or equal to 1",
        "greater than or equal to 1",
    ),
    Case(
        "integration-deploy-policy-lowercase",
        "Integration",
        _spec(deployPolicy="automatic"),
        'spec.deployPolicy: Unsupported value: "automatic": supported values: "Manual", '
        '"Automatic"',
        "Input should be 'Manual' or 'Automatic'",
    ),
    Case(
        "integration-account-name-invalid",
        "Integration",
        _spec(connectedAccounts=["Xero_Finance"]),
        'spec.connectedAccounts[0]: Invalid value: "Xero_Finance"',
        "String should match pattern",
    ),
    Case(
        "integration-unknown-field",
        "Integration",
        _spec(timeout=300),
        'strict decoding error: unknown field "spec.timeout"',
        "Extra inputs are not permitted",
        status=400,  # rejected while decoding, before validation
    ),
    Case(
        "integration-name-too-long",
        "Integration",
        {"metadata": {"name": "a" * 41}},
        "metadata.name must be at most 40 characters",
        "metadata.name must be at most 40 characters",
    ),
    # --- IntegrationRevision -------------------------------------------------------------------
    Case(
        "revision-fix-without-run",
        "IntegrationRevision",
        _spec(source={"type": "Fix", "model": "claude-sonnet-4-5"}),
        "spec.source: Invalid value: fixOfRun is required when type is Fix",
        "fixOfRun is required when type is Fix",
    ),
    Case(
        "revision-agent-without-model",
        "IntegrationRevision",
        _spec(source={"type": "Agent"}),
        "model is required when type is Agent or Fix",
        "model is required when type is Agent or Fix",
    ),
    Case(
        "revision-user-with-model",
        "IntegrationRevision",
        _spec(source={"type": "User", "model": "claude-sonnet-4-5"}),
        "a User revision sets neither model nor promptHash",
        "a User revision sets neither model nor promptHash",
    ),
    Case(
        "revision-hash-not-sha256",
        "IntegrationRevision",
        _spec(codeHash="md5:abc"),
        'spec.codeHash: Invalid value: "md5:abc"',
        "String should have at least 71 characters",
    ),
    Case(
        "revision-source-type-unknown",
        "IntegrationRevision",
        _spec(source={"type": "Human"}),
        'spec.source.type: Unsupported value: "Human"',
        "Input should be 'User', 'Agent' or 'Fix'",
    ),
    Case(
        "revision-missing-code",
        "IntegrationRevision",
        _spec(codeConfigMap=DELETE),
        "spec.codeConfigMap: Required value",
        "codeConfigMap\n  Field required",
    ),
    # --- IntegrationRun ------------------------------------------------------------------------
    Case(
        "run-missing-event-id",
        "IntegrationRun",
        _spec(eventId=DELETE),
        "spec.eventId: Required value",
        "eventId\n  Field required",
    ),
    Case(
        "run-document-identifier-with-slash",
        "IntegrationRun",
        _spec(documentIdentifier="../dKxA71Zq"),
        'spec.documentIdentifier: Invalid value: "../dKxA71Zq"',
        "String should match pattern",
    ),
    Case(
        "run-test-flag-string",
        "IntegrationRun",
        _spec(test="yes"),
        'spec.test: Invalid value: "string": spec.test in body must be of type boolean',
        "Input should be a valid boolean",
    ),
    Case(
        "run-dry-but-not-a-test",
        "IntegrationRun",
        _spec(dryRun=True),
        "spec.dryRun: Invalid value: dryRun is for test runs only: set test: true too",
        "dryRun is for test runs only: set test: true too",
    ),
    Case(
        "run-integration-name-too-long",
        "IntegrationRun",
        _spec(integration="a" * 41),
        "spec.integration: Too long: may not be more than 40 bytes",
        "at most 40 characters",
    ),
    Case(
        "run-name-too-long",
        "IntegrationRun",
        {"metadata": {"name": "r" * 57}},
        "metadata.name must be at most 56 characters",
        "metadata.name must be at most 56 characters",
    ),
    # --- IntegrationSecret ---------------------------------------------------------------------
    Case(
        "secret-value-and-encrypted-value",
        "IntegrationSecret",
        _spec(value="s3cr3t"),
        "set exactly one of value and encryptedValue",
        "set exactly one of value and encryptedValue",
    ),
    Case(
        "secret-no-value",
        "IntegrationSecret",
        _spec(encryptedValue=DELETE, keyId=DELETE),
        "set exactly one of value and encryptedValue",
        "set exactly one of value and encryptedValue",
    ),
    Case(
        "secret-encrypted-without-key-id",
        "IntegrationSecret",
        _spec(keyId=DELETE),
        "spec.keyId: Invalid value: keyId is required with encryptedValue",
        "keyId is required with encryptedValue",
    ),
    Case(
        "secret-plaintext-with-key-id",
        "IntegrationSecret",
        _spec(encryptedValue=DELETE, value="s3cr3t"),
        "keyId is set by the sealing webhook",
        "keyId is set by the sealing webhook",
    ),
    Case(
        "secret-key-not-env-name",
        "IntegrationSecret",
        _spec(key="api-key"),
        'spec.key: Invalid value: "api-key": spec.key in body should match',
        "String should match pattern '^[A-Z_][A-Z0-9_]*$'",
    ),
    Case(
        "secret-key-reserved",
        "IntegrationSecret",
        _spec(key="DOCRELAY_BROKER_URL"),
        'spec.key: Invalid value: "DOCRELAY_BROKER_URL": is reserved',
        "DOCRELAY_BROKER_URL is reserved",
    ),
    Case(
        "secret-encrypted-not-base64",
        "IntegrationSecret",
        _spec(encryptedValue="not base64!"),
        'spec.encryptedValue: Invalid value: "not base64!"',
        "String should match pattern",
    ),
    # --- ConnectedAccount ----------------------------------------------------------------------
    Case(
        "account-id-not-pipedream",
        "ConnectedAccount",
        _spec(accountId="acc_123"),
        'spec.accountId: Invalid value: "acc_123": spec.accountId in body should match '
        "'^apn_[A-Za-z0-9]+$'",
        "String should match pattern '^apn_[A-Za-z0-9]+$'",
    ),
    Case(
        "account-app-not-a-slug",
        "ConnectedAccount",
        _spec(app="Xero Accounting"),
        'spec.app: Invalid value: "Xero Accounting"',
        "String should match pattern",
    ),
    Case(
        "account-environment-unknown",
        "ConnectedAccount",
        _spec(environment="staging"),
        'spec.environment: Unsupported value: "staging": supported values: "development", '
        '"production"',
        "Input should be 'development' or 'production'",
    ),
    Case(
        "account-missing-external-user",
        "ConnectedAccount",
        _spec(externalUserId=DELETE),
        "spec.externalUserId: Required value",
        "externalUserId\n  Field required",
    ),
    Case(
        "account-project-not-pipedream",
        "ConnectedAccount",
        _spec(projectId="project-1"),
        'spec.projectId: Invalid value: "project-1"',
        "String should match pattern '^proj_[A-Za-z0-9]+$'",
    ),
    # --- IntegrationConversation ---------------------------------------------------------------
    Case(
        "conversation-fix-without-run",
        "IntegrationConversation",
        _spec(purpose="Fix"),
        "spec.run: Invalid value: run is required when purpose is Fix, and only then",
        "run is required when purpose is Fix, and only then",
    ),
    Case(
        "conversation-say-without-text",
        "IntegrationConversation",
        _spec(turns=[{"id": "u-1"}]),
        "spec.turns[0].text: Invalid value: text is required for Say and Override",
        "text is required for Say and Override",
    ),
    Case(
        "conversation-turn-too-long",
        "IntegrationConversation",
        _spec(turns=[{"id": "u-1", "text": "x" * 4001}]),
        "spec.turns[0].text: Too long: may not be more than 4000 bytes",
        "String should have at most 4000 characters",
    ),
    Case(
        "conversation-purpose-unknown",
        "IntegrationConversation",
        _spec(purpose="Chat"),
        'spec.purpose: Unsupported value: "Chat": supported values: "Build", "Fix", "Change"',
        "Input should be 'Build', 'Fix' or 'Change'",
    ),
)

# --- API helpers -------------------------------------------------------------------------------


def _plural(kind: str) -> str:
    return KINDS[kind].crd.plural


def objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create as `kubectl create --validate=strict` does: unknown fields are errors."""
    created = objects(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, _plural(body["kind"]), body, field_validation="Strict"
    )
    return cast(dict[str, Any], created)


def replace(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    name, plural = body["metadata"]["name"], _plural(body["kind"])
    replaced = objects(api).replace_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, body, field_validation="Strict"
    )
    return cast(dict[str, Any], replaced)


def patch_status(
    api: client.ApiClient, namespace: str, kind: str, name: str, status: dict[str, Any]
) -> dict[str, Any]:
    patched_object = objects(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, _plural(kind), name, {"status": status}
    )
    return cast(dict[str, Any], patched_object)


def rejection(call: Any, *args: Any, status: int = 422) -> str:
    """The message of the error (422 Invalid unless told) the API server answers with."""
    with pytest.raises(client.ApiException) as caught:
        call(*args)
    assert caught.value.status == status, caught.value.body
    return str(json.loads(caught.value.body or "{}").get("message"))


def _changed_spec(stored: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return patched(stored, {"spec": fields})


# --- Tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected(api: client.ApiClient, namespace: str, case: Case) -> None:
    message = rejection(create, api, namespace, case.manifest, status=case.status)
    assert case.api_error in message


def test_the_table_covers_every_kind() -> None:
    assert {c.kind for c in INVALID_CASES} == set(KINDS)
    assert len(INVALID_CASES) >= 25


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_applies_and_the_server_defaults_match_the_models(
    api: client.ApiClient, namespace: str, path: Path
) -> None:
    document = yaml.safe_load(path.read_text())
    stored = create(api, namespace, document)

    model = KINDS[document["kind"]]
    # The API server filled in its defaults; the models fill in theirs. They must agree.
    assert (
        model.model_validate(stored).model_dump()["spec"]
        == (model.model_validate(document).model_dump()["spec"])
    )


def test_kubectl_get_docrelay_lists_every_kind(api: client.ApiClient, namespace: str) -> None:
    for path in EXAMPLES:
        create(api, namespace, yaml.safe_load(path.read_text()))

    listed = subprocess.run(
        ["kubectl", "get", "docrelay", "-n", namespace, "-o", "name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()

    assert {name.split("/")[0] for name in listed} == {
        f"{KINDS[kind].crd.singular}.{GROUP}" for kind in KINDS
    }


def test_printer_columns_select_conditions_by_type(api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, manifest("Integration"))
    status = {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "CodeReady",
                "status": "True",
                "reason": "Deployed",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "message": "",
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "SecretsMissing",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "message": "LEDGER_CODE is missing",
            },
        ],
    }
    patch_status(api, namespace, "Integration", "invoices", status)

    wide = subprocess.run(
        ["kubectl", "get", "integration", "invoices", "-n", namespace, "-o", "wide"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    row = dict(zip(wide[0].split(), wide[1].split(), strict=False))
    assert row["READY"] == "False"  # the Ready condition, not the first one in the list
    assert wide[1].split()[-1] == "SecretsMissing"  # REASON, the last -o wide column


def test_status_is_written_only_through_the_status_subresource(
    api: client.ApiClient, namespace: str
) -> None:
    body = manifest("IntegrationRun") | {"status": {"phase": "Succeeded"}}
    stored = create(api, namespace, body)
    assert "status" not in stored

    updated = patch_status(
        api,
        namespace,
        "IntegrationRun",
        body["metadata"]["name"],
        {"phase": "Running", "attempt": 1},
    )
    assert updated["status"]["phase"] == "Running"


def test_a_revision_spec_cannot_be_changed(api: client.ApiClient, namespace: str) -> None:
    stored = create(api, namespace, manifest("IntegrationRevision"))

    message = rejection(replace, api, namespace, _changed_spec(stored, parent="invoices-0"))

    assert (
        "spec: Invalid value: spec is immutable: a changed revision is a new IntegrationRevision"
        in message
    )


def test_a_run_document_identifier_cannot_be_changed(api: client.ApiClient, namespace: str) -> None:
    stored = create(api, namespace, manifest("IntegrationRun"))

    message = rejection(replace, api, namespace, _changed_spec(stored, documentIdentifier="other"))

    assert "spec.documentIdentifier: Invalid value: documentIdentifier is immutable" in message


def test_a_run_revision_pin_cannot_be_added_later(api: client.ApiClient, namespace: str) -> None:
    stored = create(api, namespace, manifest("IntegrationRun"))

    message = rejection(replace, api, namespace, _changed_spec(stored, revision="invoices-1"))

    assert "spec.revision: Invalid value: revision is immutable" in message


def test_a_run_can_be_cancelled_but_not_resumed(api: client.ApiClient, namespace: str) -> None:
    stored = create(api, namespace, manifest("IntegrationRun"))

    cancelled = replace(api, namespace, _changed_spec(stored, cancel=True))
    message = rejection(replace, api, namespace, _changed_spec(cancelled, cancel=False))

    assert "spec.cancel: Invalid value: false: a cancelled run cannot be resumed" in message


def test_a_secret_sealed_value_can_be_replaced_but_not_its_key(
    api: client.ApiClient, namespace: str
) -> None:
    stored = create(api, namespace, manifest("IntegrationSecret"))

    resealed = replace(api, namespace, _changed_spec(stored, encryptedValue="AgBz" + "A" * 20))
    message = rejection(replace, api, namespace, _changed_spec(resealed, key="OTHER_KEY"))

    assert "spec.key: Invalid value: key is immutable" in message


def test_runs_can_be_listed_by_integration_with_a_field_selector(
    api: client.ApiClient, namespace: str
) -> None:
    create(api, namespace, manifest("IntegrationRun"))
    create(
        api,
        namespace,
        manifest(
            "IntegrationRun",
            {
                "metadata": {"name": "payroll-1"},
                "spec": {"integration": "payroll"},
            },
        ),
    )

    runs = objects(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrationruns", field_selector="spec.integration=payroll"
    )

    assert [r["metadata"]["name"] for r in cast(dict[str, Any], runs)["items"]] == ["payroll-1"]
