"""The Helm chart on the real control plane: two tenants installed side by side, and the
operator and gateway processes running with exactly the credentials the chart gives them.

`helm install` sends every object to the API server (server-side apply), so each Role,
binding, webhook configuration, NetworkPolicy, PodDisruptionBudget and Deployment is
validated by the real thing; the CRDs are already present (the session installed them), and
tenant A adopts them (`--take-ownership`) while tenant B leaves them alone
(`crds.install=false`). The chart's Deployments cannot run here (the local node runs no
images; a node selector keeps their pods Pending): instead `docrelay operator` and
`docrelay gateway` run as local processes, each authenticated with a TokenRequest token of
the chart's own ServiceAccount and configured with the environment the chart renders.

What that proves, per tenant: a signed event through the gateway creates a run; the operator
deploys the code, starts the Job; the run pod (ServiceAccount docrelay-run) gets its key and
its document from the broker (TokenReview, pod -> Job -> run, key Secret, key record,
platform Secret); the run succeeds. Tenant A's webhook is called by URL (plaintext sealed
by the chart's webhook configuration); tenant B's operator runs as in a cluster (the
webhook Service), so it patches only the CA bundle, and `helm upgrade` afterwards keeps it.
And not more: A's operator and gateway can read nothing of B's; neither reads a Secret of
its own namespace that is not its own; the run ServiceAccount can do nothing at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config

from devkit.standins.platform import PlatformState
from docrelay.gateway.signatures import sign_resthook
from tests.cluster.harness import (
    GROUP,
    REPO_ROOT,
    VERSION,
    Gateway,
    Operator,
    checked,
    custom,
    docrelay,
    eventually,
    free_port,
    kubectl,
    make_integration,
    platform_secret,
    platform_standin,
    set_secret,
    token_kubeconfig,
    wait_finished,
)

CHART = REPO_ROOT / "charts" / "docrelay"
WORKSPACE, DOCTYPE = "mEFayXdO", "tVpGRBWd"  # examples/documents
HARBOURSIDE, NORTHWIND = "XqLmNoPa", "VbTrEwQz"  # two invoices of that workspace
INVOICE = {HARBOURSIDE: "INV-2025-0418", NORTHWIND: "NW-7731"}
RUN_ACCOUNT = "docrelay-run"
# The chart's pods must not start here (no images): a label no node has keeps them Pending.
UNSCHEDULABLE = "docrelay.io/test-no-such-node"
UNSCHEDULABLE_KEY = UNSCHEDULABLE.replace(".", "\\.")  # --set needs the dots escaped

# The run's code: its secret (compared by digest, never printed), its document through the
# broker, and one try at the API server with the only token the pod has: the egress proxy
# refuses it (an address its Integration does not list; docs/egress.md).
CODE = """
import hashlib, os, ssl, urllib.error, urllib.request
from docrelay.sdk import get_document

def lambda_handler(event, context):
    document = get_document(event["document_identifier"])
    number = document["data"]["invoiceNumber"]
    key_ok = hashlib.sha256(os.environ["API_KEY"].encode()).hexdigest() == KEY_SHA
    path = os.environ.get("DOCRELAY_BROKER_TOKEN_PATH", "/var/run/secrets/docrelay/broker/token")
    token = open(path).read().strip()
    url = "https://%s:%s/api/v1/namespaces/%s/secrets" % (
        os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"], NAMESPACE)
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10)
        api = 200
    except urllib.error.HTTPError as exc:
        api = exc.code
    except OSError as exc:
        api = "refused" if "Egress Denied" in str(exc) else repr(exc)
    return {"summary": "%s key=%s api=%s" % (number, key_ok, api)}
