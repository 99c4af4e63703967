"""The console's pages (pure) and the refusals its server makes before any API call: no
session, a forged cookie, a write without the CSRF token. What a browser gets: the status,
the page's text, the headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from kubernetes import client

from docrelay.console import pages
from docrelay.console.app import create_app
from docrelay.console.session import (
    CONTENT_SECURITY_POLICY,
    COOKIE,
    IDLE_SECONDS,
    MAX_AGE_SECONDS,
    SessionCookies,
    SignInLimit,
    random_session_key,
    session_key,
)
from docrelay.kube import Kube

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVIL = '<script>alert("x")</script>'


def integration(name: str = "orders", **status: object) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"workspace": "ws", "documentType": "invoice", "trigger": "DocumentValidated"},
        "status": dict(status),
    }


def test_a_name_holding_script_renders_as_text() -> None:
    html = pages.layout(
        EVIL, pages.integrations_page([integration(EVIL)]), namespace="n", user=EVIL
    )
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # the page's only script is the package's own file
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/static/console.js">']


def test_a_log_and_an_error_holding_script_render_as_text() -> None:
    run = {
        "metadata": {"name": "orders-r-1", "creationTimestamp": "2026-01-02T03:00:00Z"},
        "spec": {"integration": "orders", "documentIdentifier": "d1", "trigger": "T"},
        "status": {"phase": "Failed", "attempt": 1, "errorClass": "Error", "errorMessage": EVIL},
    }
    html = pages.run_page(
        run, log=f"line\n{EVIL}\n", live=False, egress=None, broker=None, csrf="t", now=NOW
    )
    assert "<script" not in html
    assert html.count("&lt;script&gt;") == 2
    assert "Replay this run" in html
    assert "No connection through the egress proxy." in html
    assert "No account action through the broker." in html


def test_a_run_shows_its_connections_and_account_actions_as_text() -> None:
    """The egress and broker records as `docrelay logs --egress/--broker` list them; every
    name in them is the code's text, so shown escaped."""
    run = {
        "metadata": {"name": "orders-r-1", "creationTimestamp": "2026-01-02T03:00:00Z"},
        "spec": {"integration": "orders", "documentIdentifier": "d1", "trigger": "T"},
        "status": {"phase": "Succeeded", "attempt": 1},
    }
    egress = {
        "connections": 1, "denied": 0, "bytesOut": 10, "bytesIn": 20,
        "entries": [{"at": "2026-01-02T03:00:01Z", "method": "GET", "host": "erp.example",
                     "port": 80, "allowed": True, "status": 200, "path": f"/v1/{EVIL}"}],
    }  # fmt: skip
    broker = {
        "actions": 2, "simulated": 1, "dropped": 3,
        "entries": [
            {"at": "2026-01-02T03:00:02Z", "action": "api_request", "account": "ledger",
             "outcome": "sent", "status": 201, "method": "POST", "host": "api.ledger.example",
             "path": "/bills"},
            {"at": "2026-01-02T03:00:03Z", "action": "upload_file", "account": EVIL,
             "outcome": "simulated", "fileName": "bill-***.pdf"},
        ],
    }  # fmt: skip
    html = pages.run_page(
        run, log=None, live=False, egress=egress, broker=broker, csrf="t", now=NOW
    )
    assert "<script" not in html and html.count("&lt;script&gt;") == 2
    assert "1 connection(s), 0 denied, 10 bytes out, 20 bytes in" in html
    assert "erp.example:80" in html
    assert "2 action(s), 1 simulated (dry run); the 3 oldest not listed" in html
    assert "POST api.ledger.example/bills" in html and "bill-***.pdf" in html


def test_states_show_suspended_and_paused_as_such() -> None:
    suspended = integration()
    suspended["spec"]["suspend"] = True
    paused = integration(conditions=[{"type": "Paused", "status": "True", "reason": "Failing"}])
    ready = integration(conditions=[{"type": "Ready", "status": "True", "reason": "Ready"}])
    missing = integration(conditions=[{"type": "Ready", "status": "False", "reason": "NoCode"}])
    assert [pages.integration_state(o) for o in (suspended, paused, ready, missing)] == [
        "Suspended",
        "Paused",
        "Ready",
        "NoCode",
    ]


