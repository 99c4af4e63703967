"""The Helm chart (charts/docrelay), rendered with `helm template` and checked object by object:
lint in both modes, hardened pods, RBAC as documented and no more, the run ServiceAccount bound
to nothing, the schema refusing a typo, webhook configurations identical to the operator's, and
the CRD copies current. docs/chart.md describes the design these tests hold it to."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit import chart as chart_crds
from devkit.rbac import AGENT_KEY_RULES, LEASE_RULES
from docrelay.builders.run import RUN_SERVICE_ACCOUNT, RunAttempt, run_labels
from docrelay.builders.sealing import CERT_CONFIG_MAP, KEYS_SECRET, webhook_configurations
from docrelay.gateway.settings import GatewaySettings
from docrelay.settings import OperatorSettings
from tests.cluster.harness import (
    GATEWAY_KEYS_RULES,
    GATEWAY_RULES,
    OPERATOR_KEYS_RULES,
    SEALING_RULES,
    TENANT_RULES,
    TOKEN_REVIEW_RULES,
)

PIPEDREAM_SECRET = OperatorSettings.model_fields["pipedream_secret"].default
PLATFORM_SECRET = OperatorSettings.model_fields["platform_secret"].default
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "docrelay"
RELEASE, NAMESPACE = "acme", "team-a"
FULLNAME = "acme-docrelay"
KEYS_NAMESPACE = f"{NAMESPACE}-docrelay-keys"


@pytest.fixture(scope="module")
def helm() -> str:
    try:
        from devkit import toolchain

        return str(toolchain.ensure("helm"))
    except Exception as exc:  # the toolchain builds helm from the Go module proxy
        pytest.skip(f"helm could not be built here ({type(exc).__name__}: {exc})")


def render(helm: str, *sets: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    args = [helm, "template", RELEASE, str(CHART), "-n", namespace]
    for value in sets:
        args += ["--set", value]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '*') for every combination a rule allows."""
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }


def role_grants(
    objects: list[dict[str, Any]], service_account: str, namespace: str | None = NAMESPACE
) -> dict[str, set]:
    """What a ServiceAccount of the release is granted, per binding kind (Role, ClusterRole);
    "Role" counts only RoleBindings in `namespace` (None: in any namespace)."""
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"].endswith("Role")
    }
    out: dict[str, set] = {"Role": set(), "ClusterRole": set()}
    for binding in objects:
        if not binding["kind"].endswith("RoleBinding"):
            continue
        where = binding["metadata"].get("namespace")
        if binding["kind"] == "RoleBinding" and namespace is not None and where != namespace:
            continue
        if not any(s["name"] == service_account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], where if ref["kind"] == "Role" else None, ref["name"])]
        scope = "ClusterRole" if binding["kind"] == "ClusterRoleBinding" else "Role"
        out[scope] |= grants(role["rules"])
    return out


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict, dict]]:
    for deploy in by_kind(objects, "Deployment"):
        pod = deploy["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield deploy["metadata"]["name"], pod, container


# --- lint and schema ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_helm_lint(helm: str, mode: str) -> None:
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--set", f"mode={mode}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def schema_refusal(helm: str, value: str, *extra: str) -> str:
    """What helm says when values.schema.json (or a template) refuses `--set value` (it must
    refuse it)."""
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", value, *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0, f"{value} was accepted"
    return result.stderr


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("operatr.replicas=1", "operatr"),
        ("gateway.replicaz=3", "replicaz"),
        ("networkPolicy.dns.podselector.a=b", "podselector"),
        ("mode=cluster-wide", "mode"),
        ("pipedream.existingSecrets=mine", "existingSecrets"),
        ("pipedream.broker.maxFileByte=2048", "maxFileByte"),
    ],
)
def test_schema_rejects_typos(helm: str, value: str, named: str) -> None:
    assert named in schema_refusal(helm, value)