"""


def helm_binary() -> str:
    from devkit import toolchain

    return str(toolchain.ensure("helm"))


def helm(*args: str, expect: int | None = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=180, check=False
    )
    if expect is not None:
        assert result.returncode == expect, (
            f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}"
        )
    return result


@dataclass
class ChartTenant:
    """One release of the chart, and its operator and gateway as local processes."""

    release: str
    namespace: str
    key: bytes  # the platform's signing key for this tenant's events
    webhook_by_service: bool  # True: as in a cluster (the operator patches only the CA)
    operator: Operator | None = None
    gateway: Gateway | None = None
    proxy_port: int = 0  # the gateway's egress proxy, on loopback
    kubeconfigs: dict[str, Path] = field(default_factory=dict)

    @property
    def fullname(self) -> str:
        return f"{self.release}-docrelay"

    @property
    def webhook_name(self) -> str:
        return f"docrelay-secrets.{self.namespace}"

    @property
    def keys_namespace(self) -> str:
        """The chart's default keys namespace: the private sealing keys, out of tenant reach."""
        return f"{self.namespace}-docrelay-keys"

    def account(self, component: str) -> str:
        return f"{self.fullname}-{component}"

    def client_for(self, component: str) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfigs[component]))

    def stop(self) -> None:
        for process in (self.operator, self.gateway):
            if process is not None:
                process.stop()
        self.operator = self.gateway = None

    def logs(self) -> str:
        parts = []
        if self.operator is not None:
            parts.append(f"--- operator {self.namespace} ---\n{self.operator.output()[-6000:]}")
        if self.gateway is not None:
            parts.append(f"--- gateway {self.namespace} ---\n{self.gateway.log()}")
        return "\n".join(parts)


def rendered_env(api: client.ApiClient, tenant: ChartTenant, component: str) -> dict[str, str]:
    """The environment the chart gives a component's container (plain values only)."""
    deploy = client.AppsV1Api(api).read_namespaced_deployment(
        tenant.account(component), tenant.namespace
    )
    container = deploy.spec.template.spec.containers[0]
    return {e.name: e.value for e in container.env or [] if e.value is not None}


def rendered_args(api: client.ApiClient, tenant: ChartTenant, component: str) -> list[str]:
    deploy = client.AppsV1Api(api).read_namespaced_deployment(
        tenant.account(component), tenant.namespace
    )
    args = list(deploy.spec.template.spec.containers[0].args)
    assert args[0] == component
    return args[1:]


def install(tenant: ChartTenant, kubeconfig: str, *extra: str) -> None:
    helm(
        "install",
        tenant.release,
        str(CHART),
        "--kubeconfig",
        kubeconfig,
        "-n",
        tenant.namespace,
        "--create-namespace",
        "--set",
        f"operator.nodeSelector.{UNSCHEDULABLE_KEY}=none",
        "--set",
        f"gateway.nodeSelector.{UNSCHEDULABLE_KEY}=none",
        *extra,
    )


def start_gateway(api: client.ApiClient, tenant: ChartTenant, tmp: Path) -> None:
    env = rendered_env(api, tenant, "gateway")
    env.update(
        {
            "KUBECONFIG": str(tenant.kubeconfigs["gateway"]),
            "DOCRELAY_GATEWAY_HOST": "127.0.0.1",  # the chart's 0.0.0.0 is for a pod
            "DOCRELAY_GATEWAY_KEYS_CACHE_SECONDS": "1",
        }
    )
    env.pop("DOCRELAY_GATEWAY_PORT")  # Gateway passes a free --port
    assert env["DOCRELAY_GATEWAY_PROXY_PORT"] == "3128"
    tenant.proxy_port = free_port()  # two tenants on one loopback
    env["DOCRELAY_GATEWAY_PROXY_PORT"] = str(tenant.proxy_port)
    tenant.gateway = Gateway(tmp, rendered_args(api, tenant, "gateway"), env=env)
    tenant.gateway.wait_ready()


