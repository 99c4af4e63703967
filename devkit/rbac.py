"""The permissions docrelay's processes run with outside a Helm install (the demo, benchmarks):
one ServiceAccount per process, bound to exactly the rules the docs list, and a kubeconfig
that authenticates as it.

The rule lists follow docs/operator.md (tenant mode, runs), docs/secrets.md (sealing, the
keys namespace) and docs/broker.md (the gateway and its broker); tests/cluster/harness.py
grants the same, and tests/unit/test_chart.py holds the chart's Roles to them.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from docrelay.builders.sealing import KEYS_SECRET, default_keys_namespace

GROUP = "docrelay.io"
Rules = list[dict[str, Any]]

# What runs need (docs/runs.md; docs/operator.md, permissions).
RUN_RULES: Rules = [
    {
        "apiGroups": [GROUP],
        "resources": ["integrationruns"],
        # create: the agent's test runs of the revisions it writes (docs/agent.md)
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {"apiGroups": [GROUP], "resources": ["integrationruns/status"], "verbs": ["get", "patch"]},
    {
        "apiGroups": ["batch"],
        "resources": ["jobs"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "update"]},
    {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create"]},
]

# The operator in tenant mode: its namespace only, nothing cluster-wide.
TENANT_RULES: Rules = [
    {
        "apiGroups": [GROUP],
        "resources": ["integrations"],
        "verbs": ["get", "list", "watch", "patch"],
    },
    {"apiGroups": [GROUP], "resources": ["integrations/status"], "verbs": ["get", "patch"]},
    {
        "apiGroups": [GROUP],
        "resources": ["integrationrevisions"],
        # watch: the agent reads them from a watch-fed cache (docs/agent.md, "The worker")
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["integrationrevisions/status"],
        "verbs": ["get", "patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["integrationsecrets", "connectedaccounts"],
        "verbs": ["get", "list", "watch"],
    },
    # The agent's conversations (docs/agent.md): read the user's turns, write the thread in
    # status; retention deletes idle threads. Never spec: the user's turns are the user's.
    {
        "apiGroups": [GROUP],
        "resources": ["integrationconversations"],
        "verbs": ["get", "list", "watch", "delete"],
    },
    {
        "apiGroups": [GROUP],
        "resources": ["integrationconversations/status"],
        "verbs": ["get", "patch"],
    },
    # Superseded IntegrationSecrets are pruned after a grace period (docs/secrets.md).
    {"apiGroups": [GROUP], "resources": ["integrationsecrets"], "verbs": ["delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Connected accounts (docs/pipedream.md): their health in status.
    {"apiGroups": [GROUP], "resources": ["connectedaccounts/status"], "verbs": ["get", "patch"]},
    # By name: the Pipedream project's credentials the account checks use, the platform
    # credentials the agent reads schemas and sample documents with (docs/agent.md).
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["docrelay-pipedream", "docrelay-platform"],
        "verbs": ["get"],
    },
    # An Integration's spec.egress.cidrs as a NetworkPolicy for its run pods (docs/egress.md)
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["get", "create", "patch", "delete"],
    },
    *RUN_RULES,
]

# High availability (docs/operator.md): the replicas elect the active one over the Lease
# docrelay-operator in the release namespace; create (which cannot be limited by name) once.
LEASE_RULES: Rules = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["docrelay-operator"],
        "verbs": ["get", "update"],
    },
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]

# What sealing adds to the operator's Role in its own (the tenant) namespace (docs/secrets.md):
# the certificate ConfigMap, each IntegrationSecret's status, and a look (by name) at the
# place earlier versions kept the key Secret, so an upgrade stops instead of making new keys.
SEALING_RULES: Rules = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
    {"apiGroups": [GROUP], "resources": ["integrationsecrets/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KEYS_SECRET], "verbs": ["get"]},
]
# The agent's model API key (DOCRELAY_AGENT_API_KEY_SECRET=docrelay-agent where the cluster
# tests configure the agent), by name, as the chart grants `agent.apiKeySecret.name`.
AGENT_KEY_RULES: Rules = [
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["docrelay-agent"],
        "verbs": ["get"],
    }
]
# The operator in the keys namespace (`<namespace>-docrelay-keys`), where no tenant user has
# a binding: the key Secret, by name, read at start and renewed in place; create (which
# cannot be limited by name) the first time.
OPERATOR_KEYS_RULES: Rules = [
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [KEYS_SECRET],
        "verbs": ["get", "update"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
]
# The gateway's broker in the keys namespace: the key ring each run's one-time key comes from.
GATEWAY_KEYS_RULES: Rules = [
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [KEYS_SECRET], "verbs": ["get"]}
]
# The one cluster-scoped grant of the operator: registering its admission webhooks.
WEBHOOK_RULES: Rules = [
    {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        # create when missing, then JSON patches (a new CA bundle at each start); no update
        "verbs": ["get", "create", "patch"],
    }
]

# The gateway (intake + run broker) in a tenant namespace (docs/gateway.md, docs/broker.md).
GATEWAY_RULES: Rules = [
    {"apiGroups": [GROUP], "resources": ["integrations"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["integrationruns"], "verbs": ["get", "create"]},
    # create, patch: Pipedream's connection webhook (docs/pipedream.md)
    {"apiGroups": [GROUP], "resources": ["connectedaccounts"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    # patch: the egress proxy's record of each run attempt, `<job>-egress` (docs/egress.md)
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
    # the egress proxy's Warning Events on a run for refused destinations (docs/egress.md)
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# The broker's one cluster-scoped grant: reviewing run pods' tokens.
TOKEN_REVIEW_RULES: Rules = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
]


def grant(
    api: client.ApiClient, ns: str, account: str, rules: Rules, role: str | None = None
) -> None:
    """A ServiceAccount (created if missing) bound to a Role (named as the account unless
    given) with these rules."""
    role = role or account
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    try:
        core.create_namespaced_service_account(ns, {"metadata": {"name": account}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    rbac.create_namespaced_role(ns, {"metadata": {"name": role}, "rules": rules})
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    )


def grant_cluster(api: client.ApiClient, ns: str, account: str, name: str, rules: Rules) -> None:
    """A ClusterRole `name` with these rules, bound to the ServiceAccount."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        }
    )