def env_of(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
    container = one(objects, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_cert_manager_mode(helm: str) -> None:
    """cert-manager issues the serving certificate, its CA injector writes the CA bundle, the
    operator serves the mounted files and needs no right on webhook configurations."""
    objects = render(helm, "certManager.enabled=true")
    cert = one(objects, "Certificate", f"{FULLNAME}-webhook")["spec"]
    assert cert["secretName"] == f"{FULLNAME}-webhook"
    assert cert["dnsNames"][0] == f"{FULLNAME}-webhook.{NAMESPACE}.svc"
    assert cert["issuerRef"] == {
        "name": f"{FULLNAME}-webhook-ca",
        "kind": "Issuer",
        "group": "cert-manager.io",
    }
    assert one(objects, "Certificate", f"{FULLNAME}-webhook-ca")["spec"]["isCA"] is True
    assert {o["metadata"]["name"] for o in by_kind(objects, "Issuer")} == {
        f"{FULLNAME}-selfsigned",
        f"{FULLNAME}-webhook-ca",
    }
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = one(objects, kind, f"docrelay-secrets.{NAMESPACE}")
        assert config["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{FULLNAME}-webhook"
        }
    env = env_of(objects, "operator")
    assert env["DOCRELAY_WEBHOOK_CERT_DIR"] == "/etc/docrelay/webhook-tls"
    assert env["DOCRELAY_REGISTER_WEBHOOKS"] == "false"
    pod = one(objects, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert volume["secret"]["secretName"] == f"{FULLNAME}-webhook"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "webhook-tls")
    assert mount == {
        "name": "webhook-tls",
        "mountPath": "/etc/docrelay/webhook-tls",
        "readOnly": True,
    }
    operator = role_grants(objects, f"{FULLNAME}-operator")
    assert operator["ClusterRole"] == set()  # no webhook rights at all
    # An issuer of yours: only the serving Certificate.
    own = render(
        helm,
        "certManager.enabled=true",
        "certManager.issuerRef.name=corp-ca",
        "certManager.issuerRef.kind=ClusterIssuer",
    )
    assert not by_kind(own, "Issuer")
    assert one(own, "Certificate", f"{FULLNAME}-webhook")["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    # Without cert-manager: no cert-manager object, no annotation, the operator registers.
    plain = render(helm)
    assert not by_kind(plain, "Certificate") and not by_kind(plain, "Issuer")
    assert (
        "annotations"
        not in one(plain, "MutatingWebhookConfiguration", f"docrelay-secrets.{NAMESPACE}")[
            "metadata"
        ]
    )
    assert env_of(plain, "operator")["DOCRELAY_REGISTER_WEBHOOKS"] == "true"
    assert "DOCRELAY_WEBHOOK_CERT_DIR" not in env_of(plain, "operator")


def test_broker_url_points_runs_at_the_gateway_service(helm: str) -> None:
    objects = render(helm)
    service = one(objects, "Service", f"{FULLNAME}-gateway")
    port = service["spec"]["ports"][0]["port"]
    assert env_of(objects, "operator")["DOCRELAY_BROKER_URL"] == (
        f"http://{FULLNAME}-gateway.{NAMESPACE}.svc:{port}"
    )
    custom = render(helm, "runs.brokerUrl=https://broker.example.com")
    assert env_of(custom, "operator")["DOCRELAY_BROKER_URL"] == "https://broker.example.com"
    gateway = env_of(objects, "gateway")
    assert gateway["DOCRELAY_GATEWAY_PLATFORM_SECRET"] == "docrelay-platform"
    assert gateway["DOCRELAY_GATEWAY_SEALING_KEYS_SECRET"] == KEYS_SECRET


def test_egress_proxy_is_served_by_the_gateway_and_given_to_runs(helm: str) -> None:
    import json

    objects = render(helm)
    service = one(objects, "Service", f"{FULLNAME}-gateway")
    assert {"name": "proxy", "port": 3128, "targetPort": "proxy"} in service["spec"]["ports"]
    gateway = env_of(objects, "gateway")
    assert gateway["DOCRELAY_GATEWAY_PROXY_PORT"] == "3128"
    assert "DOCRELAY_GATEWAY_EGRESS_RESOLVE" not in gateway
    assert env_of(objects, "operator")["DOCRELAY_EGRESS_PROXY_URL"] == (
        f"http://{FULLNAME}-gateway.{NAMESPACE}.svc:3128"
    )
    custom = render(
        helm,
        "runs.egressProxyUrl=http://proxy.example:8080",
        "gateway.egressResolve.api\\.internal\\.example=10.0.4.7",
    )
    assert env_of(custom, "operator")["DOCRELAY_EGRESS_PROXY_URL"] == "http://proxy.example:8080"
    resolve = env_of(custom, "gateway")["DOCRELAY_GATEWAY_EGRESS_RESOLVE"]
    settings = GatewaySettings(proxy_port=3128, egress_resolve=json.loads(resolve))
    assert settings.egress_resolve == {"api.internal.example": "10.0.4.7"}
    with pytest.raises(subprocess.CalledProcessError):  # the schema refuses a bad address
        render(helm, "gateway.egressResolve.a=not-an-address")


def test_run_images_map_reaches_the_operator_and_a_typo_is_refused(helm: str) -> None:
    import json
    default = env_of(render(helm), "operator")["DOCRELAY_RUN_IMAGES"]
    assert OperatorSettings(run_images=json.loads(default)).run_images == {}
    objects = render(helm, "runs.images.nodejs20=mirror.example/runner-node:20")
    images = json.loads(env_of(objects, "operator")["DOCRELAY_RUN_IMAGES"])
    assert OperatorSettings(run_images=images).run_images == {
        "nodejs20": "mirror.example/runner-node:20"
    }
    assert "nodejs18" in schema_refusal(helm, "runs.images.nodejs18=mirror.example/n:18")


def test_extra_env_hooks(helm: str) -> None:
    objects = render(
        helm,
        "operator.extraEnv[0].name=DOCRELAY_X",
        "operator.extraEnv[0].value=on",
        "gateway.extraEnv[0].name=DOCRELAY_GATEWAY_Y",
        "gateway.extraEnv[0].value=two",
    )
    assert env_of(objects, "operator")["DOCRELAY_X"] == "on"
    assert env_of(objects, "gateway")["DOCRELAY_GATEWAY_Y"] == "two"


def test_pipedream_values_reach_both_processes(helm: str) -> None:
    """Connected accounts: the operator's health checks and the broker get the Secret's name
    and the tunables; publicUrl only when set; the chart never renders a Secret."""
    objects = render(helm)
    operator, gateway = env_of(objects, "operator"), env_of(objects, "gateway")
    assert operator["DOCRELAY_PIPEDREAM_SECRET"] == "docrelay-pipedream"
    assert operator["DOCRELAY_ACCOUNT_CHECK_SECONDS"] == "300"
    assert gateway["DOCRELAY_GATEWAY_PIPEDREAM_SECRET"] == "docrelay-pipedream"
    assert gateway["DOCRELAY_GATEWAY_PIPEDREAM_URL"] == "https://api.pipedream.com"
    assert "DOCRELAY_GATEWAY_PUBLIC_URL" not in gateway  # upload_file answers 503
    assert not by_kind(objects, "Secret")
    custom = render(
        helm,
        "pipedream.existingSecret=pd-creds",
        "pipedream.url=https://pipedream.internal.example.com",
        "pipedream.accountCheckSeconds=60",
        "pipedream.fileUrlSeconds=600",
        "pipedream.broker.maxFileBytes=2048",
        "pipedream.broker.maxRequestBytes=67108864",  # 64 MiB: no 6.7108864e+07
        "pipedream.broker.actionTimeoutSeconds=30",
        "pipedream.broker.connectWorkers=8",
        "gateway.publicUrl=https://docrelay.example.com",
    )
    operator, gateway = env_of(custom, "operator"), env_of(custom, "gateway")
    assert operator["DOCRELAY_PIPEDREAM_SECRET"] == "pd-creds"
    assert operator["DOCRELAY_ACCOUNT_CHECK_SECONDS"] == "60"
    assert (
        gateway.items()
        >= {
            "DOCRELAY_GATEWAY_PIPEDREAM_SECRET": "pd-creds",
            "DOCRELAY_GATEWAY_PIPEDREAM_URL": "https://pipedream.internal.example.com",
            "DOCRELAY_GATEWAY_PUBLIC_URL": "https://docrelay.example.com",
            "DOCRELAY_GATEWAY_FILE_URL_SECONDS": "600",
            "DOCRELAY_GATEWAY_BROKER_MAX_FILE_BYTES": "2048",
            "DOCRELAY_GATEWAY_BROKER_MAX_REQUEST_BYTES": "67108864",
            "DOCRELAY_GATEWAY_BROKER_ACTION_TIMEOUT_SECONDS": "30",
            "DOCRELAY_GATEWAY_BROKER_CONNECT_WORKERS": "8",
        }.items()
    )
    # The RBAC names follow the Secret's name.
    assert ("", "secrets", "get", "pd-creds") in role_grants(custom, f"{FULLNAME}-operator")["Role"]
    assert ("", "secrets", "get", "pd-creds") in role_grants(custom, f"{FULLNAME}-gateway")["Role"]
    assert not by_kind(custom, "Secret")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("pipedream.broker.maxFileBytes=1048576", "maxFileBytes"),  # more than a ConfigMap holds
        ("pipedream.existingSecret=Not_A_Name", "existingSecret"),
        ("pipedream.url=api.pipedream.com", "url"),
        ("gateway.publicUrl=docrelay.example.com", "publicUrl"),
    ],
)
def test_schema_rejects_bad_pipedream_values(helm: str, value: str, named: str) -> None:
    assert named in schema_refusal(helm, value)


def test_agent_is_off_by_default_and_its_values_reach_the_operator(
    helm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent (docs/agent.md): off unless kind, baseUrl and model are set; its settings and
    the API key Secret's name reach the operator, which may read that Secret by name only."""
    operator = env_of(render(helm), "operator")
    assert not [name for name in operator if name.startswith("DOCRELAY_AGENT_")]
    assert operator["DOCRELAY_PLATFORM_SECRET"] == PLATFORM_SECRET
    objects = render(
        helm,
        "agent.kind=anthropic",
        "agent.baseUrl=https://api.anthropic.com",
        "agent.model=claude-sonnet-4-5",
        "agent.apiKeySecret.name=llm-key",
        "agent.testDocuments=5",
        "agent.promptTokens=64000",
        "agent.turnTokens=300000",
        "agent.allowDocumentValues=true",
        "gateway.platformUrl=https://api.platform.example",
    )
    operator = env_of(objects, "operator")
    assert operator.items() >= {
        "DOCRELAY_AGENT_KIND": "anthropic",
        "DOCRELAY_AGENT_BASE_URL": "https://api.anthropic.com",
        "DOCRELAY_AGENT_MODEL": "claude-sonnet-4-5",
        "DOCRELAY_AGENT_API_KEY_SECRET": "llm-key",
        "DOCRELAY_AGENT_API_KEY_SECRET_KEY": "api-key",
        "DOCRELAY_AGENT_TEST_DOCUMENTS": "5",
        "DOCRELAY_AGENT_PROMPT_TOKENS": "64000",
        "DOCRELAY_AGENT_TURN_TOKENS": "300000",
        "DOCRELAY_AGENT_ALLOW_DOCUMENT_VALUES": "true",
        "DOCRELAY_PLATFORM_URL": "https://api.platform.example",
    }.items()
    # The operator's own settings accept what the chart renders.
    for name, value in operator.items():
        if name.startswith(("DOCRELAY_AGENT_", "DOCRELAY_PLATFORM_")):
            monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert (settings.agent_kind, settings.agent_test_documents) == ("anthropic", 5)
    assert (settings.agent_prompt_tokens, settings.agent_turn_tokens) == (64_000, 300_000)
    # Left alone, the chart's token budgets are the operator's own defaults.
    agent = yaml.safe_load((CHART / "values.yaml").read_text())["agent"]
    fields = OperatorSettings.model_fields
    assert (agent["promptTokens"], agent["turnTokens"]) == (
        fields["agent_prompt_tokens"].default,
        fields["agent_turn_tokens"].default,
    )
    assert settings.agent_allow_document_values is True
    grants_ = role_grants(objects, f"{FULLNAME}-operator")["Role"]
    assert ("", "secrets", "get", "llm-key") in grants_
    # The cluster tests grant the agent's key the same way: get, by name.
    assert {(g, r, v) for g, r, v, _ in grants(AGENT_KEY_RULES)} == {("", "secrets", "get")}
    assert ("docrelay.io", "integrationruns", "create", "*") in grants_  # its test runs
    assert not by_kind(objects, "Secret")  # the key is never in values


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("agent.kind=openia", "kind"),
        ("agent.baseUrl=api.openai.com", "baseUrl"),
        ("agent.testDocuments=50", "testDocuments"),
        ("agent.promptTokens=1000", "promptTokens"),
        ("agent.turnTokens=20000000", "turnTokens"),
        ("agent.apiKey=sk-nope", "apiKey"),  # no such key: the key lives in a Secret
    ],
)
def test_schema_rejects_bad_agent_values(helm: str, value: str, named: str) -> None:
    assert named in schema_refusal(helm, value)