def start_operator(api: client.ApiClient, tenant: ChartTenant, tmp: Path) -> None:
    assert tenant.gateway is not None
    env = rendered_env(api, tenant, "operator")
    # In a cluster, runs reach the broker and the egress proxy through the gateway Service.
    service = f"http://{tenant.fullname}-gateway.{tenant.namespace}.svc"
    assert env["DOCRELAY_BROKER_URL"] == f"{service}:80"
    assert env["DOCRELAY_EGRESS_PROXY_URL"] == f"{service}:3128"
    port = free_port()
    env.update(
        {
            "DOCRELAY_WEBHOOK_HOST": "127.0.0.1",
            "DOCRELAY_WEBHOOK_PORT": str(port),
            "DOCRELAY_METRICS_HOST": "127.0.0.1",
            # Service names do not resolve here: the pods reach the broker and the egress
            # proxy on loopback.
            "DOCRELAY_BROKER_URL": tenant.gateway.url,
            "DOCRELAY_EGRESS_PROXY_URL": f"http://127.0.0.1:{tenant.proxy_port}",
        }
    )
    if not tenant.webhook_by_service:
        # Services do not route here: the API server calls this operator by URL instead.
        env.pop("DOCRELAY_WEBHOOK_SERVICE")
    tenant.operator = Operator(
        tenant.kubeconfigs["operator"],
        tmp / f"operator-{tenant.namespace}.log",
        rendered_args(api, tenant, "operator"),
        env,
    )
    tenant.operator.wait_healthy()
    admission = client.AdmissionregistrationV1Api(api)
    for read in (
        admission.read_mutating_webhook_configuration,
        admission.read_validating_webhook_configuration,
    ):

        def registered(o: Any) -> bool:
            config = o.webhooks[0].client_config
            if tenant.webhook_by_service:
                return bool(config.ca_bundle)
            return bool(config.ca_bundle) and f":{port}/" in (config.url or "")

        eventually(
            lambda read=read: read(tenant.webhook_name),
            registered,
            f"the operator of {tenant.namespace} to write its certificate into the webhooks",
        )


def signed_event(tenant: ChartTenant, namespace: str, document: str) -> httpx.Response:
    assert tenant.gateway is not None
    body = json.dumps(
        {
            "event": "document.parse.completed",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": {
                "identifier": document,
                "workspace": {"identifier": WORKSPACE, "name": "Invoices"},
                "documentType": {"identifier": DOCTYPE},
                "fileName": "invoice.pdf",
            },
        }
    ).encode()
    headers = {
        "content-type": "application/json",
        "X-Hook-Signature": sign_resthook(body, tenant.key, int(time.time())),
    }
    return httpx.post(
        f"{tenant.gateway.url}/v1/events/{namespace}", content=body, headers=headers, timeout=30
    )


def key_digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@pytest.fixture(scope="module")
def platform() -> Iterator[PlatformState]:
    with platform_standin() as state:
        yield state


@pytest.fixture(scope="module")
def tenants(
    api: client.ApiClient,
    cluster: Any,
    platform: PlatformState,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ChartTenant, ChartTenant]]:
    tmp = tmp_path_factory.mktemp("chart")
    suffix = uuid.uuid4().hex[:5]
    a = ChartTenant("alpha", f"chart-a-{suffix}", b"tenant-a-signing-key", False)
    b = ChartTenant("beta", f"chart-b-{suffix}", b"tenant-b-signing-key", True)
    kubeconfig = str(cluster.kubeconfig)
    core = client.CoreV1Api(api)
    try:
        # The CRDs exist already: A adopts them, B (every further tenant) leaves them.
        install(a, kubeconfig, "--take-ownership")
        install(b, kubeconfig, "--set", "crds.install=false")
        for tenant in (a, b):
            ns = tenant.namespace
            platform_secret(api, ns, platform)
            core.create_namespaced_secret(
                ns,
                {
                    "metadata": {"name": "docrelay-gateway-signing"},
                    "data": {"resthook-1": base64.b64encode(tenant.key).decode()},
                },
            )
            for component in ("operator", "gateway"):
                tenant.kubeconfigs[component] = token_kubeconfig(
                    api,
                    ns,
                    tenant.account(component),
                    tmp / f"{ns}-{component}.kubeconfig",
                    context_namespace=ns,
                )
            start_gateway(api, tenant, tmp)
            start_operator(api, tenant, tmp)
        yield a, b
    finally:
        for tenant in (a, b):
            print(tenant.logs())
            tenant.stop()
            helm(
                "uninstall",
                tenant.release,
                "--kubeconfig",
                kubeconfig,
                "-n",
                tenant.namespace,
                expect=None,
            )
            for namespace in (tenant.namespace, tenant.keys_namespace):  # the keys: kept
                try:
                    core.delete_namespace(namespace, propagation_policy="Background")
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise


