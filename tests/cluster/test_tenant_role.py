"""The chart's tenant role, `docrelay-editor` (docs/secrets.md, "Who can read what"), checked
by the real API server: a user bound to it does everything a tenant does with docrelay and
cannot open a live run pod (exec, attach, port-forward), read a Secret, or make a pod or Job.
The built-in `edit` role, bound the same way, can: the reason the chart ships its own role.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config

from tests.cluster.harness import (
    GROUP,
    VERSION,
    chart_objects,
    eventually,
    integration_manifest,
    kubectl,
    run_manifest,
    token_kubeconfig,
)

# (API group, resource, subresource, verb): what a tenant does with docrelay.
TENANT_NEEDS = [
    (GROUP, "integrations", "", "create"),
    (GROUP, "integrations", "", "patch"),
    (GROUP, "integrations", "", "delete"),
    (GROUP, "integrationrevisions", "", "patch"),  # deploy, revert
    (GROUP, "integrationruns", "", "create"),  # test, replay
    (GROUP, "integrationruns", "", "watch"),
    (GROUP, "integrationsecrets", "", "create"),  # docrelay secret set (sealed)
    (GROUP, "connectedaccounts", "", "create"),
    (GROUP, "integrationconversations", "", "patch"),  # docrelay chat
    ("", "configmaps", "", "get"),  # stored logs, outbound records, the certificate
    ("", "pods", "", "list"),
    ("", "pods", "log", "get"),  # docrelay logs of a live run
    ("batch", "jobs", "", "get"),
    ("", "events", "", "list"),
]
# What would open a run's secret values: its decrypted env in a live pod, the Secrets of the
# namespace, a pod or Job of one's own claiming a run.
OPENS_SECRETS = [
    ("", "pods", "exec", "create"),
    ("", "pods", "exec", "get"),
    ("", "pods", "attach", "create"),
    ("", "pods", "portforward", "create"),
    ("", "pods", "ephemeralcontainers", "patch"),
    ("", "secrets", "", "get"),
    ("", "secrets", "", "list"),
    ("", "secrets", "", "watch"),
    ("", "pods", "", "create"),
    ("batch", "jobs", "", "create"),
    ("", "serviceaccounts", "token", "create"),
    (GROUP, "integrationruns", "status", "patch"),
]


def editor_role(namespace: str) -> dict:
    """The chart's docrelay-editor as `helm template` renders it for a release there."""
    (role,) = chart_objects(namespace, "rbac-editor.yaml")
    return role


def bound_user(api: client.ApiClient, ns: str, kind: str, role: str, tmp_path: Path) -> Path:
    """A ServiceAccount bound in `ns` to `role` as a platform team binds a person; its
    kubeconfig."""
    account = f"user-{role}"
    client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {"name": account}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
        },
    )
    return token_kubeconfig(api, ns, account, tmp_path / f"{account}.kubeconfig", ns)


def may(user: client.ApiClient, ns: str, group: str, resource: str, sub: str, verb: str) -> bool:
    attributes = {"group": group, "resource": resource, "verb": verb, "namespace": ns}
    if sub:
        attributes["subresource"] = sub
    review = client.AuthorizationV1Api(user).create_self_subject_access_review(
        {"spec": {"resourceAttributes": attributes}}
    )
    return bool(review.status.allowed)


def live_pod(api: client.ApiClient, ns: str) -> str:
    """A pod standing in for a run in progress: a secret value in its env, a line in its log."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run-pod"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python:3.11",
            "env": [{"name": "API_KEY", "value": "opened-secret-value"}],
            "command": ["python", "-u", "-c", "import time; print('exporting'); time.sleep(300)"],
        }]},
    })  # fmt: skip
    eventually(
        lambda: core.read_namespaced_pod("run-pod", ns).status.phase,
        lambda phase: phase == "Running",
        "the pod to run",
    )
    eventually(
        lambda: core.read_namespaced_pod_log("run-pod", ns),
        lambda log: "exporting" in log,
        "the pod to log",
    )
    return "run-pod"


def test_docrelay_editor_does_a_tenants_work_and_cannot_open_a_runs_secrets(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    role = editor_role(ns)
    assert (role["kind"], role["metadata"]["name"]) == ("Role", "docrelay-editor")
    client.RbacAuthorizationV1Api(api).create_namespaced_role(ns, role)
    editor_config = bound_user(api, ns, "Role", "docrelay-editor", tmp_path)
    editor = config.new_client_from_config(config_file=str(editor_config))

    # The API server's own answer, for each thing a tenant does and each door to a secret.
    assert [n for n in TENANT_NEEDS if not may(editor, ns, *n)] == []
    assert [n for n in OPENS_SECRETS if may(editor, ns, *n)] == []

    # And as the user meets it: applying an Integration and starting a run work...
    custom = client.CustomObjectsApi(editor)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "integrations", integration_manifest("export", "x = 1\n")
    )
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationruns", run_manifest(ns, "export", "doc1")
    )
    runs = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "integrationruns")
    assert len(runs["items"]) == 1
    # ...a live run's log can be read; exec, attach and port-forward into its pod and reading
    # Secrets are refused by the API server.
    pod = live_pod(api, ns)
    as_editor = ("--kubeconfig", str(editor_config), "-n", ns)
    assert kubectl(*as_editor, "logs", pod).stdout == "exporting\n"
    for args, subresource in (
        (["exec", pod, "--", "env"], "pods/exec"),
        (["attach", pod], "pods/attach"),
        (["port-forward", pod, "9999:80"], "pods/portforward"),
    ):
        refused = kubectl(*as_editor, *args, expect=1)
        assert "forbidden" in refused.stderr.lower(), (args, refused.stderr)
        assert f'cannot create resource "{subresource}"' in refused.stderr, refused.stderr
        assert "opened-secret-value" not in refused.stdout + refused.stderr
    refused = kubectl(*as_editor, "get", "secrets", expect=1)
    assert "Forbidden" in refused.stderr, refused.stderr
    shown = kubectl(*as_editor, "get", "pod", pod, "-o", "jsonpath={.metadata.name}")
    assert shown.stdout == pod  # the pod itself is visible (not its env's values: see below)


def test_the_built_in_edit_role_can_exec_into_a_run_pod_and_read_secrets(
    api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """What docs/secrets.md warns of: `edit` must not be granted to people who must not see
    secret values. The API server lets its exec through to the node (this local node serves
    no exec, so the error comes from the node, not from authorization)."""
    ns = namespace
    # The built-in roles are aggregated by the controller manager: filled once it has run.
    eventually(
        lambda: client.RbacAuthorizationV1Api(api).read_cluster_role("edit"),
        lambda found: any("pods/exec" in (rule.resources or []) for rule in found.rules or []),
        "the built-in edit role to be aggregated",
    )
    edit_config = bound_user(api, ns, "ClusterRole", "edit", tmp_path)
    edit = config.new_client_from_config(config_file=str(edit_config))
    assert may(edit, ns, "", "pods", "exec", "create")
    assert may(edit, ns, "", "secrets", "", "get")
    assert may(edit, ns, "", "pods", "", "create")
    pod = live_pod(api, ns)
    shown = kubectl("--kubeconfig", str(edit_config), "-n", ns, "exec", pod, "--", "env",
                    expect=None)  # fmt: skip
    assert "forbidden" not in shown.stderr.lower(), shown.stderr
    assert shown.stderr.strip(), "the node's own refusal"