def test_every_value_is_commented() -> None:
    """Each key in values.yaml, or a mapping it sits in, has a comment line right above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    commented: dict[int, bool] = {}  # indentation -> the enclosing key at that depth is
    for index, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][A-Za-z0-9]*):", line)
        if not match:
            continue
        depth = len(match.group(1))
        commented = {d: c for d, c in commented.items() if d < depth}
        here = index > 0 and lines[index - 1].strip().startswith("#")
        section = line.rstrip().endswith(":")  # a mapping: its children carry the comments
        assert here or section or any(commented.values()), f"values.yaml:{index + 1}: {line}"
        commented[depth] = here


# --- pods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_every_pod_is_hardened(helm: str, mode: str) -> None:
    objects = render(helm, f"mode={mode}")
    seen = 0
    for name, pod, container in containers(objects):
        seen += 1
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["enableServiceLinks"] is False, name
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["privileged"] is False, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        assert container["livenessProbe"] and container["readinessProbe"], name
        # A read-only root needs a writable /tmp (the webhook certificate, Python's tempfile).
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name
    assert seen == 2


def test_operator_deployment(helm: str) -> None:
    objects = render(helm)
    deploy = one(objects, "Deployment", f"{FULLNAME}-operator")
    # Two replicas, one active over the Lease (docs/operator.md, "High availability"); a new
    # pod stands by until the old active one gives the Lease back.
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator", "--leader-elect", "-n", NAMESPACE]
    pod_ip = next(e for e in container["env"] if e["name"] == "DOCRELAY_POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    single = one(render(helm, "operator.replicas=1"), "Deployment", f"{FULLNAME}-operator")
    assert single["spec"]["replicas"] == 1
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "webhook": 9443}
    service = one(objects, "Service", f"{FULLNAME}-webhook")
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    cluster = render(helm, "mode=cluster")
    container = one(cluster, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    assert container["containers"][0]["args"] == ["operator", "--leader-elect", "--all-namespaces"]


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_rendered_settings_are_valid(helm: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env the chart gives each process is accepted by that process's own settings."""
    objects = render(
        helm,
        f"mode={mode}",
        "operator.metrics.enabled=true",
        "gateway.publicUrl=https://docrelay.example.com",
    )
    for component, model in (("operator", OperatorSettings), ("gateway", GatewaySettings)):
        container = one(objects, "Deployment", f"{FULLNAME}-{component}")["spec"]["template"][
            "spec"
        ]["containers"][0]
        for env in container["env"]:
            if "value" in env:
                monkeypatch.setenv(env["name"], env["value"])
        scope = {"all_namespaces": True} if mode == "cluster" else {"namespace": NAMESPACE}
        settings = model(**scope)  # type: ignore[call-arg]
        if component == "operator":
            assert settings.webhook_service == f"{FULLNAME}-webhook"
            assert settings.metrics_port == 9090
            assert settings.register_webhooks is True
            assert settings.broker_url == f"http://{FULLNAME}-gateway.{NAMESPACE}.svc:80"
            assert settings.pipedream_secret == PIPEDREAM_SECRET
            assert settings.account_check_seconds == 300
            assert settings.keys_namespace == KEYS_NAMESPACE
        else:
            assert settings.host == "0.0.0.0"
            assert settings.operator_namespace == NAMESPACE
            assert settings.keys_namespace == KEYS_NAMESPACE
            assert settings.platform_secret == "docrelay-platform"
            assert settings.pipedream_secret == PIPEDREAM_SECRET
            assert settings.public_url == "https://docrelay.example.com"
            # The chart's defaults are the gateway's own.
            for field in (
                "pipedream_url",
                "file_url_seconds",
                "broker_max_file_bytes",
                "broker_max_request_bytes",
                "broker_action_timeout_seconds",
                "broker_connect_workers",
            ):
                assert getattr(settings, field) == model.model_fields[field].default, field