# --- the install ---------------------------------------------------------------------------


def test_every_object_of_both_releases_is_in_the_cluster(
    api: client.ApiClient, cluster: Any, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    """What `helm template` renders is what the API server accepted and stored."""
    for tenant in tenants:
        manifest = helm(
            "get",
            "manifest",
            tenant.release,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            tenant.namespace,
        ).stdout
        objects = [o for o in yaml.safe_load_all(manifest) if o]
        kinds = {o["kind"] for o in objects}
        assert {
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
            "NetworkPolicy",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        } <= kinds
        assert ("CustomResourceDefinition" in kinds) == (tenant.release == "alpha")
        # Every object of the release reads back from the API server.
        stored = kubectl("get", "-f", "-", "-o", "name", stdin=manifest).stdout.split()
        assert len(stored) == len(objects)
        # The keys namespace is the release's, and the operator keeps the key Secret there,
        # not in the tenant namespace (docs/secrets.md, "Who can read what").
        assert f"namespace/{tenant.keys_namespace}" in stored
        keys = eventually(
            lambda t=tenant: client.CoreV1Api(api).read_namespaced_secret(
                "docrelay-sealing-keys", t.keys_namespace
            ),
            lambda secret: secret is not None,
            f"the key Secret of {tenant.namespace}",
        )
        assert any(entry.startswith("sealing-key-") for entry in keys.data)
        with pytest.raises(client.ApiException) as absent:
            client.CoreV1Api(api).read_namespaced_secret("docrelay-sealing-keys", tenant.namespace)
        assert absent.value.status == 404
    # The run ServiceAccount: no token mounted, bound to nothing.
    for tenant in tenants:
        account = client.CoreV1Api(api).read_namespaced_service_account(
            RUN_ACCOUNT, tenant.namespace
        )
        assert account.automount_service_account_token is False


def test_each_tenant_runs_an_event_end_to_end(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    """Signed event -> gateway (chart RBAC) -> run -> operator (chart RBAC) -> Job -> run pod
    -> broker (chart RBAC: TokenReview, pod, Job, run, key Secret, key record, platform)."""
    for tenant, document in zip(tenants, (HARBOURSIDE, NORTHWIND), strict=True):
        ns = tenant.namespace
        value = f"key-{uuid.uuid4().hex}"
        if tenant.webhook_by_service:
            # As a user would on their machine: sealed with the published certificate, applied
            # without the webhook (which the API server could not reach here).
            sealed = docrelay("seal", "API_KEY", "--integration", "export", "-n", ns, stdin=value)
            kubectl("apply", "-n", ns, "-f", "-", stdin=sealed.stdout)
            name = yaml.safe_load(sealed.stdout)["metadata"]["name"]
            assert checked(api, ns, name)["status"]["state"] == "Active"
        else:
            set_secret(api, ns, "export", "API_KEY", value)  # sealed by the chart's webhook
        code = f"KEY_SHA = {key_digest(value)!r}\nNAMESPACE = {ns!r}\n{CODE}"
        make_integration(
            api, ns, "export", code, secrets=["API_KEY"], workspace=WORKSPACE, documentType=DOCTYPE
        )
        assert tenant.gateway is not None
        tenant.gateway.wait_ready(integrations=1)
        answer = signed_event(tenant, ns, document)
        assert answer.status_code == 202, answer.text
        runs = answer.json()["runs"]
        assert [r["integration"] for r in runs] == ["export"]
        status = wait_finished(api, ns, runs[0]["name"], seconds=180)
        assert status["phase"] == "Succeeded", (status, tenant.logs())
        # Its own document, its secret, and the API server refusing the pod's only token
        # (audience docrelay-broker): 401.
        assert status["resultSummary"] == f"{INVOICE[document]} key=True api=refused"


def test_a_tenants_gateway_takes_no_events_for_another(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    a, b = tenants
    before = custom(api).list_namespaced_custom_object(
        GROUP, VERSION, b.namespace, "integrationruns"
    )
    answer = signed_event(a, b.namespace, HARBOURSIDE)
    assert answer.status_code in (403, 404), answer.text
    after = custom(api).list_namespaced_custom_object(
        GROUP, VERSION, b.namespace, "integrationruns"
    )
    assert len(after["items"]) == len(before["items"])


# --- and not more ----------------------------------------------------------------------------


def allowed(
    api: client.ApiClient,
    verb: str,
    resource: str,
    namespace: str | None,
    group: str = "",
    name: str | None = None,
    subresource: str | None = None,
) -> bool:
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "group": group,
                    "resource": resource,
                    "verb": verb,
                    **({"namespace": namespace} if namespace else {}),
                    **({"name": name} if name else {}),
                    **({"subresource": subresource} if subresource else {}),
                }
            }
        }
    )
    return bool(review.status.allowed)


