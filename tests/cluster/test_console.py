"""The console against the real control plane and the operator, through its HTTP interface
(the browser tier drives the same pages in Chromium): what a signed-in user sees, what the
actions do, and what RBAC refuses when the console forwards a read-only user's token."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from kubernetes import client

from docrelay.console.app import create_app
from docrelay.console.session import COOKIE, session_key
from docrelay.kube import Kube, load_configuration
from tests.cluster.harness import (
    GROUP,
    PYTHONPATH,
    VERSION,
    Tenant,
    canary,
    condition,
    create_run,
    custom,
    eventually,
    free_port,
    get_run,
    make_integration,
    wait_finished,
)

pytestmark = pytest.mark.cluster

SEAL_JS = Path(__file__).resolve().parents[2] / "operator/docrelay/console/static/seal.js"
CODE_FAILS = """
def lambda_handler(event, context):
    print("<script>alert('log')</script>")
    raise ValueError("the total is missing")
"""
SIGN_IN = "sign-in-secret"


def console(namespace: str, **options: Any) -> TestClient:
    if options.get("auth", "kubeconfig") == "kubeconfig":
        kube = Kube.connect(os.environ["KUBECONFIG"])
        app = create_app(
            namespace=namespace,
            auth="kubeconfig",
            kube=kube,
            login_secret=SIGN_IN,
            record_bodies=True,
            **options,
        )
        browser = TestClient(app, follow_redirects=False)
        assert browser.get("/login", params={"token": SIGN_IN}).status_code == 303
        return browser
    app = create_app(
        namespace=namespace,
        base_configuration=load_configuration(os.environ["KUBECONFIG"]),
        **options,
    )
    return TestClient(app, follow_redirects=False)


def token_sign_in(browser: TestClient, token: str) -> Response:
    """What the sign-in page does: its form carries the token tied to its sign-in cookie."""
    form = browser.get("/login").text
    login = re.search(r'name="login" value="([^"]+)"', form)
    assert login, "the sign-in page has no login token"
    return browser.post("/login", data={"login": html.unescape(login[1]), "token": token})


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no write form"
    return html.unescape(match[1])


def seal_in_node(spki: str, namespace: str, integration: str, key: str, value: str) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js")
    script = (
        f"import {{ sealValue }} from {json.dumps(SEAL_JS.as_uri())};\n"
        "let text = '';\n"
        "for await (const chunk of process.stdin) text += chunk;\n"
        "const [spki, ns, integ, key, value] = JSON.parse(text);\n"
        "console.log((await sealValue(spki, ns, integ, key, value)).sealed);\n"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps([spki, namespace, integration, key, value]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )  # the value goes through stdin, never argv
    return done.stdout.strip()


@pytest.fixture
def failed_run(api: client.ApiClient, namespace: str, tenant: Tenant) -> Iterator[str]:
    make_integration(api, namespace, "orders", CODE_FAILS, retry={"maxAttempts": 1})
    name = create_run(api, namespace, "orders", "doc-7")
    status = wait_finished(api, namespace, name)
    assert status["phase"] in ("Failed", "DeadLettered"), status
    yield name


def test_pages_show_integrations_runs_and_a_failed_run_then_replay(
    api: client.ApiClient, namespace: str, failed_run: str
) -> None:
    browser = console(namespace)
    # The success rate: one run, failed (the operator writes an Integration's counters at
    # most once a second, so the listing shows it shortly after the run ended).
    listing = eventually(
        lambda: browser.get("/").text, lambda text: "0% of 1" in text, "the run counted"
    )
    assert 'href="/integrations/orders"' in listing
    assert "DocumentParseCompleted" in listing

    page = browser.get("/integrations/orders").text
    deployed = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrations", "orders"
    )["status"]["deployedRevision"]
    assert f"Deployed revision: <code>{deployed}</code>" in page
    assert failed_run in page  # its recent runs
    assert 'id="add-secret"' in page and "data-spki=" in page  # the operator's certificate

    runs = browser.get("/runs", params={"phase": "Failed"}).text
    runs_any = browser.get("/runs").text
    assert failed_run in runs_any
    phase = get_run(api, namespace, failed_run)["status"]["phase"]
    assert (failed_run in runs) == (phase == "Failed")

    run_page = browser.get(f"/runs/{failed_run}").text
    assert "ValueError" in run_page or "the total is missing" in run_page
    assert "&lt;script&gt;alert(&#x27;log&#x27;)&lt;/script&gt;" in run_page  # the log, inert
    assert "<script>alert" not in run_page
    assert "Replay this run" in run_page

    refused = browser.post(f"/runs/{failed_run}/replay", data={})
    assert refused.status_code == 403  # no CSRF token
    replayed = browser.post(f"/runs/{failed_run}/replay", data={"csrf": csrf_of(run_page)})
    assert replayed.status_code == 303
    new = replayed.headers["location"].removeprefix("/runs/")
    assert get_run(api, namespace, new)["spec"]["replayOf"] == failed_run
    assert f"Replay of {failed_run}." in browser.get(f"/runs/{new}").text


def test_add_secret_sends_only_ciphertext_and_the_operator_opens_it(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    make_integration(api, namespace, "orders", "def lambda_handler(e, c):\n    return 1\n")
    browser = console(namespace)
    page = browser.get("/integrations/orders").text
    spki = html.unescape(re.search(r'data-spki="([^"]+)"', page)[1])  # type: ignore[index]
    value = canary()
    sealed = seal_in_node(spki, namespace, "orders", "API_KEY", value)
    response = browser.post(
        "/integrations/orders/secrets",
        data={"csrf": csrf_of(page), "key": "API_KEY", "encryptedValue": sealed},
    )
    assert response.status_code == 303, response.text
    secret = eventually(
        lambda: custom(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, "integrationsecrets"
        )["items"],
        lambda items: bool(items) and condition(items[0], "Ready").get("status") == "True",
        "the operator to open the secret the browser sealed",
    )[0]
    assert secret["status"]["state"] == "Active"
    page = browser.get("/integrations/orders").text
    assert secret["status"]["fingerprint"] in page and "Active" in page
    received = b"".join(browser.app.state.received)  # type: ignore[attr-defined]
    assert value.encode() not in received
    assert base64.b64encode(value.encode()) not in received
    assert value not in json.dumps(secret)

    sealed_for_other = seal_in_node(spki, namespace, "orders", "OTHER", value)
    moved = browser.post(
        "/integrations/orders/secrets",
        data={"csrf": csrf_of(page), "key": "API_KEY", "encryptedValue": sealed_for_other},
    )
    assert moved.status_code == 409
    assert "sealed for another namespace, integration or key" in moved.text


def read_only_token(api: client.ApiClient, namespace: str) -> str:
    """A ServiceAccount that may get, list and watch docrelay's objects, config maps and pods
    in `namespace`, and nothing else."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="viewer"))
    )
    read = ["get", "list", "watch"]
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="viewer"),
            rules=[
                client.V1PolicyRule(api_groups=["docrelay.io"], resources=["*"], verbs=read),
                client.V1PolicyRule(
                    api_groups=[""], resources=["configmaps", "pods", "pods/log"], verbs=read
                ),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="viewer"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="viewer"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="viewer", namespace=namespace)
            ],
        ),
    )
    request = core.create_namespaced_service_account_token(
        "viewer", namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        ),
    )  # fmt: skip
    return str(request.status.token)