def test_the_list_shows_revision_last_run_and_success_rate() -> None:
    obj = integration(
        deployedRevision="orders-abc",
        lastRun={"name": "orders-r-9", "phase": "Failed", "completionTime": "2026-01-02T03:00:00Z"},
        runCounts={"succeeded": 3, "failed": 1},
    )
    html = pages.integrations_page([obj])
    assert "orders-abc" in html
    assert 'href="/runs/orders-r-9"' in html
    assert "75% of 4" in html


def test_runs_filter_by_phase_integration_and_time() -> None:
    def run(name: str, integ: str, phase: str, created: str) -> dict:
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"integration": integ},
            "status": {"phase": phase},
        }

    runs = [
        run("a", "orders", "Failed", "2026-01-02T03:00:00Z"),
        run("b", "orders", "Succeeded", "2026-01-02T02:00:00Z"),
        run("c", "bills", "Failed", "2026-01-01T00:00:00Z"),
    ]
    names = lambda chosen: [r["metadata"]["name"] for r in chosen]  # noqa: E731
    assert names(pages.filter_runs(runs, phase="Failed")) == ["a", "c"]
    assert names(pages.filter_runs(runs, integration="orders")) == ["a", "b"]
    assert names(pages.filter_runs(runs, since=datetime(2026, 1, 2, tzinfo=UTC))) == ["a", "b"]


def test_a_revision_diff_marks_added_and_removed_lines() -> None:
    html = pages.diff_html("r1", "a = 1\nb = '<x>'\n", "r2", "a = 2\nb = '<x>'\n")
    assert '<span class="del">-a = 1</span>' in html
    assert '<span class="add">+a = 2</span>' in html
    assert "&lt;x&gt;" in html


def unreachable_app() -> TestClient:
    """A console whose API server does not exist: these refusals must come before any call."""
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    app = create_app(namespace="n", auth="kubeconfig", kube=kube, login_secret="right")
    return TestClient(app, follow_redirects=False)