def test_gateway_replicas_and_pdb(helm: str) -> None:
    objects = render(helm, "gateway.replicas=3")
    deploy = one(objects, "Deployment", f"{FULLNAME}-gateway")
    assert deploy["spec"]["replicas"] == 3
    pdb = one(objects, "PodDisruptionBudget", f"{FULLNAME}-gateway")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


# --- RBAC -------------------------------------------------------------------------------------

WEBHOOK_RESOURCES = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")


def documented_operator_grants() -> set[tuple[str, str, str, str]]:
    """docs/operator.md's tenant Role (the rules tests/cluster runs the operator with) plus
    docs/secrets.md's sealing rules in the release namespace (devkit.rbac: the certificate,
    secret status, and a look by name at where earlier versions kept the key Secret), and the
    operator Lease (docs/operator.md, "High availability")."""
    return grants(TENANT_RULES) | grants(SEALING_RULES) | grants(LEASE_RULES)


def test_tenant_operator_rbac_is_exactly_documented(helm: str) -> None:
    objects = render(helm)
    operator = role_grants(objects, f"{FULLNAME}-operator")
    assert operator["Role"] == documented_operator_grants()
    # The operator reads no Secret of the tenant namespace but the Pipedream and the platform
    # credentials, by name, and looks for the key Secret where earlier versions kept it.
    assert {
        g for g in operator["Role"] if g[1] == "secrets" and g[2] in {"get", "list", "watch"}
    } == {
        ("", "secrets", "get", KEYS_SECRET),
        ("", "secrets", "get", PIPEDREAM_SECRET),
        ("", "secrets", "get", PLATFORM_SECRET),
    }
    assert ("", "secrets", "update", KEYS_SECRET) not in operator["Role"]
    # The key Secret itself: in the keys namespace, by name (create: the first start).
    keys = role_grants(objects, f"{FULLNAME}-operator", KEYS_NAMESPACE)["Role"]
    assert (
        keys
        == grants(OPERATOR_KEYS_RULES)
        == {
            ("", "secrets", "get", KEYS_SECRET),
            ("", "secrets", "update", KEYS_SECRET),
            ("", "secrets", "create", "*"),
        }
    )
    # Cluster-wide: get/update of this release's two webhook configurations, by name.
    name = f"docrelay-secrets.{NAMESPACE}"
    assert operator["ClusterRole"] == {
        ("admissionregistration.k8s.io", resource, verb, name)
        for resource in WEBHOOK_RESOURCES
        for verb in ("get", "patch")
    }