def test_a_read_only_user_sees_but_cannot_deploy_replay_or_add_secrets(
    api: client.ApiClient, namespace: str, failed_run: str
) -> None:
    token = read_only_token(api, namespace)
    browser = console(namespace, auth="token")
    assert token_sign_in(browser, "not-a-token").status_code == 401
    signed_in = token_sign_in(browser, token)
    assert signed_in.status_code == 303
    assert "HttpOnly" in signed_in.headers["set-cookie"]
    listing = browser.get("/").text
    assert f"system:serviceaccount:{namespace}:viewer" in listing
    assert 'href="/integrations/orders"' in listing
    page = browser.get("/integrations/orders").text
    csrf = csrf_of(page)
    revision = re.search(r'name="revision" value="([^"]+)"', page)
    target = revision[1] if revision else "orders-none"
    deploy = browser.post("/integrations/orders/deploy", data={"csrf": csrf, "revision": target})
    replay = browser.post(f"/runs/{failed_run}/replay", data={"csrf": csrf})
    sealed = base64.b64encode(b"DRS1" + b"\0" * 40).decode()
    secret = browser.post(
        "/integrations/orders/secrets",
        data={"csrf": csrf, "key": "API_KEY", "encryptedValue": sealed},
    )
    assert replay.status_code == 403 and "403 (forbidden)" in replay.text
    assert deploy.status_code in (403, 409)  # forbidden, or refused earlier by a guard rail
    assert secret.status_code in (403, 409)
    assert (
        custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "integrationsecrets")[
            "items"
        ]
        == []
    )
    runs = custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, "integrationruns")
    assert [r["metadata"]["name"] for r in runs["items"]] == [failed_run]