def test_without_a_session_pages_send_you_to_sign_in() -> None:
    browser = unreachable_app()
    response = browser.get("/", headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert browser.get("/runs").status_code == 401
    assert browser.get("/events/runs").status_code == 401


def test_a_forged_session_cookie_gets_nothing() -> None:
    browser = unreachable_app()
    browser.cookies.set(COOKIE, "forged-" + "A" * 40)
    response = browser.get("/integrations/orders")
    assert response.status_code == 401
    assert "Not signed in" in response.text
    response = browser.post("/runs/r/replay", data={"csrf": "anything"})
    assert response.status_code == 401


def test_a_wrong_sign_in_link_gets_no_session() -> None:
    browser = unreachable_app()
    response = browser.get("/login", params={"token": "wrong"})
    assert response.status_code == 401
    assert COOKIE not in response.headers.get("set-cookie", "")


def test_a_write_without_the_csrf_token_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(Kube, "whoami", lambda self: "alice")
    browser = unreachable_app()
    response = browser.get("/login", params={"token": "right"})
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP on loopback; Secure under TLS
    for data in ({}, {"csrf": "guessed"}):
        response = browser.post("/integrations/orders/deploy", data={"revision": "r", **data})
        assert response.status_code == 403
        assert "CSRF token is missing or wrong" in response.text


def test_every_response_carries_a_policy_without_inline_script() -> None:
    browser = unreachable_app()
    for path in ("/login", "/static/console.js", "/"):
        headers = browser.get(path).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


def test_the_assets_ship_in_the_package() -> None:
    browser = unreachable_app()
    for asset in ("console.js", "seal.js", "console.css"):
        response = browser.get(f"/static/{asset}")
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text


def test_overview_counts_kept_runs_per_day_by_outcome_and_duration_percentiles() -> None:
    def run(phase: str, start: str, end: str, test: bool = False) -> dict:
        return {
            "metadata": {"name": f"r-{start}"},
            "spec": {"test": test},
            "status": {"phase": phase, "startTime": start, "completionTime": end},
        }

    runs = [
        run("Succeeded", "2026-01-02T01:00:00Z", "2026-01-02T01:00:10Z"),
        run("Succeeded", "2026-01-02T02:00:00Z", "2026-01-02T02:00:20Z"),
        run("DeadLettered", "2026-01-01T02:00:00Z", "2026-01-01T02:01:40Z"),
        run("Failed", "2026-01-01T03:00:00Z", "2026-01-01T03:00:30Z", test=True),  # not counted
        run("Running", "2026-01-02T03:00:00Z", ""),  # not finished
    ]
    figures = pages.run_figures(runs, NOW, days=3)
    assert figures["perDay"] == {
        "2025-12-31": {},
        "2026-01-01": {"DeadLettered": 1},
        "2026-01-02": {"Succeeded": 2},
    }
    assert (figures["count"], figures["p50"], figures["p95"]) == (3, 20.0, 100.0)
    html = pages.figures_html(figures)
    assert "median 20s, 95th percentile 100s" in html
    assert 'aria-label="Runs per day by outcome' in html


def test_percentile_is_nearest_rank() -> None:
    assert pages.percentile([], 0.5) is None
    assert pages.percentile([5.0], 0.95) == 5.0
    assert pages.percentile([float(n) for n in range(1, 101)], 0.95) == 95.0
    assert pages.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


def test_under_tls_the_session_cookie_is_secure(monkeypatch) -> None:
    monkeypatch.setattr(Kube, "whoami", lambda self: "alice")
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    app = create_app(
        namespace="n", auth="kubeconfig", kube=kube, login_secret="right", secure_cookies=True
    )
    browser = TestClient(app, base_url="https://testserver", follow_redirects=False)
    cookie = browser.get("/login", params={"token": "right"}).headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_connected_accounts_show_their_health_and_a_missing_one() -> None:
    healthy = {
        "metadata": {"name": "xero"},
        "spec": {"app": "xero_accounting_api"},
        "status": {
            "lastCheckedAt": "2026-01-02T03:00:00Z",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy"}],
        },
    }
    dead = {
        "metadata": {"name": "sheets"},
        "spec": {"app": "google_sheets"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Unhealthy", "message": EVIL}
            ]
        },
    }
    html = pages.accounts_html(["xero", "sheets", "gone"], {"xero": healthy, "sheets": dead})
    assert '<span class="badge ok">Ready</span>' in html
    assert '<span class="badge bad">Unhealthy</span> &lt;script&gt;' in html
    assert '<th scope="row">gone</th><td></td><td><span class="badge bad">Missing</span>' in html


class StubKube:
    """Stands in for the API where no call is wanted: who the user is, and no integrations."""

    def whoami(self) -> str:
        return "alice"

    def list_objects(self, plural: str, namespace: str) -> list:
        return []


def test_an_idle_or_old_session_is_gone_with_its_credentials() -> None:
    now = [1_000_000.0]
    cookies = SessionCookies(random_session_key(), "token|n", clock=lambda: now[0])
    session = cookies.new(kube=None, user="alice", token="the-token")
    sealed = cookies.seal(session)
    assert "the-token" not in sealed and "alice" not in sealed  # sealed, not only signed
    assert cookies.open(sealed)["token"] == "the-token"
    now[0] += IDLE_SECONDS + 1
    assert cookies.open(sealed) is None
    now[0] -= IDLE_SECONDS + 1
    session.seen = now[0] + MAX_AGE_SECONDS  # used a moment ago, but issued too long ago
    now[0] += MAX_AGE_SECONDS + 1
    assert cookies.open(cookies.seal(session)) is None
    assert cookies.open("forged") is None and cookies.open("") is None