def test_tenant_mode_has_only_the_minimal_cluster_roles(helm: str) -> None:
    objects = render(helm)
    cluster_roles = {
        o["metadata"]["name"]: grants(o["rules"]) for o in by_kind(objects, "ClusterRole")
    }
    prefix = f"docrelay.{NAMESPACE}.{FULLNAME}"
    assert set(cluster_roles) == {f"{prefix}-webhooks", f"{prefix}-tokenreviews"}
    assert cluster_roles[f"{prefix}-tokenreviews"] == {
        ("authentication.k8s.io", "tokenreviews", "create", "*")
    }
    for role in by_kind(objects, "Role") + by_kind(objects, "RoleBinding"):
        assert role["metadata"]["namespace"] in (NAMESPACE, KEYS_NAMESPACE)


def test_gateway_rbac_is_exactly_documented(helm: str) -> None:
    """Intake (docs/gateway.md) and broker (docs/broker.md, docs/pipedream.md): the rules
    tests/cluster runs the gateway with (GATEWAY_RULES), with every Secret narrowed by name.
    ConfigMaps are read by any name: upload_file's files have names made per file."""
    objects = render(helm)
    gateway = role_grants(objects, f"{FULLNAME}-gateway")
    assert gateway["Role"] == {
        ("docrelay.io", "integrations", "get", "*"),
        ("docrelay.io", "integrations", "list", "*"),
        ("docrelay.io", "integrations", "watch", "*"),
        ("docrelay.io", "integrationruns", "get", "*"),
        ("docrelay.io", "integrationruns", "create", "*"),
        ("docrelay.io", "connectedaccounts", "get", "*"),
        ("docrelay.io", "connectedaccounts", "create", "*"),
        ("docrelay.io", "connectedaccounts", "patch", "*"),
        ("", "pods", "get", "*"),
        ("batch", "jobs", "get", "*"),
        ("", "configmaps", "create", "*"),
        ("", "configmaps", "patch", "*"),
        ("", "events", "create", "*"),
        ("", "configmaps", "get", "*"),
        ("", "configmaps", "get", CERT_CONFIG_MAP),
        ("", "secrets", "get", "docrelay-gateway-signing"),
        ("", "secrets", "get", "docrelay-platform"),
        ("", "secrets", "get", PIPEDREAM_SECRET),
    }
    keys = role_grants(objects, f"{FULLNAME}-gateway", KEYS_NAMESPACE)["Role"]
    assert keys == grants(GATEWAY_KEYS_RULES) == {("", "secrets", "get", KEYS_SECRET)}
    assert gateway["ClusterRole"] == grants(TOKEN_REVIEW_RULES)
    # Every grant is one the cluster tests' gateway has (they grant whole resources).
    allowed = {(g, r, v) for g, r, v, _ in grants(GATEWAY_RULES)}
    assert {(g, r, v) for g, r, v, _ in gateway["Role"]} <= allowed


