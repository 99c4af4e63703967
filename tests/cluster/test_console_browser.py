"""The console in a real browser (headless Chromium) against the real control plane, the
operator and the local node: add a secret whose value never reaches a server, watch a failing
run arrive live and replay it, and what a read-only user gets. Screenshots go to
.devkit/console-screenshots/ (docs/console.md shows two)."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client

from devkit.cluster import Cluster
from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.platform import PlatformState
from devkit.standins.server import serving
from docrelay.console.app import create_app
from docrelay.kube import Kube, load_configuration
from tests.cluster.browser import Browser, chromium, served
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Gateway,
    Tenant,
    canary,
    canary_crawl,
    cleanup_cluster_role,
    condition,
    create_run,
    custom,
    eventually,
    gateway_kubeconfig,
    get_run,
    make_integration,
    platform_secret,
    wait_finished,
)
from tests.cluster.test_agent import (  # noqa: F401  (stack: a fixture)
    BROKEN_CODE,
    HARBOURSIDE,
    Stack,
    agent_integration,
    stack,
)
from tests.cluster.test_console import CODE_FAILS, read_only_token
from tests.cluster.test_console_chat import answer
from tests.leakcheck import found

SIGN_IN = "browser-sign-in-secret"
CODE_OK = "def lambda_handler(event, context):\n    return 'ok'\n"


def console_app(namespace: str, gateway_url: str | None = None):  # type: ignore[no-untyped-def]
    kube = Kube.connect(os.environ["KUBECONFIG"])
    return create_app(
        namespace=namespace,
        auth="kubeconfig",
        kube=kube,
        login_secret=SIGN_IN,
        record_bodies=True,
        gateway_url=gateway_url,
    )


def sign_in(browser: Browser, base: str) -> None:
    browser.go(f"{base}/login?token={SIGN_IN}")
    browser.wait_for("return location.pathname === '/'", "the integrations page")


def test_add_secret_in_the_browser_reaches_no_server(
    api: client.ApiClient, namespace: str, tenant: Tenant, cluster: Cluster, tmp_path: Path
) -> None:
    make_integration(api, namespace, "orders", CODE_OK)
    value = canary()
    app = console_app(namespace)
    with served(app) as base, chromium() as browser:
        sign_in(browser, base)
        browser.screenshot("integrations")
        browser.go(f"{base}/integrations/orders")
        browser.type("#secret-key", "API_KEY")
        browser.type("#secret-value", value)
        browser.screenshot("add-secret")
        browser.click("#add-secret button[type=submit]")
        browser.wait_for(
            "return document.body.innerText.includes('Secret API_KEY added')", "the secret added"
        )
        secret = eventually(
            lambda: custom(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, "integrationsecrets"
            )["items"],
            lambda items: bool(items) and condition(items[0], "Ready").get("status") == "True",
            "the operator to open the secret sealed in the browser",
        )[0]
        assert secret["status"]["state"] == "Active"  # the operator opened it: the seal is right
        browser.go(f"{base}/runs")
        browser.go(f"{base}/integrations/orders")
        table = browser.text("#settings ~ .scroll")
        assert secret["status"]["fingerprint"] in table and "Active" in table
        browser.screenshot("integration-secrets")
    received = b"\n".join(app.state.received)
    assert b"encryptedValue=" in received  # the crawl below saw the write...
    assert value.encode() not in received  # ...and the value was not in it, in any form
    assert not found(received, [value])
    canary_crawl(cluster, [value], tenant.logs)


def test_watch_a_failing_run_arrive_live_and_replay_it(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    make_integration(api, namespace, "orders", CODE_FAILS, retry={"maxAttempts": 1})
    with served(console_app(namespace)) as base, chromium() as browser:
        sign_in(browser, base)
        browser.go(f"{base}/runs")
        browser.wait_for("return document.body.innerText.includes('No runs match')", "no runs")
        browser.run("window.notReloaded = true")  # gone if the page were loaded again
        name = create_run(api, namespace, "orders", "doc-9")
        wait_finished(api, namespace, name)
        phase = get_run(api, namespace, name)["status"]["phase"]
        browser.wait_for(
            "return document.querySelector('#live').innerText.includes(arguments[0]) && "
            "document.querySelector('#live').innerText.includes(arguments[1])",
            f"run {name} {phase} pushed to the list",
            name,
            phase,
        )
        assert browser.run("return window.notReloaded === true")  # updated in place (SSE)
        browser.screenshot("runs-live")
        browser.click(f"a[href='/runs/{name}']")
        browser.wait_for("return !!document.querySelector('pre.log')", "the run's log")
        assert "<script>alert('log')</script>" in browser.run(
            "return Array.from(document.querySelectorAll('pre.log')).map(e => e.textContent)"
            ".join('\\n')"
        )  # the log's markup shows as text...
        assert browser.run("return document.scripts.length") == 1  # ...and adds no script
        assert "the total is missing" in browser.text("main")  # the error
        browser.screenshot("run-failed")
        browser.click("form[action$='/replay'] button")
        browser.wait_for(
            "return document.body.innerText.includes(arguments[0])",
            "the replay's page",
            f"Replay of {name}.",
        )
        new = browser.url().rsplit("/", 1)[-1]
        assert get_run(api, namespace, new)["spec"]["replayOf"] == name


def test_read_only_user_in_the_browser_and_keyboard_and_phone_width(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    make_integration(api, namespace, "orders", CODE_OK)
    token = read_only_token(api, namespace)
    app = create_app(
        namespace=namespace,
        auth="token",
        base_configuration=load_configuration(os.environ["KUBECONFIG"]),
    )
    with served(app) as base, chromium() as browser:
        browser.go(f"{base}/")
        browser.wait_for("return location.pathname === '/login'", "the sign-in page")
        browser.type("#token", token)
        browser.click("form[action='/login'] button")
        browser.wait_for("return location.pathname === '/'", "the integrations page")
        assert f"system:serviceaccount:{namespace}:viewer" in browser.text("header")
        assert "orders" in browser.text("#live, main")
        # The keyboard: the first Tab reaches the skip link, which lands on the content.
        browser.press_tab()
        assert browser.run("return document.activeElement.textContent") == "Skip to content"
        browser.go(f"{base}/integrations/orders")
        browser.type("#secret-key", "API_KEY")
        browser.type("#secret-value", canary())
        browser.click("#add-secret button[type=submit]")
        browser.wait_for(
            "return document.body.innerText.includes('403 (forbidden)')", "the API's refusal"
        )
        browser.screenshot("read-only-refused")
        assert (
            custom(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, "integrationsecrets"
            )["items"]
            == []
        )
        # A phone's width: nothing wider than the screen but the tables' own scroll boxes.
        browser.size(390, 844)
        browser.go(f"{base}/integrations/orders")
        width = browser.run("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width
        browser.screenshot("phone-integration")


def test_fix_in_chat_in_the_browser_the_answer_arrives_live_then_approve(
    api: client.ApiClient,
    stack: Stack,  # noqa: F811
) -> None:
    ns = stack.ns
    agent_integration(
        api, ns, "fixme", code=BROKEN_CODE, instructions="Report each invoice's number.",
        secrets=[], retry={"maxAttempts": 1},
    )  # fmt: skip
    eventually(
        lambda: custom(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, "integrations", "fixme"
        ),
        lambda o: bool((o.get("status") or {}).get("deployedRevision")),
        "the inline code to be deployed",
    )
    failed = create_run(api, ns, "fixme", HARBOURSIDE)
    wait_finished(api, ns, failed)
    stack.llm.respond_with(answer)
    with served(console_app(ns)) as base, chromium() as browser:
        sign_in(browser, base)
        browser.go(f"{base}/runs/{failed}")
        browser.click(f"form[action='/runs/{failed}/fix-in-chat'] button")
        browser.wait_for("return location.pathname.startsWith('/chats/')", "the thread")
        browser.type("#chat-text", "Please fix this run.")
        browser.click("form[action$='/turns'] button[type=submit]:not([name])")
        browser.wait_for(
            "return document.body.innerText.includes('Please fix this run.')", "the user's turn"
        )
        browser.run("window.notReloaded = true")
        button = browser.wait_for(
            "const b = Array.from(document.querySelectorAll('button'))"
            ".find(b => b.textContent.startsWith('Approve and deploy'));"
            "return b ? b.textContent : null",
            "the agent's proposal, pushed live",
        )
        assert browser.run("return window.notReloaded === true")  # pushed, not reloaded
        assert "Pass" in browser.text("#live")
        browser.screenshot("chat-proposal")
        proposal = str(button).removeprefix("Approve and deploy ").strip()
        browser.click("input[value=Approve] ~ button")
        eventually(
            lambda: custom(api).get_namespaced_custom_object(
                GROUP, VERSION, ns, "integrations", "fixme"
            ),
            lambda o: (o.get("status") or {}).get("deployedRevision") == proposal,
            "the approved fix to be deployed",
            150,
        )


def test_pick_the_test_document_from_the_platform_by_workspace_and_type(
    api: client.ApiClient, namespace: str, tenant: Tenant, platform: PlatformState
) -> None:
    # The stand-in holds two invoices of this workspace and type, and a resume of another.
    platform_secret(api, namespace, platform)
    make_integration(
        api, namespace, "orders", CODE_OK, workspace="mEFayXdO", documentType="tVpGRBWd"
    )
    with served(console_app(namespace)) as base, chromium() as browser:
        sign_in(browser, base)
        browser.go(f"{base}/integrations/orders")
        browser.click("#pick-document")
        browser.wait_for("return !!document.querySelector('#pick-run')", "the platform's list")
        listed = browser.text("#pick-run")
        assert "northwind-NW-7731.pdf" in listed and "harbourside-INV-2025-0418.pdf" in listed
        assert "Amelia_Chen_CV.pdf" not in listed  # another workspace and type
        assert browser.run("return document.querySelector('#pick-workspace').value") == "mEFayXdO"
        browser.screenshot("test-run-pick-document")
        browser.click("label[for='doc-1']")  # the older invoice, by its file name
        browser.click("#pick-run button[type=submit]")
        browser.wait_for(
            "return document.body.innerText.includes('Test run on document XqLmNoPa.')",
            "the test run's page",
        )
        name = browser.url().rsplit("/", 1)[-1]
        spec = get_run(api, namespace, name)["spec"]
        assert (spec["test"], spec["documentIdentifier"]) == (True, "XqLmNoPa")
        assert wait_finished(api, namespace, name)["phase"] == "Succeeded"
        browser.wait_for(
            "return document.body.innerText.includes('Succeeded')", "the run followed to its end"
        )
        # Another workspace and every type: the resume, and no invoice
        browser.go(f"{base}/integrations/orders/test?workspace=kWpRsTuV&document_type=")
        browser.wait_for("return !!document.querySelector('#pick-run')", "the other list")
        assert "Amelia_Chen_CV.pdf" in browser.text("#pick-run")
        assert "northwind" not in browser.text("#pick-run")


def test_connect_an_account_through_pipedream_connect_and_see_it_healthy(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    pd = PipedreamStandin(client_secret=canary(header=True))
    with serving(pd.app) as connect, served(console_app(namespace)) as base, chromium() as browser:
        client.CoreV1Api(api).create_namespaced_secret(namespace, {
            "metadata": {"name": "docrelay-pipedream"},
            "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                           "project_id": pd.project_id, "environment": "development",
                           "url": connect.base_url},
        })  # fmt: skip
        old = pd.add_account("finance-team", "xero_accounting_api", environment="development")
        make_integration(api, namespace, "export", CODE_OK, connectedAccounts=["xero-finance"])
        sign_in(browser, base)
        browser.go(f"{base}/integrations/export#accounts")
        row = "return Array.from(document.querySelectorAll('tr'))" \
              ".find(r => r.innerText.includes('xero-finance')).innerText"  # fmt: skip
        assert "Missing" in browser.run(row)  # not connected yet
        assert browser.run("return document.querySelector('#connect-account').value") == (
            "xero-finance"
        )  # the form offers the missing account
        browser.type("#connect-app", "xero_accounting_api")
        browser.type("#connect-external_user", "finance-team")
        browser.click("#connect-form button[type=submit]")
        browser.wait_for("return !!document.querySelector('#connect-link')", "the Connect link")
        link = browser.run("return document.querySelector('#connect-link').href")
        assert link.startswith(f"{connect.base_url}/_static/connect.html?token=ctok_")
        assert link.endswith("&app=xero_accounting_api")
        browser.click("#connect-link")  # to Pipedream's page (the stand-in's)
        browser.wait_for("return !!document.querySelector('#connect')", "Pipedream's page")
        browser.click("#connect")  # Pipedream connects the account, then sends us back
        browser.wait_for(
            "return document.body.innerText.includes('as ConnectedAccount xero-finance')",
            "back in the console, connected",
        )
        assert browser.url().startswith(f"{base}/integrations/export")
        (new,) = pd.connected
        spec = custom(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "connectedaccounts", "xero-finance"
        )["spec"]
        assert spec == {"app": "xero_accounting_api", "accountId": new.id,
                        "externalUserId": "finance-team", "environment": "development"}  # fmt: skip
        assert new.id != old.id  # the account connected now, not the one there before
        # The operator checks it at Pipedream; the page shows it healthy.
        eventually(
            lambda: condition(
                custom(api).get_namespaced_custom_object(
                    GROUP, VERSION, namespace, "connectedaccounts", "xero-finance"
                ),
                "Ready",
            ).get("reason"),
            lambda reason: reason == "Healthy",
            "the operator to find the account healthy",
        )
        browser.go(f"{base}/integrations/export")  # loaded again (not only a new #fragment)
        shown = browser.run(row)
        assert "Ready" in shown and "Missing" not in shown
        browser.run("document.getElementById('accounts').scrollIntoView()")
        browser.screenshot("connected-account")
        # A stale or forged return gets nothing
        browser.go(f"{base}/accounts/connected?state=forged&again=1")
        assert "not started in this session" in browser.text()
    assert pd.client_secret not in str(custom(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "connectedaccounts"))  # fmt: skip


def test_connect_an_account_pipedreams_webhook_creates_it_and_the_page_shows_it_healthy(
    api: client.ApiClient, namespace: str, tenant: Tenant, tmp_path: Path
) -> None:
    """The console with the tenant's gateway (`--gateway-url`): Pipedream reports the connection
    to the gateway, which creates the ConnectedAccount; the console's way back creates
    nothing (one connection, one object)."""
    pd = PipedreamStandin(client_secret=canary(header=True))
    kubeconfig = gateway_kubeconfig(api, namespace, tmp_path / "gateway.kubeconfig")
    gateway = Gateway(tmp_path, ["-n", namespace], env={"KUBECONFIG": str(kubeconfig)})
    try:
        with (
            serving(pd.app) as connect,
            served(console_app(namespace, gateway_url=gateway.url)) as base,
            chromium() as browser,
        ):
            client.CoreV1Api(api).create_namespaced_secret(namespace, {
                "metadata": {"name": "docrelay-pipedream"},
                "stringData": {"client_id": pd.client_id, "client_secret": pd.client_secret,
                               "project_id": pd.project_id, "environment": "development",
                               "url": connect.base_url},
            })  # fmt: skip
            gateway.wait_ready()
            old = pd.add_account("finance-team", "xero_accounting_api")
            make_integration(api, namespace, "export", CODE_OK, connectedAccounts=["xero-finance"])
            sign_in(browser, base)
            browser.go(f"{base}/integrations/export#accounts")
            row = "return Array.from(document.querySelectorAll('tr'))" \
                  ".find(r => r.innerText.includes('xero-finance')).innerText"  # fmt: skip
            assert "Missing" in browser.run(row)
            browser.type("#connect-app", "xero_accounting_api")
            browser.type("#connect-external_user", "finance-team")
            browser.click("#connect-form button[type=submit]")
            browser.wait_for("return !!document.querySelector('#connect-link')", "the link")
            browser.click("#connect-link")  # to Pipedream's page (the stand-in's)
            browser.wait_for("return !!document.querySelector('#connect')", "Pipedream's page")
            browser.click("#connect")  # connects, reports it to the gateway, sends us back
            browser.wait_for(
                "return document.body.innerText.includes('reports the account to the gateway')",
                "back in the console",
            )
            (new,) = pd.connected
            ((uri, event, status),) = pd.webhooks  # Pipedream's webhook, over real HTTP
            assert uri.startswith(f"{gateway.url}/v1/pipedream/connections/{namespace}/export/")
            assert (event["event"], event["account"]["id"], status) == (
                "CONNECTION_SUCCESS", new.id, 201
            )  # fmt: skip
            created = custom(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, "connectedaccounts", "xero-finance"
            )
            assert created["spec"] == {"app": "xero_accounting_api", "accountId": new.id,
                                       "externalUserId": "finance-team",
                                       "environment": "development"}  # fmt: skip
            assert new.id != old.id
            eventually(
                lambda: condition(
                    custom(api).get_namespaced_custom_object(
                        GROUP, VERSION, namespace, "connectedaccounts", "xero-finance"
                    ),
                    "Ready",
                ).get("reason"),
                lambda reason: reason == "Healthy",
                "the operator to find the account healthy",
            )
            browser.go(f"{base}/integrations/export")
            shown = browser.run(row)
            assert "Ready" in shown and "Missing" not in shown
            browser.run("document.getElementById('accounts').scrollIntoView()")
            browser.screenshot("connected-account-webhook")
            # Pipedream delivering it again (a replay) changes nothing.
            assert pd.send_webhook(uri, event) == 409
            listed = custom(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, "connectedaccounts"
            )["items"]
            assert [o["metadata"]["name"] for o in listed] == ["xero-finance"]
            assert pd.client_secret not in str(listed)
        assert pd.client_secret not in gateway.log_text()
    finally:
        gateway.stop()
        cleanup_cluster_role(api, f"docrelay-broker-{namespace}")
        print(f"\n--- gateway log ---\n{gateway.log()}")