def keys_namespace(ns: str) -> str:
    """The keys namespace the operator of `ns` uses by default (docs/secrets.md)."""
    return default_keys_namespace(ns)


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def grant_keys(api: client.ApiClient, ns: str, account: str, rules: Rules, role: str) -> str:
    """The keys namespace of the install in `ns` (created if missing, as the chart does) and
    a Role `role` there with these rules, bound to the ServiceAccount `account` of `ns`.
    Nothing else is bound there: tenant users have no access. Returns the namespace."""
    where = keys_namespace(ns)
    ensure_namespace(api, where)
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(where, {"metadata": {"name": role}, "rules": rules})
    rbac.create_namespaced_role_binding(
        where,
        {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    )
    return where


def delete_keys_namespace(api: client.ApiClient, ns: str) -> None:
    """Remove the keys namespace of the install in `ns` (tests and the demo clean up)."""
    try:
        client.CoreV1Api(api).delete_namespace(keys_namespace(ns))
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def token_kubeconfig(
    api: client.ApiClient,
    ns: str,
    account: str,
    path: Path,
    context_namespace: str | None = None,
    seconds: int = 3600,
) -> Path:
    """A kubeconfig (mode 0600) that authenticates as the ServiceAccount with a bound token."""
    request = {"spec": {"expirationSeconds": seconds}}
    core = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(account, ns, request).status.token
    ca = Path(api.configuration.ssl_ca_cert).read_bytes()
    context: dict[str, str] = {"cluster": "local", "user": account}
    if context_namespace:
        context["namespace"] = context_namespace
    path.touch(mode=0o600)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "local",
                        "cluster": {
                            "server": api.configuration.host,
                            "certificate-authority-data": base64.b64encode(ca).decode(),
                        },
                    }
                ],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": account, "context": context}],
                "current-context": account,
            }
        )
    )
    return path


def grant_operator_keys(api: client.ApiClient, ns: str) -> str:
    """The operator's sealing grants: SEALING_RULES in `ns`, OPERATOR_KEYS_RULES in the keys
    namespace (returned); and the agent's API key Secret by name (AGENT_KEY_RULES)."""
    grant(api, ns, "docrelay-operator", SEALING_RULES, role="docrelay-sealing")
    grant(api, ns, "docrelay-operator", AGENT_KEY_RULES, role="docrelay-agent-key")
    return grant_keys(api, ns, "docrelay-operator", OPERATOR_KEYS_RULES, "docrelay-operator-keys")


def operator_kubeconfig(api: client.ApiClient, ns: str, path: Path) -> Path:
    """The tenant-mode operator's ServiceAccount `docrelay-operator`: its Role, the sealing
    Roles (here and in the keys namespace) and the webhook ClusterRole
    (`docrelay-webhooks-<ns>`)."""
    grant(api, ns, "docrelay-operator", TENANT_RULES)
    grant(api, ns, "docrelay-operator", LEASE_RULES, role="docrelay-operator-lease")
    grant_operator_keys(api, ns)
    grant_cluster(api, ns, "docrelay-operator", f"docrelay-webhooks-{ns}", WEBHOOK_RULES)
    return token_kubeconfig(api, ns, "docrelay-operator", path, context_namespace=ns)


def gateway_kubeconfig(api: client.ApiClient, ns: str, path: Path) -> Path:
    """The gateway's ServiceAccount `docrelay-gateway`: its Role, the key Secret's Role in the
    keys namespace and the TokenReview ClusterRole (`docrelay-broker-<ns>`)."""
    grant(api, ns, "docrelay-gateway", GATEWAY_RULES)
    grant_keys(api, ns, "docrelay-gateway", GATEWAY_KEYS_RULES, "docrelay-gateway-keys")
    grant_cluster(api, ns, "docrelay-gateway", f"docrelay-broker-{ns}", TOKEN_REVIEW_RULES)
    return token_kubeconfig(api, ns, "docrelay-gateway", path, context_namespace=ns)
