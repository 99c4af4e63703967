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
from docrelay.builders.run import RUN_SERVICE_ACCOUNT, RunAttempt, run_labels
from docrelay.builders.sealing import CERT_CONFIG_MAP, KEYS_SECRET, webhook_configurations
from docrelay.gateway.settings import GatewaySettings
from docrelay.settings import OperatorSettings
from tests.cluster.harness import TENANT_RULES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "docrelay"
RELEASE, NAMESPACE = "acme", "team-a"
FULLNAME = "acme-docrelay"


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


def role_grants(objects: list[dict[str, Any]], service_account: str) -> dict[str, set]:
    """What a ServiceAccount of the release is granted, per binding kind (Role, ClusterRole)."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"].endswith("Role")}
    out: dict[str, set] = {"Role": set(), "ClusterRole": set()}
    for binding in objects:
        if not binding["kind"].endswith("RoleBinding"):
            continue
        if not any(s["name"] == service_account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]
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


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("operatr.replicas=1", "operatr"),
        ("gateway.replicaz=3", "replicaz"),
        ("networkPolicy.dns.podselector.a=b", "podselector"),
        ("mode=cluster-wide", "mode"),
    ],
)
def test_schema_rejects_typos(helm: str, value: str, named: str) -> None:
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", value],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert named in result.stderr, result.stderr


def test_cert_manager_refused_with_a_reason(helm: str) -> None:
    result = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", "certManager.enabled=true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "certManager.enabled: not supported yet" in result.stderr


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
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator", "-n", NAMESPACE]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "webhook": 9443}
    service = one(objects, "Service", f"{FULLNAME}-webhook")
    assert service["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook"}]
    cluster = render(helm, "mode=cluster")
    container = one(cluster, "Deployment", f"{FULLNAME}-operator")["spec"]["template"]["spec"]
    assert container["containers"][0]["args"] == ["operator", "--all-namespaces"]


@pytest.mark.parametrize("mode", ["tenant", "cluster"])
def test_rendered_settings_are_valid(helm: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The env the chart gives each process is accepted by that process's own settings."""
    objects = render(helm, f"mode={mode}", "operator.metrics.enabled=true")
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
        else:
            assert settings.host == "0.0.0.0"
            assert settings.operator_namespace == NAMESPACE


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
    docs/secrets.md's sealing rules, with the key Secret's get/update limited to it by name."""
    base = grants(TENANT_RULES)
    sealing = {
        ("", "secrets", "get", KEYS_SECRET),
        ("", "secrets", "update", KEYS_SECRET),
        ("", "secrets", "create", "*"),
        ("", "configmaps", "get", "*"),
        ("", "configmaps", "create", "*"),
        ("", "configmaps", "update", "*"),
        ("docrelay.io", "integrationsecrets/status", "get", "*"),
        ("docrelay.io", "integrationsecrets/status", "patch", "*"),
    }
    return base | sealing


def test_tenant_operator_rbac_is_exactly_documented(helm: str) -> None:
    objects = render(helm)
    operator = role_grants(objects, f"{FULLNAME}-operator")
    assert operator["Role"] == documented_operator_grants()
    # The operator reads no Secret but its key Secret.
    assert {
        g for g in operator["Role"] if g[1] == "secrets" and g[2] in {"get", "list", "watch"}
    } == {("", "secrets", "get", KEYS_SECRET)}
    # Cluster-wide: get/update of this release's two webhook configurations, by name.
    name = f"docrelay-secrets.{NAMESPACE}"
    assert operator["ClusterRole"] == {
        ("admissionregistration.k8s.io", resource, verb, name)
        for resource in WEBHOOK_RESOURCES
        for verb in ("get", "update")
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
        assert role["metadata"]["namespace"] == NAMESPACE


def test_gateway_rbac_is_exactly_documented(helm: str) -> None:
    objects = render(helm)
    gateway = role_grants(objects, f"{FULLNAME}-gateway")
    assert gateway["Role"] == {
        ("docrelay.io", "integrations", "list", "*"),
        ("docrelay.io", "integrations", "watch", "*"),
        ("docrelay.io", "integrationruns", "create", "*"),
        ("", "secrets", "get", "docrelay-gateway-signing"),
        ("", "configmaps", "get", CERT_CONFIG_MAP),
    }
    assert gateway["ClusterRole"] == {("authentication.k8s.io", "tokenreviews", "create", "*")}


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
        for verb in ("get", "update")
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
    # The key Secret stays a namespaced grant, by name.
    assert operator["Role"] == {
        ("", "secrets", "get", KEYS_SECRET),
        ("", "secrets", "update", KEYS_SECRET),
    }
    gateway = role_grants(objects, f"{FULLNAME}-gateway")
    assert ("docrelay.io", "integrationruns", "create", "*") in gateway["ClusterRole"]


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
    """The operator replaces these objects with its own build at start (new caBundle): the
    chart must render the same, or the two would fight over them."""
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
    assert ports == [[53, 53], [8090]]
    operator = one(objects, "NetworkPolicy", f"{FULLNAME}-operator")["spec"]
    assert operator["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9443}]}]
    limited = render(helm, "networkPolicy.apiServerCIDRs={10.0.0.1/32}")
    operator = one(limited, "NetworkPolicy", f"{FULLNAME}-operator")["spec"]
    assert operator["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    gateway = one(objects, "NetworkPolicy", f"{FULLNAME}-gateway")["spec"]
    assert gateway["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8090}]}]
    assert not by_kind(render(helm, "networkPolicy.enabled=false"), "NetworkPolicy")


def test_crd_copies_are_current() -> None:
    assert chart_crds.stale() == [], "run `make chart-crds`"


def test_crds_kept_on_uninstall_and_optional(helm: str) -> None:
    crds = by_kind(render(helm), "CustomResourceDefinition")
    assert len(crds) == len(list((REPO / "crds").glob("*.yaml"))) == 5
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        source = yaml.safe_load(
            (REPO / "crds" / f"docrelay.io_{crd['spec']['names']['plural']}.yaml").read_text()
        )
        assert crd["spec"] == source["spec"]
    assert not by_kind(render(helm, "crds.install=false"), "CustomResourceDefinition")