def test_cluster_mode_uses_cluster_roles(helm: str) -> None:
    objects = render(helm, "mode=cluster")
    operator = role_grants(objects, f"{FULLNAME}-operator")
    scanning = {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list", "*"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch", "*"),
        ("", "namespaces", "list", "*"),
        ("", "namespaces", "watch", "*"),
    }
    webhooks = {
        ("admissionregistration.k8s.io", resource, verb, "docrelay-secrets")
        for resource in WEBHOOK_RESOURCES
        for verb in ("get", "patch")
    }
    assert operator["ClusterRole"] == (
        grants(TENANT_RULES)
        | scanning
        | webhooks
        | {
            ("", "configmaps", "update", "*"),
            ("docrelay.io", "integrationsecrets/status", "get", "*"),
            ("docrelay.io", "integrationsecrets/status", "patch", "*"),
        }
    )
    # The key Secret stays a namespaced grant, by name, in the keys namespace; in the release
    # namespace only the look at where earlier versions kept it, and the operator Lease.
    assert operator["Role"] == {("", "secrets", "get", KEYS_SECRET)} | grants(LEASE_RULES)
    keys = role_grants(objects, f"{FULLNAME}-operator", KEYS_NAMESPACE)["Role"]
    assert keys == grants(OPERATOR_KEYS_RULES)
    assert ("", "secrets", "get", KEYS_SECRET) not in operator["ClusterRole"]
    gateway = role_grants(objects, f"{FULLNAME}-gateway")
    assert ("docrelay.io", "integrationruns", "create", "*") in gateway["ClusterRole"]
    # The key Secret stays namespaced for the gateway too.
    keys = role_grants(objects, f"{FULLNAME}-gateway", KEYS_NAMESPACE)["Role"]
    assert keys == grants(GATEWAY_KEYS_RULES)
    assert ("", "secrets", "get", KEYS_SECRET) not in gateway["ClusterRole"]


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_keys_namespace_holds_the_keys_out_of_tenant_reach(helm: str, mode: str) -> None:
    """docs/secrets.md, "Who can read what": the keys namespace is made (and kept on
    uninstall), and the only bindings in it are the operator's and the gateway's. The chart
    defines no role for tenant users; the built-in edit/admin roles bound in the release
    namespace reach no further than it."""
    objects = render(helm, f"mode={mode}")
    namespace = one(objects, "Namespace", KEYS_NAMESPACE)
    assert namespace["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert len(by_kind(objects, "Namespace")) == 1
    in_keys = [o for o in objects if (o["metadata"].get("namespace") == KEYS_NAMESPACE)]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in in_keys) == [
        ("Role", f"{FULLNAME}-gateway-keys"),
        ("Role", f"{FULLNAME}-operator-keys"),
        ("RoleBinding", f"{FULLNAME}-gateway-keys"),
        ("RoleBinding", f"{FULLNAME}-operator-keys"),
    ]
    subjects = [s for o in by_kind(in_keys, "RoleBinding") for s in o["subjects"]]
    assert subjects == [
        {"kind": "ServiceAccount", "name": f"{FULLNAME}-{component}", "namespace": NAMESPACE}
        for component in ("operator", "gateway")
    ]
    # No role of the chart's aggregates into the built-in ones, or grants Secrets to people.
    for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
        labels = role["metadata"].get("labels") or {}
        assert not any("aggregate-to" in label for label in labels), role["metadata"]["name"]
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        assert all(s["kind"] == "ServiceAccount" for s in binding["subjects"])
    # Both processes are told where the keys are.
    assert env_of(objects, "operator")["DOCRELAY_KEYS_NAMESPACE"] == KEYS_NAMESPACE
    assert env_of(objects, "gateway")["DOCRELAY_GATEWAY_KEYS_NAMESPACE"] == KEYS_NAMESPACE