# (verb, group, resource, name, subresource): what no component of tenant A may do in B.
FOREIGN = [
    ("get", "", "secrets", "docrelay-sealing-keys", None),
    ("get", "", "secrets", "docrelay-platform", None),
    ("get", "", "secrets", "docrelay-gateway-signing", None),
    ("get", "", "secrets", "docrelay-pipedream", None),
    ("list", "", "secrets", None, None),
    ("get", "", "configmaps", "docrelay-sealing-cert", None),
    ("create", "", "configmaps", None, None),
    ("list", GROUP, "integrations", None, None),
    ("get", GROUP, "integrations", "export", None),
    ("list", GROUP, "integrationsecrets", None, None),
    ("get", GROUP, "connectedaccounts", None, None),
    ("patch", GROUP, "connectedaccounts", None, "status"),
    ("create", GROUP, "integrationruns", None, None),
    ("get", GROUP, "integrationruns", None, None),
    ("patch", GROUP, "integrations", None, "status"),
    ("get", "", "pods", None, None),
    ("get", "", "pods", None, "log"),
    ("create", "batch", "jobs", None, None),
    ("get", "batch", "jobs", None, None),
    ("create", "", "events", None, None),
]


def foreign_calls(own: client.ApiClient, namespace: str) -> list[Callable[[], Any]]:
    core = client.CoreV1Api(own)
    return [
        lambda: core.read_namespaced_secret("docrelay-sealing-keys", namespace),
        lambda: core.read_namespaced_secret("docrelay-sealing-keys", f"{namespace}-docrelay-keys"),
        lambda: core.list_namespaced_secret(f"{namespace}-docrelay-keys"),
        lambda: core.read_namespaced_secret("docrelay-platform", namespace),
        lambda: core.list_namespaced_secret(namespace),
        lambda: core.list_secret_for_all_namespaces(),
        lambda: custom(own).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "integrations"
        ),
        lambda: custom(own).list_cluster_custom_object(GROUP, VERSION, "integrationsecrets"),
    ]