def test_two_replicas_sharing_the_session_key_serve_one_token_session(
    api: client.ApiClient, namespace: str, failed_run: str
) -> None:
    token = read_only_token(api, namespace)
    key = session_key(b"replicas-share-this-session-key-material")
    first, second = (console(namespace, auth="token", session_key=key) for _ in range(2))
    assert token_sign_in(first, token).status_code == 303
    cookie = first.cookies[COOKIE]
    assert token not in cookie  # the token travels sealed
    second.cookies.set(COOKIE, cookie)
    listing = second.get("/")  # the other replica acts with the user's token
    assert listing.status_code == 200
    assert f"system:serviceaccount:{namespace}:viewer" in listing.text
    assert 'href="/integrations/orders"' in listing.text
    stranger = console(namespace, auth="token")  # another key
    stranger.cookies.set(COOKIE, cookie)
    assert stranger.get("/").status_code == 401


def test_another_namespace_is_invisible(
    api: client.ApiClient, namespace: str, failed_run: str
) -> None:
    token = read_only_token(api, namespace)
    other = f"{namespace}-b"[:63]
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=other))
    )
    try:
        custom(api).create_namespaced_custom_object(
            GROUP, VERSION, other, "integrations",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Integration",
             "metadata": {"name": "secret-plans"},
             "spec": {"workspace": "w", "documentType": "d", "trigger": "DocumentValidated",
                      "code": "def lambda_handler(e, c):\n    return 1\n"}},
        )  # fmt: skip
        browser = console(other, auth="token")
        assert token_sign_in(browser, token).status_code == 303
        response = browser.get("/")
        assert response.status_code == 403
        assert "secret-plans" not in response.text
        assert browser.get("/integrations/secret-plans").status_code == 403
    finally:
        client.CoreV1Api(api).delete_namespace(other)


