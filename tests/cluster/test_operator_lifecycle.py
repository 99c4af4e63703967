"""The Integration / revision lifecycle against the real API server, the operator running as in
production: `python -m docrelay.cli operator` as a subprocess, in tenant mode, with a namespaced
Role only. The CLI is run as a subprocess too, and what it prints is asserted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from tests.cluster import harness
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Operator,
    Tenant,
    condition,
    create,
    custom,
    get_integration,
    integration_manifest,
)

CODE_V1 = "def lambda_handler(event, context):\n    return {'version': 1}\n"
CODE_V2 = "def lambda_handler(event, context):\n    return {'version': 2}\n"
CANARY = f"canary-{uuid.uuid4().hex}"
CODE_BROKEN = "def lambda_handler(event, context):\n    x = 1\n    return (\n"


@pytest.fixture
def operator(tenant: Tenant) -> Operator:
    """The operator in tenant mode, with only the namespaced Role, once its sealing webhooks
    are registered (a secret applied before that would be stored unsealed)."""
    assert tenant.operator is not None
    return tenant.operator


# --- helpers ---------------------------------------------------------------------------------


def docrelay(*args: str, expect: int = 0) -> str:
    """Run the CLI as a user would (admin kubeconfig from $KUBECONFIG); return what it printed."""
    result = harness.docrelay(*args, expect=expect)
    return result.stdout + result.stderr


def wait_for(
    api: client.ApiClient,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
) -> dict[str, Any]:
    """The Integration once `predicate` holds (harness.eventually polls)."""
    return dict(harness.eventually(lambda: get_integration(api, namespace, name), predicate, what))


def assert_role_is_the_limit(tenant: Tenant, home: str, other: str) -> None:
    """The operator's own credentials (its ServiceAccount, bound to its namespaced Role): the
    API server refuses them everything in `other` and allows the same in `home`, both by an
    access review and by the calls themselves."""
    as_operator = config.new_client_from_config(config_file=str(tenant.kubeconfig))
    authz = client.AuthorizationV1Api(as_operator)
    operator_custom = client.CustomObjectsApi(as_operator)

    def allowed(namespace: str, verb: str, resource: str, subresource: str = "") -> bool:
        review = authz.create_self_subject_access_review(
            {
                "spec": {
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "group": GROUP,
                        "resource": resource,
                        "subresource": subresource,
                    }
                }
            }
        )
        return bool(review.status.allowed)

    wanted = [
        ("list", "integrations", ""),
        ("patch", "integrations", "status"),
        ("create", "integrationrevisions", ""),
    ]
    assert [allowed(home, *w) for w in wanted] == [True, True, True]  # the control
    assert [allowed(other, *w) for w in wanted] == [False, False, False]
    operator_custom.list_namespaced_custom_object(GROUP, VERSION, home, "integrations")
    for attempt in (
        lambda: operator_custom.list_namespaced_custom_object(
            GROUP, VERSION, other, "integrations"
        ),
        lambda: operator_custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, other, "integrations", "elsewhere", {"status": {"phase": "x"}}
        ),
        lambda: client.CoreV1Api(as_operator).list_namespaced_secret(other),
    ):
        with pytest.raises(client.ApiException) as refused:
            attempt()
        assert refused.value.status == 403


def code_revision_name(obj: dict[str, Any]) -> str:
    return str(obj["status"]["codeRevision"])


def revisions(api: client.ApiClient, namespace: str, integration: str) -> list[dict[str, Any]]:
    items = custom(api).list_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "integrationrevisions",
        label_selector=f"docrelay.io/integration={integration}",
    )["items"]
    return list(items)


def set_code(api: client.ApiClient, namespace: str, name: str, code: str) -> None:
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrations", name, {"spec": {"code": code}}
    )


def ready_status(obj: dict[str, Any]) -> str | None:
    ready = condition(obj, "Ready")
    return ready["status"] if ready else None


# --- tests -----------------------------------------------------------------------------------


def test_create_makes_a_revision_and_deploys_it(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    create(api, namespace, "integrations", integration_manifest("orders", CODE_V1))
    obj = wait_for(api, namespace, "orders", lambda o: ready_status(o) == "True", "Ready=True")

    status = obj["status"]
    deployed = status["deployedRevision"]
    assert deployed.startswith("orders-")
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert {c["type"] for c in status["conditions"]} == {
        "Ready",
        "CodeReady",
        "SecretsReady",
        "AccountsReady",
    }
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    assert (
        condition(obj, "CodeReady")["message"] == f"revision {deployed} from spec.code is deployed"
    )
    assert status["history"][0]["reason"] == "CodeApplied"

    # The revision: owned by the Integration, labelled, valid; its code in an immutable ConfigMap.
    (revision,) = revisions(api, namespace, "orders")
    assert revision["metadata"]["name"] == deployed
    assert revision["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert revision["status"]["validation"]["valid"] is True
    config_map = client.CoreV1Api(api).read_namespaced_config_map(f"{deployed}-code", namespace)
    assert config_map.immutable is True
    assert config_map.data == {"handler.py": CODE_V1}
    assert config_map.metadata.owner_references[0].name == deployed

    # What a user sees with the CLI.
    table = docrelay("revisions", "orders", "-n", namespace)
    header, row = table.strip().splitlines()
    assert header.split() == ["NAME", "SOURCE", "CREATED", "VALID", "TESTED", "VERDICT", "DEPLOYED"]
    assert row.split()[0] == deployed and row.split()[1] == "User" and row.split()[-1] == "*"
    assert docrelay("code", "orders", "-n", namespace) == CODE_V1
    as_json = docrelay("revisions", "orders", "-n", namespace, "-o", "json")
    assert f'"name": "{deployed}"' in as_json

    # The operator never wrote spec: generation is still 1.
    assert get_integration(api, namespace, "orders")["metadata"]["generation"] == 1


def test_change_code_deploys_new_revision_then_deploy_and_revert(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    create(api, namespace, "integrations", integration_manifest("orders", CODE_V1))
    first = wait_for(api, namespace, "orders", lambda o: ready_status(o) == "True", "first deploy")
    rev1 = first["status"]["deployedRevision"]

    set_code(api, namespace, "orders", CODE_V2)
    second = wait_for(
        api,
        namespace,
        "orders",
        lambda o: (o.get("status") or {}).get("deployedRevision") not in (None, rev1),
        "the new code's revision to be deployed",
    )
    rev2 = second["status"]["deployedRevision"]
    assert len(revisions(api, namespace, "orders")) == 2
    assert docrelay("code", "orders", "-n", namespace) == CODE_V2
    assert docrelay("code", "orders", "-n", namespace, "--revision", rev1) == CODE_V1

    # Deploy the older revision by hand: spec untouched, audit trail in history and an Event.
    out = docrelay("deploy", rev1, "-n", namespace)
    assert out.strip() == f"integration orders: deployed revision {rev1} (was {rev2})"
    obj = get_integration(api, namespace, "orders")
    assert obj["metadata"]["generation"] == 2
    assert obj["spec"]["code"] == CODE_V2
    record = obj["status"]["history"][-1]
    assert record["revision"] == rev1
    assert record["previousRevision"] == rev2
    assert record["reason"] == "Deployed"
    assert record["deployedBy"] not in ("", "unknown", "docrelay-operator")
    code_ready = condition(obj, "CodeReady")
    assert code_ready["status"] == "True" and code_ready["reason"] == "ManualDeploy"
    assert f"spec.code is revision {rev2}" in code_ready["message"]
    events = (
        client.CoreV1Api(api)
        .list_namespaced_event(
            namespace, field_selector="involvedObject.name=orders,reason=Deployed"
        )
        .items
    )
    assert [e.message for e in events] == [
        f"revision {rev1} deployed by {record['deployedBy']}, replacing {rev2}"
    ]
    table = docrelay("revisions", "orders", "-n", namespace)
    marked = [line.split()[0] for line in table.splitlines() if line.rstrip().endswith("*")]
    assert marked == [rev1]

    # Revert goes back to the previously deployed revision.
    out = docrelay("revert", "orders", "-n", namespace)
    assert out.strip() == f"integration orders: reverted to revision {rev2} (was {rev1})"
    obj = get_integration(api, namespace, "orders")
    assert obj["status"]["deployedRevision"] == rev2
    assert obj["status"]["history"][-1]["reason"] == "Reverted"

    # Pin the old one again, then change spec.code: inline code wins over the manual deploy.
    docrelay("deploy", "orders", "--revision", rev1, "-n", namespace)
    code_v3 = CODE_V2.replace("2", "3")
    set_code(api, namespace, "orders", code_v3)
    obj = wait_for(
        api,
        namespace,
        "orders",
        lambda o: o["status"]["deployedRevision"] not in (rev1, rev2),
        "spec.code to win over the manual deploy",
    )
    assert obj["status"]["history"][-1]["reason"] == "CodeApplied"
    assert obj["status"]["history"][-1]["previousRevision"] == rev1
    assert condition(obj, "CodeReady")["reason"] == "Deployed"


def test_cli_errors_name_what_is_wrong(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    out = docrelay("revisions", "nosuch", "-n", namespace, expect=1)
    assert out.strip() == f"error: integration nosuch not found in namespace {namespace}"

    create(api, namespace, "integrations", integration_manifest("orders", CODE_V1))
    wait_for(api, namespace, "orders", lambda o: ready_status(o) == "True", "Ready=True")
    out = docrelay("deploy", "orders", "--revision", "orders-0000000000", "-n", namespace, expect=1)
    assert out.startswith(
        f"error: revision orders-0000000000 of integration orders not found in namespace "
        f"{namespace}"
    )
    out = docrelay("revert", "orders", "-n", namespace, expect=1)
    assert (
        out.strip() == "error: integration orders has no previously deployed revision to revert to"
    )
    out = docrelay("deploy", "orders", "x", "--namespace", namespace, "-o", "xml", expect=2)
    assert "invalid choice: 'xml'" in out


def test_syntax_error_reports_line_and_keeps_deployed_revision(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    create(api, namespace, "integrations", integration_manifest("orders", CODE_V1))
    good = wait_for(api, namespace, "orders", lambda o: ready_status(o) == "True", "Ready=True")
    rev1 = good["status"]["deployedRevision"]

    set_code(api, namespace, "orders", CODE_BROKEN)
    obj = wait_for(
        api,
        namespace,
        "orders",
        lambda o: (condition(o, "CodeReady") or {}).get("status") == "False",
        "CodeReady=False",
    )
    code_ready = condition(obj, "CodeReady")
    broken = obj["status"]["codeRevision"]
    assert code_ready["reason"] == "SyntaxError"
    assert code_ready["observedGeneration"] == 2
    assert code_ready["message"] == (
        f"spec.code (revision {broken}) line 3, column 12: '(' was never closed; "
        f"revision {rev1} stays deployed"
    )
    assert condition(obj, "Ready")["status"] == "False"
    assert condition(obj, "Ready")["reason"] == "SyntaxError"
    assert obj["status"]["deployedRevision"] == rev1

    # The invalid revision exists, says why, and cannot be deployed.
    revision = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrationrevisions", broken
    )
    assert revision["status"]["validation"]["line"] == 3
    assert revision["status"]["conditions"][0]["reason"] == "SyntaxError"
    out = docrelay("deploy", broken, "-n", namespace, expect=1)
    assert out.strip() == (
        f"error: revision {broken} is not valid: line 3, column 12: '(' was never closed"
    )


def test_missing_secrets_and_accounts_by_name_then_cleared(
    api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    create(
        api,
        namespace,
        "integrations",
        integration_manifest(
            "orders",
            CODE_V1,
            secrets=["API_KEY", "LEDGER_CODE"],
            connectedAccounts=["xero-finance"],
        ),
    )
    obj = wait_for(
        api, namespace, "orders", lambda o: bool(condition(o, "SecretsReady")), "conditions"
    )
    secrets = condition(obj, "SecretsReady")
    accounts = condition(obj, "AccountsReady")
    assert (secrets["status"], secrets["reason"]) == ("False", "SecretsMissing")
    assert "with key API_KEY, LEDGER_CODE;" in secrets["message"]
    assert (accounts["status"], accounts["reason"]) == ("False", "AccountsMissing")
    assert f"not found in namespace {namespace}: xero-finance;" in accounts["message"]
    assert condition(obj, "Ready")["status"] == "False"

    # A secret for another integration does not count; one for this integration does.
    for name, integration, key in (
        ("other-api-key", "other", "API_KEY"),
        ("orders-api-key", "orders", "API_KEY"),
    ):
        create(
            api,
            namespace,
            "integrationsecrets",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "IntegrationSecret",
                "metadata": {"name": name},
                # Plaintext: the operator's webhook seals it before it is stored.
                "spec": {"integration": integration, "key": key, "value": CANARY},
            },
        )
    obj = wait_for(
        api,
        namespace,
        "orders",
        lambda o: "API_KEY" not in condition(o, "SecretsReady")["message"].split(";")[0],
        "API_KEY to leave the missing list",
    )
    assert "with key LEDGER_CODE;" in condition(obj, "SecretsReady")["message"]

    create(
        api,
        namespace,
        "integrationsecrets",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "IntegrationSecret",
            "metadata": {"name": "orders-ledger-code"},
            "spec": {"integration": "orders", "key": "LEDGER_CODE", "value": CANARY},
        },
    )
    create(
        api,
        namespace,
        "connectedaccounts",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ConnectedAccount",
            "metadata": {"name": "xero-finance"},
            "spec": {
                "app": "xero_accounting_api",
                "accountId": "apn_kqAb12Cd",
                "externalUserId": "finance-team",
            },
        },
    )
    obj = wait_for(api, namespace, "orders", lambda o: ready_status(o) == "True", "Ready=True")
    assert condition(obj, "SecretsReady")["reason"] == "SecretsPresent"
    assert condition(obj, "AccountsReady")["reason"] == "AccountsPresent"
    # The secret's value appears nowhere in the Integration.
    assert CANARY not in yaml.safe_dump(obj)


def test_tenant_operator_never_touches_another_namespace(
    api: client.ApiClient, namespace: str, tenant: Tenant, operator: Operator
) -> None:
    other = f"{namespace[:50]}-other-{uuid.uuid4().hex[:4]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": other}})
    try:
        create(api, other, "integrations", integration_manifest("elsewhere", CODE_V1))
        create(api, namespace, "integrations", integration_manifest("here", CODE_V1))
        # Once the operator has handled its own namespace, it has seen its whole world.
        wait_for(api, namespace, "here", lambda o: ready_status(o) == "True", "Ready=True")
        time.sleep(2)
        elsewhere = get_integration(api, other, "elsewhere")
        assert "status" not in elsewhere
        assert not any(
            k.startswith("docrelay.io/") for k in elsewhere["metadata"].get("annotations", {})
        )
        assert revisions(api, other, "elsewhere") == []
        assert "elsewhere" not in operator.output()
        assert_role_is_the_limit(tenant, namespace, other)
    finally:
        core.delete_namespace(other)