def test_keys_namespace_can_be_named_and_left_to_you(helm: str) -> None:
    objects = render(helm, "sealing.keysNamespace=vault-a", "sealing.createKeysNamespace=false")
    assert by_kind(objects, "Namespace") == []
    assert role_grants(objects, f"{FULLNAME}-operator", "vault-a")["Role"] == grants(
        OPERATOR_KEYS_RULES
    )
    assert role_grants(objects, f"{FULLNAME}-gateway", "vault-a")["Role"] == grants(
        GATEWAY_KEYS_RULES
    )
    assert env_of(objects, "operator")["DOCRELAY_KEYS_NAMESPACE"] == "vault-a"
    assert env_of(objects, "gateway")["DOCRELAY_GATEWAY_KEYS_NAMESPACE"] == "vault-a"
    # Never the release namespace, never too long, never a bad name.
    assert "must not be the release namespace" in schema_refusal(
        helm, f"sealing.keysNamespace={NAMESPACE}", "-n", NAMESPACE
    )
    long = "n" * 50
    assert "set sealing.keysNamespace" in schema_refusal(helm, "mode=tenant", "-n", long)
    assert "keysNamespace" in schema_refusal(helm, "sealing.keysNamespace=Not_A_Name")
    assert "keysNamespaces" in schema_refusal(helm, "sealing.keysNamespaces=x")


@pytest.mark.parametrize(("mode", "scope"), [("tenant", "Role"), ("cluster", "ClusterRole")])
def test_connected_account_rules_in_both_modes(helm: str, mode: str, scope: str) -> None:
    """docs/pipedream.md, "Permissions": the operator writes account status and reads the
    Pipedream Secret by name; the gateway reads accounts (and creates or repoints them for
    Pipedream's connection webhook), that Secret by name and ConfigMaps (files). Cluster
    mode: in the ClusterRoles, so every tenant namespace is covered."""
    objects = render(helm, f"mode={mode}")
    operator = role_grants(objects, f"{FULLNAME}-operator")[scope]
    assert {
        ("docrelay.io", "connectedaccounts/status", "get", "*"),
        ("docrelay.io", "connectedaccounts/status", "patch", "*"),
        ("docrelay.io", "connectedaccounts", "get", "*"),
        ("", "secrets", "get", PIPEDREAM_SECRET),
    } <= operator
    assert ("docrelay.io", "connectedaccounts", "patch", "*") not in operator  # status only
    gateway = role_grants(objects, f"{FULLNAME}-gateway")[scope]
    assert {
        ("docrelay.io", "connectedaccounts", "get", "*"),
        ("", "configmaps", "get", "*"),
        ("", "secrets", "get", PIPEDREAM_SECRET),
    } <= gateway
    # Pipedream's connection webhook creates or repoints accounts; nothing else, no status.
    assert {g[2] for g in gateway if g[1] == "connectedaccounts"} == {"get", "create", "patch"}
    assert not {g for g in gateway if g[1] == "connectedaccounts/status"}
    # Neither may read other Secrets, or list any.
    for grants_ in (operator, gateway):
        assert ("", "secrets", "get", "*") not in grants_
        assert ("", "secrets", "list", "*") not in grants_
    # The same account rules the cluster tests and the demo run with (devkit.rbac).
    account_grants = {
        g for g in grants(TENANT_RULES) if "connectedaccounts" in g[1] or PIPEDREAM_SECRET in g
    }
    assert account_grants <= operator
    gateway_accounts = {
        (g, r, v) for g, r, v, _ in grants(GATEWAY_RULES) if r == "connectedaccounts"
    }
    assert gateway_accounts == {(g, r, v) for g, r, v, _ in gateway if r == "connectedaccounts"}


def test_every_rbac_rule_has_a_why_comment() -> None:
    for template in sorted((CHART / "templates").glob("rbac-*.yaml")):
        lines = template.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{template.name}:{index + 1}"


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_run_service_account_has_no_rights(helm: str, mode: str) -> None:
    objects = render(helm, f"mode={mode}")
    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        names = {s["name"] for s in binding["subjects"]}
        assert RUN_SERVICE_ACCOUNT not in names
        assert all(s["kind"] == "ServiceAccount" for s in binding["subjects"])
    accounts = [
        o for o in by_kind(objects, "ServiceAccount") if o["metadata"]["name"] == "docrelay-run"
    ]
    if mode == "tenant":
        assert accounts[0]["automountServiceAccountToken"] is False
    else:
        assert accounts == []  # the operator makes it in each namespace


# --- webhooks, network policies, CRDs ----------------------------------------------------------


@pytest.mark.parametrize(("mode", "scope"), [("tenant", NAMESPACE), ("cluster", None)])
def test_webhook_configurations_match_the_operators(
    helm: str, mode: str, scope: str | None
) -> None:
    """The operator builds these (it creates them where no chart did) and patches their
    clientConfig at start: the chart must render the same webhooks."""
    objects = render(helm, f"mode={mode}")
    service = {"namespace": NAMESPACE, "name": f"{FULLNAME}-webhook", "port": 443}
    for built in webhook_configurations(namespace=scope, ca_bundle="X", service=service):
        rendered = one(objects, built["kind"], built["metadata"]["name"])
        for webhook in built["webhooks"]:
            del webhook["clientConfig"]["caBundle"]
        assert rendered["webhooks"] == built["webhooks"]


def test_webhooks_can_be_left_to_you(helm: str) -> None:
    objects = render(helm, "webhooks.create=false")
    assert not by_kind(objects, "MutatingWebhookConfiguration")
    assert all("webhooks" not in o["metadata"]["name"] for o in by_kind(objects, "ClusterRole"))