def test_a_cookie_of_another_key_or_console_or_altered_opens_to_nothing() -> None:
    key = random_session_key()
    cookies = SessionCookies(key, "token|n")
    sealed = cookies.seal(cookies.new(kube=None, user="alice", token="t"))
    assert SessionCookies(random_session_key(), "token|n").open(sealed) is None
    assert SessionCookies(key, "token|other-namespace").open(sealed) is None
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    assert cookies.open(flipped) is None
    assert SessionCookies(key, "token|n").open(sealed) is not None  # the same key: a replica


def test_two_replicas_with_one_key_serve_one_session_and_a_restart_keeps_it() -> None:
    key = session_key(b"k" * 40)
    replicas = [
        TestClient(
            create_app(
                namespace="n", auth="kubeconfig", kube=StubKube(), login_secret="right",
                session_key=key,
            ),
            follow_redirects=False,
        )
        for _ in range(2)
    ]  # fmt: skip
    signed_in = replicas[0].get("/login", params={"token": "right"})
    assert signed_in.status_code == 303
    cookie = signed_in.cookies[COOKIE]
    replicas[1].cookies.set(COOKIE, cookie)
    page = replicas[1].get("/")
    assert page.status_code == 200
    assert "alice in n" in page.text
    other = TestClient(
        create_app(namespace="n", auth="kubeconfig", kube=StubKube(), login_secret="right"),
        follow_redirects=False,
    )
    other.cookies.set(COOKIE, cookie)
    assert other.get("/").status_code == 401  # another key: nothing


def token_app(**options: object) -> TestClient:
    """Token sign-in against an API server that does not exist: every token is refused."""
    app = create_app(
        namespace="n",
        auth="token",
        base_configuration=client.Configuration(host="http://127.0.0.1:9"),
        **options,
    )
    return TestClient(app, follow_redirects=False)


def login_token(browser: TestClient) -> str:
    page = browser.get("/login")
    assert page.status_code == 200
    match = re.search(r'name="login" value="([^"]+)"', page.text)
    assert match
    return match[1]


def test_a_sign_in_without_the_sign_in_pages_token_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(Kube, "whoami", lambda self: "mallory")
    browser = token_app()
    # Another site's form: no sign-in cookie, no token (login CSRF)
    response = browser.post("/login", data={"token": "mallorys-token"})
    assert response.status_code == 403
    assert "sign in from the console&#x27;s own sign-in page" in response.text
    assert COOKIE not in response.headers.get("set-cookie", "")
    # the token of another browser's page does not fit this browser's sign-in cookie
    theirs = login_token(token_app())
    login_token(browser)
    response = browser.post("/login", data={"login": theirs, "token": "mallorys-token"})
    assert response.status_code == 403
    # the page's own token signs in
    response = browser.post("/login", data={"login": login_token(browser), "token": "t"})
    assert response.status_code == 303
    assert COOKIE in response.cookies


def test_failed_sign_ins_are_limited_per_address(monkeypatch) -> None:
    monkeypatch.setattr(Kube, "whoami", lambda self: "unknown")  # the API refuses the token
    browser = token_app(sign_in_limit=SignInLimit(failures=3, window=300))
    for _ in range(3):
        response = browser.post("/login", data={"login": login_token(browser), "token": "bad"})
        assert response.status_code == 401
        assert "did not accept that token" in response.text
    monkeypatch.setattr(Kube, "whoami", lambda self: "alice")  # now even a right token ...
    response = browser.post("/login", data={"login": login_token(browser), "token": "right"})
    assert response.status_code == 429  # ... waits
    assert "Too many failed sign-ins" in response.text
    assert 0 < int(response.headers["retry-after"]) <= 300
    assert COOKIE not in response.cookies


