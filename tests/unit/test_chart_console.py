"""The chart's console (`console.enabled`, off by default), rendered with `helm template`: a pod
that holds no credential (its ServiceAccount bound to nothing, no token mounted), signing
users in with their own tokens, hardened like every docrelay pod."""

from __future__ import annotations

import base64
import subprocess

from tests.unit.test_chart import CHART, FULLNAME, NAMESPACE, RELEASE, by_kind, helm, one, render

__all__ = ["helm"]  # the fixture

CONSOLE = f"{FULLNAME}-console"


def test_the_console_is_off_by_default(helm: str) -> None:
    objects = render(helm)
    assert not [
        o
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "console"
    ]


def test_the_console_pod_holds_no_credential_and_signs_users_in_with_theirs(helm: str) -> None:
    objects = render(helm, "console.enabled=true")
    account = one(objects, "ServiceAccount", CONSOLE)
    assert account["automountServiceAccountToken"] is False
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        bound = [
            s
            for b in by_kind(objects, kind)
            for s in b.get("subjects") or []
            if s.get("name") == CONSOLE
        ]
        assert bound == [], f"the console's ServiceAccount is bound by a {kind}"
    pod = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == CONSOLE
    assert pod["automountServiceAccountToken"] is False
    assert [v.get("configMap", {}).get("name") for v in pod["volumes"]] == [
        None,
        "kube-root-ca.crt",
        None,
    ]  # a tmp dir, the cluster's CA and the session key: no token
    assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == [
        f"{CONSOLE}-session"
    ]
    [container] = pod["containers"]
    args = container["args"]
    assert args[:3] == ["console", "--auth", "token"]
    assert args[args.index("-n") + 1] == NAMESPACE
    assert args[args.index("--operator-namespace") + 1] == NAMESPACE
    assert "--secure-cookies" in args
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = one(objects, "Service", CONSOLE)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 8080


def test_the_console_serves_tls_from_a_secret(helm: str) -> None:
    objects = render(helm, "console.enabled=true", "console.tls.secretName=console-tls")
    pod = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--tls-cert") + 1] == "/var/run/docrelay/tls/tls.crt"
    assert "--secure-cookies" not in args  # TLS makes them Secure
    assert {"name": "tls", "secret": {"secretName": "console-tls"}} in pod["volumes"]


def test_the_console_may_show_another_namespace(helm: str) -> None:
    objects = render(helm, "console.enabled=true", "console.namespace=team-b")
    args = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("-n") + 1] == "team-b"


def test_pipedream_reports_connections_to_the_gateways_public_url(helm: str) -> None:
    """docs/pipedream.md, "The connection webhook": with gateway.publicUrl the console makes
    Connect links whose webhook goes to the gateway; without it, no --gateway-url (the console
    creates the account on the user's way back)."""
    objects = render(helm, "console.enabled=true", "gateway.publicUrl=https://docrelay.example.com")
    args = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--gateway-url") + 1] == "https://docrelay.example.com"
    objects = render(helm, "console.enabled=true")
    args = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--gateway-url" not in args


def test_the_schema_refuses_a_console_typo(helm: str) -> None:
    refused = subprocess.run(
        [helm, "template", RELEASE, str(CHART), "--set", "console.enabeld=true"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "enabeld" in refused.stderr


def test_helm_lint_with_the_console(helm: str) -> None:
    done = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--set", "console.enabled=true"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_replica_seals_sessions_with_one_key_kept_in_a_secret(helm: str) -> None:
    objects = render(helm, "console.enabled=true", "console.replicas=2")
    deployment = one(objects, "Deployment", CONSOLE)
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--session-key-file") + 1] == "/var/run/docrelay/session/key"
    key = one(objects, "Secret", f"{CONSOLE}-session")
    assert len(base64.b64decode(key["data"]["key"])) >= 32
    assert {"name": "session-key", "mountPath": "/var/run/docrelay/session", "readOnly": True} in (
        pod["containers"][0]["volumeMounts"]
    )
    # a Secret of one's own instead: the chart makes none
    objects = render(helm, "console.enabled=true", "console.sessionKey.secretName=my-key")
    assert not [o for o in objects if o["kind"] == "Secret" and "console" in o["metadata"]["name"]]
    pod = one(objects, "Deployment", CONSOLE)["spec"]["template"]["spec"]
    assert {"name": "session-key", "secret": {"secretName": "my-key", "items": [
        {"key": "key", "path": "key"}]}} in pod["volumes"]  # fmt: skip