def test_code_history_diff_deploy_and_revert(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    make_integration(api, namespace, "orders", "def lambda_handler(e, c):\n    return 'one'\n")

    def integration() -> dict[str, Any]:
        return custom(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "integrations", "orders"
        )

    first = integration()["status"]["deployedRevision"]
    custom(api).patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "integrations",
        "orders",
        {"spec": {"code": "def lambda_handler(e, c):\n    return 'two'\n"}},
    )
    second = eventually(
        lambda: integration()["status"].get("deployedRevision"),
        lambda deployed: deployed not in (None, first),
        "the new code's revision to be deployed",
    )
    browser = console(namespace)
    page = browser.get("/integrations/orders", params={"diff": first}).text
    assert f"Changes from {second} to {first}" in page
    assert '<span class="del">-    return &#x27;two&#x27;</span>' in page
    assert '<span class="add">+    return &#x27;one&#x27;</span>' in page

    unknown = browser.post(
        "/integrations/orders/deploy", data={"csrf": csrf_of(page), "revision": "orders-nope"}
    )
    assert unknown.status_code == 409  # the CLI's guard rail, in the CLI's words
    assert "revision orders-nope of integration orders not found" in unknown.text

    deployed = browser.post(
        "/integrations/orders/deploy", data={"csrf": csrf_of(page), "revision": first}
    )
    assert deployed.status_code == 303
    eventually(
        integration,
        lambda o: o["status"].get("deployedRevision") == first,
        "the operator to deploy the older revision",
    )
    page = browser.get("/integrations/orders").text
    assert f"Deploy of revision {first} requested" in page
    assert f"Revert to {second}" in page
    reverted = browser.post("/integrations/orders/revert", data={"csrf": csrf_of(page)})
    assert reverted.status_code == 303
    record = eventually(
        integration,
        lambda o: o["status"].get("deployedRevision") == second,
        "the operator to revert",
    )["status"]["history"][-1]
    assert record["reason"] == "Reverted"
    assert record["previousRevision"] == first


def test_a_test_run_on_an_existing_document_is_followed_live(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    make_integration(api, namespace, "orders", "def lambda_handler(e, c):\n    return 'ok'\n")
    browser = console(namespace)
    page = browser.get("/integrations/orders").text
    assert 'id="test-document"' in page
    started = browser.post(
        "/integrations/orders/test", data={"csrf": csrf_of(page), "document": "doc-5"}
    )
    assert started.status_code == 303
    name = started.headers["location"].removeprefix("/runs/")
    spec = get_run(api, namespace, name)["spec"]
    assert (spec["test"], spec["documentIdentifier"]) == (True, "doc-5")
    running = browser.get(f"/runs/{name}").text
    assert "Test run on document doc-5." in running
    assert f'data-events="/events/runs/{name}"' in running  # followed live until it ends
    assert wait_finished(api, namespace, name)["phase"] == "Succeeded"
    finished = browser.get(f"/runs/{name}").text
    assert "data-events=" not in finished
    assert "Replay this run" not in finished and "Fix in Chat" not in finished  # a test run
    overview = browser.get("/integrations/orders").text
    assert "Duration of 0 finished run(s)" in overview  # test runs do not count


def test_docrelay_console_prints_a_sign_in_link_that_alone_opens_a_session(
    api: client.ApiClient, namespace: str
) -> None:
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "integrations",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Integration", "metadata": {"name": "orders"},
         "spec": {"workspace": "w", "documentType": "d", "trigger": "DocumentValidated",
                  "code": "def lambda_handler(e, c):\n    return 1\n"}},
    )  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "docrelay.cli", "console", "-n", namespace, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith(f"docrelay console for namespace {namespace}, as ")
        link = lines[1].strip()
        assert link.startswith(f"http://127.0.0.1:{port}/login?token=")
        base = f"http://127.0.0.1:{port}"
        eventually(
            lambda: httpx.get(f"{base}/login", timeout=5),
            lambda r: r.status_code == 401,
            "the console to listen",
            not_yet=lambda exc: isinstance(exc, httpx.HTTPError),
        )
        assert httpx.get(f"{base}/", timeout=5).status_code == 401  # no link, no session
        wrong = httpx.get(link[:-4] + "xxxx", timeout=5)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        with httpx.Client(base_url=base, timeout=10) as browser:
            signed_in = browser.get(link)
            assert signed_in.status_code == 303
            cookie = signed_in.headers["set-cookie"]
            assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
            listing = browser.get("/")
            assert listing.status_code == 200
            assert 'href="/integrations/orders"' in listing.text
            assert "script-src 'self'" in listing.headers["content-security-policy"]
    finally:
        process.terminate()
        process.wait(timeout=10)