def test_network_policies(helm: str) -> None:
    objects = render(helm)
    attempt = RunAttempt(
        namespace=NAMESPACE,
        run="r",
        run_uid="u",
        attempt=1,
        integration="i",
        revision="v",
        code_config_map="c",
        code_key="handler.py",
        code_hash="sha256:" + "0" * 64,
        event={},
        idempotency_key="k",
        timeout_seconds=60,
    )
    runs = one(objects, "NetworkPolicy", f"{FULLNAME}-runs")["spec"]
    selector = runs["podSelector"]["matchLabels"]
    assert selector.items() <= run_labels(attempt).items()
    assert runs["policyTypes"] == ["Ingress", "Egress"] and runs["ingress"] == []
    ports = [[p["port"] for p in rule["ports"]] for rule in runs["egress"]]
    assert ports == [[53, 53], [8090, 3128]]  # cluster DNS; the broker and the egress proxy
    operator = one(objects, "NetworkPolicy", f"{FULLNAME}-operator")["spec"]
    assert operator["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9443}]}]
    limited = render(helm, "networkPolicy.apiServerCIDRs={10.0.0.1/32}")
    operator = one(limited, "NetworkPolicy", f"{FULLNAME}-operator")["spec"]
    assert operator["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    gateway = one(objects, "NetworkPolicy", f"{FULLNAME}-gateway")["spec"]
    run_pods = {
        "app.kubernetes.io/component": "run",
        "app.kubernetes.io/managed-by": selector["app.kubernetes.io/managed-by"],
    }
    assert gateway["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8090}]},
        {  # the egress proxy: run pods only
            "ports": [{"protocol": "TCP", "port": 3128}],
            "from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": run_pods}}],
        },
    ]
    # The operator and the gateway reach Pipedream (443): their egress is not restricted.
    # Run pods' egress stays DNS and the broker (asserted above): never Pipedream.
    assert operator["policyTypes"] == gateway["policyTypes"] == ["Ingress"]
    assert not any(443 in p for p in ports)
    assert not by_kind(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy")


def test_crd_copies_are_current() -> None:
    assert chart_crds.stale() == [], "run `make chart-crds`"


def test_crds_kept_on_uninstall_and_optional(helm: str) -> None:
    crds = by_kind(render(helm), "CustomResourceDefinition")
    assert len(crds) == len(list((REPO / "crds").glob("*.yaml"))) == 6
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        source = yaml.safe_load(
            (REPO / "crds" / f"docrelay.io_{crd['spec']['names']['plural']}.yaml").read_text()
        )
        assert crd["spec"] == source["spec"]
    assert not by_kind(render(helm, "crds.install=false"), "CustomResourceDefinition")


def test_schema_closes_every_section_and_matches_values() -> None:
    """Every mapping of values.yaml is a schema object with additionalProperties false (or a
    free map of strings, like nodeSelector), and the two name the same keys."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        if node.get("type") != "object" or "properties" not in node:
            return
        assert node.get("additionalProperties") is False, path
        assert set(value) <= set(node["properties"]), path
        if value:  # an empty mapping (certManager.issuerRef) is an optional one
            assert set(node["properties"]) == set(value), f"{path}: schema and values differ"
        for key, child in node["properties"].items():
            if key in value:
                walk(child, value[key], f"{path}.{key}")

    walk(schema, values, "values")


def test_notes_give_the_next_steps(helm: str) -> None:
    out = subprocess.run(
        [helm, "install", "--dry-run=client", RELEASE, str(CHART), "-n", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    notes = out[out.index("NOTES:") :]
    for step in (
        "rollout status deploy/acme-docrelay-operator",
        f"kubectl -n {KEYS_NAMESPACE} get secret docrelay-sealing-keys",
        "create secret generic docrelay-platform",
        "create secret generic docrelay-pipedream",
        "--from-literal=client_secret=<client secret>",
        "gateway.publicUrl",
        "docrelay secret set",
        "apply -f examples/integration-minimal.yaml",
        "docrelay subscribe",
        "create secret generic docrelay-agent",  # the agent is off: how to turn it on
    ):
        assert step in notes, step


def test_the_conversation_turns_policy_is_per_tenant_and_can_be_left_out(helm: str) -> None:
    """agent.turnPolicy: a tenant release's policy is named for its namespace and binds only
    there (two tenants' releases cannot collide); cluster mode binds everywhere; off, none."""
    tenant = render(helm)
    (policy,) = by_kind(tenant, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(tenant, "ValidatingAdmissionPolicyBinding")
    assert policy["metadata"]["name"] == f"docrelay-conversation-turns.{NAMESPACE}"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": NAMESPACE}
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert [r["resources"] for r in rules] == [["integrationconversations"]]  # not the status
    assert "check('patch')" in policy["spec"]["validations"][0]["expression"]

    cluster = render(helm, "mode=cluster")
    (binding,) = by_kind(cluster, "ValidatingAdmissionPolicyBinding")
    assert binding["metadata"]["name"] == "docrelay-conversation-turns"
    assert "matchResources" not in binding["spec"]

    off = render(helm, "agent.turnPolicy.create=false")
    assert not by_kind(off, "ValidatingAdmissionPolicy")
    assert not by_kind(off, "ValidatingAdmissionPolicyBinding")