def test_the_sign_in_limit_forgets_failures_after_its_window() -> None:
    now = [0.0]
    limit = SignInLimit(failures=2, window=60, clock=lambda: now[0])
    limit.failed("a")
    limit.failed("a")
    assert limit.retry_after("a") == 61 and limit.retry_after("b") == 0
    now[0] = 30
    assert 0 < limit.retry_after("a") <= 31
    now[0] = 60
    assert limit.retry_after("a") == 0


def test_a_wrong_sign_in_link_counts_as_a_failed_sign_in() -> None:
    kube = Kube(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")))
    app = create_app(
        namespace="n", auth="kubeconfig", kube=kube, login_secret="right",
        sign_in_limit=SignInLimit(failures=2, window=300),
    )  # fmt: skip
    browser = TestClient(app, follow_redirects=False)
    assert [browser.get("/login", params={"token": "guess"}).status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]


def test_the_document_picker_lists_the_platforms_documents_as_text() -> None:
    documents = [
        {"meta": {"identifier": "new1", "fileName": EVIL, "state": "review",
                  "createdDt": "2026-01-02T00:00:00Z"}},
        {"meta": {"identifier": "old2", "fileName": "b.pdf", "createdDt": "2026-01-01T00:00:00Z"}},
    ]  # fmt: skip
    html = pages.pick_document_page(
        "orders",
        workspaces=[{"identifier": "ws", "name": "Payables"}],
        document_types=[{"identifier": "inv", "name": "Invoices"}],
        workspace="ws",
        document_type="inv",
        documents=documents,
        revisions=["orders-r1"],
        csrf="tok",
    )
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'value="new1" checked required' in html  # the newest is chosen unless you pick
    assert 'value="old2" required' in html
    assert '<option value="ws" selected>Payables (ws)</option>' in html
    assert '<option value="inv" selected>Invoices (inv)</option>' in html
    assert 'name="csrf" value="tok"' in html and 'action="/integrations/orders/test"' in html
    empty = pages.pick_document_page(
        "orders", workspaces=[], document_types=[], workspace="gone", document_type="",
        documents=[], revisions=[], csrf="tok", problem="You may not read it",
    )  # fmt: skip
    assert "The platform lists no documents here." in empty
    assert 'id="pick-run"' not in empty  # nothing to run on
    assert '<option value="gone" selected>gone</option>' in empty  # the scope stays shown
    assert "You may not read it" in empty


def test_back_from_pipedream_without_the_cookie_takes_one_step_on_this_site() -> None:
    browser = unreachable_app()
    # Pipedream's redirect: another site started it, so no SameSite=Strict cookie came along
    response = browser.get("/accounts/connected", params={"state": "abc"})
    assert response.status_code == 200
    assert (
        '<meta http-equiv="refresh" content="0;url=/accounts/connected?state=abc&amp;again=1">'
        in (response.text)
    )
    assert "<script" not in response.text
    # the step taken and still no session: sign in, no loop
    again = browser.get(
        "/accounts/connected",
        params={"state": "abc", "again": "1"},
        headers={"Accept": "text/html"},
    )
    assert (again.status_code, again.headers["location"]) == (303, "/login")


def test_a_connect_return_of_another_session_or_forged_is_refused() -> None:
    app = create_app(namespace="n", auth="kubeconfig", kube=StubKube(), login_secret="right")
    browser = TestClient(app, follow_redirects=False)
    assert browser.get("/login", params={"token": "right"}).status_code == 303
    other = app.state.sessions.seal_data(
        "pipedream-connect", {"session": "someone-else", "integration": "orders"}
    )
    for state in ("forged", other):
        response = browser.get("/accounts/connected", params={"state": state})
        assert response.status_code == 403
        assert "not started in this session" in response.text


def test_the_connect_form_offers_the_account_and_escapes_what_it_shows() -> None:
    html = pages.connect_account_form(
        "orders", "tok", account="xero-finance", app=EVIL, external_user="finance-team"
    )
    assert 'action="/integrations/orders/accounts/connect"' in html
    assert 'id="connect-account" name="account" value="xero-finance"' in html
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert 'name="csrf" value="tok"' in html