def test_tenant_a_cannot_touch_tenant_b(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    a, b = tenants
    for component in ("operator", "gateway"):
        own = a.client_for(component)
        # Sanity: the review answers "yes" for what the chart does grant at home.
        home = ("get", "", "secrets", "docrelay-sealing-keys", None)
        assert allowed(own, home[0], home[2], a.keys_namespace, home[1], home[3])
        for verb, group, resource, name, sub in FOREIGN:
            assert not allowed(own, verb, resource, b.namespace, group, name, sub), (
                component,
                verb,
                resource,
                name,
                sub,
            )
        # Nor B's keys.
        assert not allowed(own, "get", "secrets", b.keys_namespace, name="docrelay-sealing-keys")
        assert not allowed(own, "list", "secrets", b.keys_namespace)
        # And the API itself says 403, not just the review.
        for call in foreign_calls(own, b.namespace):
            with pytest.raises(client.ApiException) as refused:
                call()
            assert refused.value.status == 403, component
        # B's webhook configurations are B's.
        admission = client.AdmissionregistrationV1Api(own)
        with pytest.raises(client.ApiException) as refused:
            admission.patch_mutating_webhook_configuration(
                b.webhook_name,
                [{"op": "test", "path": "/metadata/name", "value": b.webhook_name}],
                _content_type="application/json-patch+json",
            )
        assert refused.value.status == 403


def test_no_component_reads_another_secret_at_home(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    a, _ = tenants
    ns = a.namespace
    operator, gateway = a.client_for("operator"), a.client_for("gateway")
    # The operator: the Pipedream credentials (account checks) and the platform credentials
    # (the agent's schemas and sample documents), and a look (get, by name) at where earlier
    # versions kept the key Secret; never write it there.
    for name in ("docrelay-sealing-keys", "docrelay-pipedream", "docrelay-platform"):
        assert allowed(operator, "get", "secrets", ns, name=name), name
    for name in ("docrelay-gateway-signing", "anything"):
        assert not allowed(operator, "get", "secrets", ns, name=name), name
    assert not allowed(operator, "list", "secrets", ns)
    assert not allowed(operator, "update", "secrets", ns, name="docrelay-sealing-keys")
    # The gateway: signing, platform and Pipedream Secrets by name; nothing else, no list.
    for name in ("docrelay-platform", "docrelay-gateway-signing", "docrelay-pipedream"):
        assert allowed(gateway, "get", "secrets", ns, name=name), name
    for name in ("docrelay-sealing-keys", "anything"):
        assert not allowed(gateway, "get", "secrets", ns, name=name), name
    assert not allowed(gateway, "list", "secrets", ns)
    # The keys namespace: the key Secret by name (the operator also renews it), nothing else.
    keys = a.keys_namespace
    assert allowed(operator, "update", "secrets", keys, name="docrelay-sealing-keys")
    assert not allowed(gateway, "update", "secrets", keys, name="docrelay-sealing-keys")
    for own in (operator, gateway):
        assert allowed(own, "get", "secrets", keys, name="docrelay-sealing-keys")
        assert not allowed(own, "get", "secrets", keys, name="anything")
        assert not allowed(own, "list", "secrets", keys)
        assert not allowed(own, "delete", "secrets", keys, name="docrelay-sealing-keys")
    # Connected accounts (docs/pipedream.md): the operator writes their status (not spec); the
    # gateway reads them and serves upload_file's files (ConfigMaps of any name).
    assert allowed(operator, "patch", "connectedaccounts", ns, GROUP, subresource="status")
    assert not allowed(operator, "patch", "connectedaccounts", ns, GROUP)
    assert allowed(gateway, "get", "connectedaccounts", ns, GROUP)
    assert not allowed(gateway, "list", "connectedaccounts", ns, GROUP)
    assert allowed(gateway, "get", "configmaps", ns, name="docrelay-file-0123456789abcdef-run")
    assert not allowed(gateway, "delete", "integrationruns", ns, GROUP)
    assert not allowed(gateway, "create", "jobs", ns, "batch")
    # Neither may create webhook configurations (which cannot be limited by name).
    for own in (operator, gateway):
        assert not allowed(
            own, "create", "mutatingwebhookconfigurations", None, "admissionregistration.k8s.io"
        )


def test_the_run_service_account_can_do_nothing(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant], tmp_path: Path
) -> None:
    """Even a token the API server accepts (audience: the API) for docrelay-run is refused
    everything. The run pod's own token, audience docrelay-broker, is not even accepted: the
    end-to-end test's run got 401."""
    a, _ = tenants
    ns = a.namespace
    run = config.new_client_from_config(
        config_file=str(token_kubeconfig(api, ns, RUN_ACCOUNT, tmp_path / "run.kubeconfig", ns))
    )
    for verb, group, resource, name, sub in FOREIGN:
        assert not allowed(run, verb, resource, ns, group, name, sub), (verb, resource, sub)
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
        for group, resource in (
            ("", "pods"),
            ("", "configmaps"),
            ("", "serviceaccounts"),
            (GROUP, "integrationruns"),
            ("authentication.k8s.io", "tokenreviews"),
        ):
            assert not allowed(run, verb, resource, ns, group), (verb, resource)
    rules = client.AuthorizationV1Api(run).create_self_subject_rules_review(
        {"spec": {"namespace": ns}}
    )
    granted = {
        resource for rule in rules.status.resource_rules for resource in rule.resources or []
    }
    # Only what every authenticated user has: asking about oneself.
    assert granted <= {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"}
    with pytest.raises(client.ApiException) as refused:
        client.CoreV1Api(run).list_namespaced_pod(ns)
    assert refused.value.status == 403


def test_operator_patches_only_the_client_config(
    api: client.ApiClient, cluster: Any, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    """The operator wrote its CA (and for A its URL) into the chart's webhook configurations
    and left Helm's labels and annotations; `helm upgrade` keeps the CA, and both stay."""
    admission = client.AdmissionregistrationV1Api(api)
    _, b = tenants
    for tenant in tenants:
        for read in (
            admission.read_mutating_webhook_configuration,
            admission.read_validating_webhook_configuration,
        ):
            obj = read(tenant.webhook_name)
            assert obj.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
            assert obj.metadata.annotations["meta.helm.sh/release-name"] == tenant.release
            assert obj.metadata.annotations["meta.helm.sh/release-namespace"] == tenant.namespace
            assert obj.webhooks[0].client_config.ca_bundle
            assert obj.webhooks[0].namespace_selector.match_labels == {
                "kubernetes.io/metadata.name": tenant.namespace
            }
    # B as in a cluster: the Service stays, only the CA is the operator's.
    ca_before = (
        admission.read_mutating_webhook_configuration(b.webhook_name).webhooks[0].client_config
    )
    assert ca_before.service.name == f"{b.fullname}-webhook" and ca_before.url is None
    helm(
        "upgrade",
        b.release,
        str(CHART),
        "--kubeconfig",
        str(cluster.kubeconfig),
        "-n",
        b.namespace,
        "--reuse-values",
        "--set",
        "gateway.replicas=1",
    )
    after = admission.read_mutating_webhook_configuration(b.webhook_name)
    assert after.webhooks[0].client_config.ca_bundle == ca_before.ca_bundle
    assert after.metadata.annotations["meta.helm.sh/release-name"] == b.release


def test_operator_serves_a_mounted_certificate_and_reloads_it(
    api: client.ApiClient, tenants: tuple[ChartTenant, ChartTenant], tmp_path: Path
) -> None:
    """--webhook-cert-dir (cert-manager mode's flag): the operator serves the files, registers
    their CA, and picks up a renewed certificate without a restart."""
    from docrelay.handlers.webhooks import serving_certificate

    a, _ = tenants
    assert a.operator is not None
    # As the kubelet writes a Secret volume: each version in its own directory, switched by
    # an atomic symlink swap, so a reader never sees a new certificate with an old key.
    cert_dir = tmp_path / "webhook-tls"
    versions: list[Path] = []

    def issue() -> str:
        version = tmp_path / f"tls-{len(versions)}"
        version.mkdir()
        versions.append(version)
        cert, _key = serving_certificate(["127.0.0.1"], version)
        (version / "ca.crt").write_bytes(cert.read_bytes())  # self-signed: its own CA
        link = tmp_path / "webhook-tls.new"
        link.symlink_to(version)
        link.replace(cert_dir)
        return base64.b64encode(cert.read_bytes()).decode()

    first = issue()
    a.operator.stop()
    port = free_port()
    a.operator = Operator(
        a.kubeconfigs["operator"],
        tmp_path / "operator-cert-dir.log",
        ["-n", a.namespace, "--webhook-host", "127.0.0.1", "--webhook-port", str(port)],
        {"DOCRELAY_WEBHOOK_CERT_DIR": str(cert_dir), "DOCRELAY_KEY_CHECK_SECONDS": "1"},
    )
    a.operator.wait_healthy()
    admission = client.AdmissionregistrationV1Api(api)

    def ca_bundle() -> str:
        return str(
            admission.read_mutating_webhook_configuration(a.webhook_name)
            .webhooks[0]
            .client_config.ca_bundle
        )

    eventually(ca_bundle, lambda ca: ca == first, "the mounted CA in the webhooks")
    set_secret(api, a.namespace, "mounted", "API_KEY", f"v-{uuid.uuid4().hex}")
    renewed = issue()  # as the kubelet does when cert-manager renews
    assert renewed != first
    eventually(ca_bundle, lambda ca: ca == renewed, "the renewed CA in the webhooks", 30)
    # The webhook now serves the renewed certificate: plaintext is still sealed.
    eventually(
        lambda: (
            kubectl(
                "apply",
                "-n",
                a.namespace,
                "-f",
                "-",
                expect=None,
                stdin=yaml.safe_dump(
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "IntegrationSecret",
                        "metadata": {"name": "mounted-renewed"},
                        "spec": {
                            "integration": "mounted",
                            "key": "OTHER_KEY",
                            "value": "v-renewed-1",
                        },
                    }
                ),
            ).returncode
        ),
        lambda code: code == 0,
        "plaintext to be sealed with the renewed certificate",
        30,
    )
    stored = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, a.namespace, "integrationsecrets", "mounted-renewed"
    )
    assert "value" not in stored["spec"] and stored["spec"]["encryptedValue"]


def test_uninstall_removes_cluster_objects_and_keeps_the_crds(
    api: client.ApiClient, cluster: Any, tenants: tuple[ChartTenant, ChartTenant]
) -> None:
    admission = client.AdmissionregistrationV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    for tenant in tenants:
        tenant.stop()
        helm(
            "uninstall",
            tenant.release,
            "--kubeconfig",
            str(cluster.kubeconfig),
            "-n",
            tenant.namespace,
        )
        for read in (
            admission.read_mutating_webhook_configuration,
            admission.read_validating_webhook_configuration,
        ):
            with pytest.raises(client.ApiException) as gone:
                read(tenant.webhook_name)
            assert gone.value.status == 404
        prefix = f"docrelay.{tenant.namespace}."
        assert not [r for r in rbac.list_cluster_role().items if r.metadata.name.startswith(prefix)]
        # The keys namespace and the keys stay (helm.sh/resource-policy: keep): an uninstall
        # never loses every sealed value of the install.
        kept = client.CoreV1Api(api).read_namespaced_secret(
            "docrelay-sealing-keys", tenant.keys_namespace
        )
        assert any(entry.startswith("sealing-key-") for entry in kept.data)
    # The CRDs (owned by A's release) stay, with every tenant's objects.
    crds = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    ours = sorted(c.metadata.name for c in crds if c.spec.group == GROUP)
    shipped = (f.stem.split("_", 1)[1] for f in (REPO_ROOT / "crds").glob("*.yaml"))
    assert ours == sorted(f"{plural}.{GROUP}" for plural in shipped)
