"""The Pipedream Connect client against the stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.standins.pipedream import PipedreamStandin, StandinAccount, echo_upstream
from devkit.standins.server import RunningServer, serving
from docrelay.pipedream import (
    ActionFailed,
    ConnectClient,
    ConnectError,
    NotFound,
    RateLimited,
    TokenBucket,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
    encode_target_url,
)
from tests.leakcheck import assert_clean, canary

ENV = "development"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[RunningServer, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    with serving(echo_upstream(received)) as server:
        yield server, received


@pytest.fixture
def received(upstream: tuple[RunningServer, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    upstream[1].clear()
    return upstream[1]


@pytest.fixture
def target(upstream: tuple[RunningServer, list[dict[str, Any]]]) -> str:
    return upstream[0].base_url


_PD_CLOCK = FakeClock()


@pytest.fixture(scope="module")
def served_standin() -> Iterator[tuple[PipedreamStandin, str]]:
    # A canary (ASCII: the stand-in compares it with secrets.compare_digest).
    pd = PipedreamStandin(clock=_PD_CLOCK, client_secret=canary(header=True))
    with serving(pd.app) as server:
        yield pd, server.base_url


@pytest.fixture
def pd_clock() -> FakeClock:
    _PD_CLOCK.now = 1000.0
    return _PD_CLOCK


@pytest.fixture
def standin(
    served_standin: tuple[PipedreamStandin, str], pd_clock: FakeClock
) -> tuple[PipedreamStandin, str]:
    """One server for the module (starting one costs ~0.3 s), fresh state for each test."""
    pd = served_standin[0]
    pd.reset()
    pd.token_lifetime, pd.page_size, pd.upstream_timeout = 3600.0, 3, 0.5
    return served_standin


@pytest.fixture
def pd(standin: tuple[PipedreamStandin, str]) -> PipedreamStandin:
    return standin[0]


@pytest.fixture
def account(pd: PipedreamStandin) -> StandinAccount:
    return pd.add_account("user-1", "xero_accounting_api", app_name="Xero")


def make_client(standin: tuple[PipedreamStandin, str], **kwargs: Any) -> ConnectClient:
    pd, base_url = standin
    return ConnectClient(base_url, pd.project_id, ENV, pd.client_id, pd.client_secret, **kwargs)


@pytest.fixture
def client(standin: tuple[PipedreamStandin, str]) -> Iterator[ConnectClient]:
    with make_client(standin) as c:
        yield c


# -- the server token ------------------------------------------------------------------------


def test_token_fetched_once_and_cached_across_calls_and_threads(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount
) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                client.get_account(account.id)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(pd.recorded("/v1/oauth/token")) == 1
    assert client.token_fetches == 1
    calls = pd.recorded("/accounts/")
    assert len(calls) == 24
    token = pd.issued_tokens[0]
    assert {c.headers["authorization"] for c in calls} == {f"Bearer {token}"}
    assert {c.headers["x-pd-environment"] for c in calls} == {ENV}


def test_token_expiring_mid_use_is_refreshed_transparently(
    pd: PipedreamStandin, pd_clock: FakeClock, client: ConnectClient, account: StandinAccount,
    target: str,
) -> None:
    client.get_account(account.id)
    # The stand-in's clock passes the token's hour; the client still believes in it.
    pd_clock.now += 3601
    answer = client.proxy(account.id, "user-1", f"{target}/echo")
    assert answer["status_code"] == 200
    assert client.token_fetches == 2
    proxied = pd.recorded("/proxy/")
    assert [r.status for r in proxied] == [401, 200]
    assert proxied[0].headers["authorization"] != proxied[1].headers["authorization"]


def test_token_is_refreshed_before_it_expires(
    standin: tuple[PipedreamStandin, str], account: StandinAccount
) -> None:
    pd = standin[0]
    clock = FakeClock()
    with make_client(standin, clock=clock, refresh_margin=300) as client:
        client.get_account(account.id)
        clock.now += 3600 - 301
        client.get_account(account.id)
        assert client.token_fetches == 1
        clock.now += 2  # inside the last 300 s: fetch a new one before Pipedream refuses it
        client.get_account(account.id)
        assert client.token_fetches == 2
    assert all(r.status == 200 for r in pd.recorded("/accounts/"))


def test_wrong_client_secret_is_unauthorized(standin: tuple[PipedreamStandin, str]) -> None:
    pd, base_url = standin
    wrong = "not-the-secret-" + "x" * 20
    with ConnectClient(base_url, pd.project_id, ENV, pd.client_id, wrong) as client, \
            pytest.raises(Unauthorized) as caught:
        client.list_accounts()
    assert caught.value.status_code == 401
    assert not caught.value.retryable
    assert wrong not in str(caught.value)


def test_a_token_refused_twice_is_unauthorized(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount
) -> None:
    client.get_account(account.id)
    pd.token_lifetime = 0  # every new token is dead on arrival
    pd.expire_tokens()
    with pytest.raises(Unauthorized):
        client.get_account(account.id)
    assert client.token_fetches == 2


# -- accounts and connect tokens -------------------------------------------------------------


def test_pagination_yields_every_account(pd: PipedreamStandin, client: ConnectClient) -> None:
    mine = {pd.add_account("user-1", "xero_accounting_api").id for _ in range(8)}
    pd.add_account("user-2", "xero_accounting_api")
    pd.add_account("user-1", "slack")
    pd.add_account("user-1", "xero_accounting_api", environment="production")
    accounts = client.list_accounts(external_user_id="user-1", app="xero_accounting_api")
    assert {a["id"] for a in accounts} == mine
    assert len(accounts) == 8
    pages = pd.recorded("/accounts", "GET")
    assert len(pages) == 3  # page size 3: 3 + 3 + 2
    assert "after" not in pages[0].query and pages[1].query["after"]
    assert len(client.list_accounts()) == 10  # both users, both apps, this environment only


def test_account_fields_and_not_found(
    pd: PipedreamStandin, client: ConnectClient
) -> None:
    dead = pd.add_account("user-1", "slack", healthy=False, dead=True, error="token revoked")
    got = client.get_account(dead.id)
    assert (got["id"], got["healthy"], got["dead"], got["app"]["name_slug"]) == (
        dead.id, False, True, "slack")
    assert "credentials" not in got
    with pytest.raises(NotFound) as caught:
        client.get_account("apn_missing")
    assert caught.value.status_code == 404 and not caught.value.retryable


def test_connect_token_and_link(pd: PipedreamStandin, client: ConnectClient) -> None:
    answer = client.create_connect_token(
        "user-9", success_redirect_uri="http://127.0.0.1/ok", allowed_origins=["http://x"])
    assert set(answer) == {"token", "expires_at", "connect_link_url"}
    assert answer["token"].startswith("ctok_")
    assert f"token={answer['token']}" in answer["connect_link_url"]
    sent = pd.recorded("/tokens")[0].json()
    assert sent == {"external_user_id": "user-9", "success_redirect_uri": "http://127.0.0.1/ok",
                    "allowed_origins": ["http://x"]}


# -- the proxy -------------------------------------------------------------------------------


def test_proxy_reaches_the_upstream_with_the_accounts_auth_and_only_prefixed_headers(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount, target: str,
    received: list[dict[str, Any]],
) -> None:
    answer = client.proxy(
        account.id, "user-1", f"{target}/echo?a=1", method="post",
        body={"Invoices": [{"Total": 10}]},
        headers={"Xero-Tenant-Id": "tenant-7", "Accept": "application/json"},
        params={"b": "2"},
    )
    assert answer["success"] is True and answer["status_code"] == 200
    assert answer["headers"]["x-upstream"] == "echo"
    seen = received[0]
    assert answer["data"]["method"] == "POST" and seen["method"] == "POST"
    assert seen["query"] == {"a": "1", "b": "2"}
    assert seen["body"] == '{"Invoices":[{"Total":10}]}'
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {account.access_token}"
    assert headers["xero-tenant-id"] == "tenant-7"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    # Nothing of the request to Pipedream leaks upstream: its token, its headers, the prefix.
    assert not any(name.startswith("x-pd-") for name in headers)
    assert not any(t in str(headers) for t in pd.issued_tokens)
    # What Pipedream saw: the URL-safe base64 target, the ids, the prefixed headers.
    sent = pd.recorded("/proxy/")[0]
    assert sent.path.endswith("/proxy/" + encode_target_url(f"{target}/echo?a=1&b=2"))
    assert sent.query == {"external_user_id": "user-1", "account_id": account.id}
    assert sent.headers["x-pd-proxy-xero-tenant-id"] == "tenant-7"
    assert "xero-tenant-id" not in sent.headers


def test_proxy_get_with_form_data_and_raw_text(
    client: ConnectClient, account: StandinAccount, target: str, received: list[dict[str, Any]]
) -> None:
    assert client.proxy(account.id, "user-1", f"{target}/echo")["data"]["method"] == "GET"
    client.proxy(account.id, "user-1", f"{target}/echo", "PUT", data={"k": "v w"})
    assert received[1]["body"] == "k=v+w"
    assert received[1]["headers"]["content-type"] == "application/x-www-form-urlencoded"
    client.proxy(account.id, "user-1", f"{target}/echo", "PATCH", body="<x/>",
                 headers={"Content-Type": "application/xml"})
    assert (received[2]["body"], received[2]["headers"]["content-type"]) == (
        "<x/>", "application/xml")


def test_multipart_upload_through_the_proxy(
    client: ConnectClient, account: StandinAccount, target: str, received: list[dict[str, Any]]
) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 40
    answer = client.proxy(
        account.id, "user-1", f"{target}/upload", "POST",
        files={"file": ("invoice.pdf", pdf, "application/pdf")}, data={"note": "scan"},
    )
    assert answer["status_code"] == 201
    parts = {p["name"]: p for p in answer["data"]["parts"]}
    assert parts["file"]["filename"] == "invoice.pdf"
    assert parts["file"]["content_type"] == "application/pdf"
    assert parts["file"]["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert parts["note"]["size"] == 4
    assert received[0]["headers"]["authorization"] == f"Bearer {account.access_token}"


@pytest.mark.parametrize(("code", "retryable"), [(400, False), (404, False), (422, False),
                                                  (500, True), (503, True)])
def test_non_2xx_upstream_is_an_upstream_error_with_its_status(
    client: ConnectClient, account: StandinAccount, target: str, code: int, retryable: bool
) -> None:
    with pytest.raises(UpstreamError) as caught:
        client.proxy(account.id, "user-1", f"{target}/status/{code}?secret=q")
    assert caught.value.status_code == code
    assert caught.value.retryable is retryable
    assert f"upstream says {code}" in caught.value.body
    assert str(caught.value) == f"proxy GET {target}/status/{code}: the target answered {code}"


def test_upstream_401_is_the_targets_after_one_fresh_token(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount, target: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        client.proxy(account.id, "user-1", f"{target}/status/401")
    assert caught.value.status_code == 401
    assert client.token_fetches == 2  # it tried a fresh server token first


def test_429_is_rate_limited_and_retryable(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount, target: str
) -> None:
    pd.fail_next(429, count=2)
    for _ in range(2):
        with pytest.raises(RateLimited) as caught:
            client.proxy(account.id, "user-1", f"{target}/echo")
        assert caught.value.retryable and caught.value.status_code == 429
        assert caught.value.retry_after == 1.0
    assert client.proxy(account.id, "user-1", f"{target}/echo")["status_code"] == 200


def test_504_is_upstream_timeout_and_retryable(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount, target: str
) -> None:
    pd.fail_next(504)
    with pytest.raises(UpstreamTimeout) as caught:
        client.proxy(account.id, "user-1", f"{target}/echo")
    assert caught.value.retryable and caught.value.status_code == 504
    # And the real thing: the stand-in's limit (0.5 s here, 30 s by default) is exceeded.
    with pytest.raises(UpstreamTimeout):
        client.proxy(account.id, "user-1", f"{target}/slow?seconds=2")


def test_429_on_other_calls_is_rate_limited_too(
    pd: PipedreamStandin, client: ConnectClient
) -> None:
    pd.fail_next(429, scope="any")
    with pytest.raises(RateLimited):
        client.list_accounts()


def test_dead_or_foreign_account_through_the_proxy(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount, target: str
) -> None:
    with pytest.raises(UpstreamError) as caught:
        client.proxy(account.id, "someone-else", f"{target}/echo")
    assert caught.value.status_code == 404
    dead = pd.add_account("user-1", "slack", dead=True, healthy=False)
    with pytest.raises(UpstreamError) as caught:
        client.proxy(dead.id, "user-1", f"{target}/echo")
    assert caught.value.status_code == 403


def test_project_bucket_refuses_before_calling(
    standin: tuple[PipedreamStandin, str], account: StandinAccount, target: str
) -> None:
    pd = standin[0]
    clock = FakeClock()
    bucket = TokenBucket.for_limit(limit=10, window_seconds=60, burst=2, clock=clock)
    with make_client(standin, proxy_bucket=bucket) as client:
        client.proxy(account.id, "user-1", f"{target}/echo")
        client.proxy(account.id, "user-1", f"{target}/echo")
        with pytest.raises(RateLimited) as caught:
            client.proxy(account.id, "user-1", f"{target}/echo")
        assert caught.value.retryable
        assert caught.value.retry_after == pytest.approx(60 / 8)
        clock.now += 60 / 8
        client.proxy(account.id, "user-1", f"{target}/echo")
    assert len(pd.recorded("/proxy/")) == 3


# -- actions ---------------------------------------------------------------------------------


def test_run_action_returns_ret(
    pd: PipedreamStandin, client: ConnectClient, account: StandinAccount
) -> None:
    result = client.run_action(
        "xero_accounting_api-create-invoice", "user-1", account.id, "xero_accounting_api",
        {"contact_name": "ACME", "line_items": [{"UnitAmount": 5, "Quantity": 3}]},
    )
    assert set(result) == {"exports", "os", "ret"}
    invoice = result["ret"]["Invoices"][0]
    assert (invoice["Contact"]["Name"], invoice["Total"], invoice["Status"]) == (
        "ACME", 15.0, "DRAFT")
    sent = pd.recorded("/actions/run")[0].json()
    assert sent["id"] == "xero_accounting_api-create-invoice"
    assert sent["external_user_id"] == "user-1"
    assert sent["configured_props"]["xero_accounting_api"] == {"authProvisionId": account.id}


def test_run_action_failures(pd: PipedreamStandin, client: ConnectClient) -> None:
    slack = pd.add_account("user-1", "slack")
    with pytest.raises(ActionFailed):
        client.run_action("slack-send-message", "user-1", slack.id, "slack", {"text": "hi"})
    with pytest.raises(NotFound):
        client.run_action("no-such-action", "user-1", slack.id, "slack", {})
    with pytest.raises(NotFound):  # the account is not this user's
        client.run_action("slack-send-message", "user-2", slack.id, "slack", {"channel": "c"})


# -- secrets never leak ----------------------------------------------------------------------


def test_secret_and_tokens_never_in_errors_or_logs(
    pd: PipedreamStandin, pd_clock: FakeClock, standin: tuple[PipedreamStandin, str],
    account: StandinAccount, target: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[ConnectError] = []
    with make_client(standin) as client:
        client.list_accounts()
        pd_clock.now += 4000  # force a refresh, so two tokens exist
        pd.fail_next(429)
        pd.fail_next(504)
        for url in (f"{target}/echo", f"{target}/echo", f"{target}/status/500",
                    f"{target}/status/401"):
            with pytest.raises(ConnectError) as caught:
                client.proxy(account.id, "user-1", url)
            errors.append(caught.value)
        with pytest.raises(ConnectError) as caught:
            client.get_account("apn_missing")
        errors.append(caught.value)
        assert client.token_fetches >= 2
        text = repr(client)
    with ConnectClient(standin[1], pd.project_id, ENV, pd.client_id, pd.client_secret + "x") as bad:
        with pytest.raises(Unauthorized) as caught:
            bad.list_accounts()
        errors.append(caught.value)
    secrets = [pd.client_secret, pd.client_secret + "x", *pd.issued_tokens]
    assert len(pd.issued_tokens) >= 2
    for error in errors:
        text += "\n" + "".join(traceback.format_exception(error)) + repr(error.args)
        text += getattr(error, "body", "")
    text += "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the client logs its token fetches"
    assert_clean(text, secrets, "errors, reprs and log records")



# -- the action catalog (through the official SDK) -------------------------------------------


def test_action_catalog_by_app_component_and_prop_options(
    pd: PipedreamStandin, client: ConnectClient
) -> None:
    """What the agent reads before it writes execute_action: the app's real action keys, one
    action's props, and a remote-options prop's values for the user's own account."""
    slack = pd.add_account("user-1", "slack", app_name="Slack")
    keys = [a["key"] for a in client.list_actions("slack")]
    assert keys == ["slack-list-channels", "slack-send-message"]
    assert [a["key"] for a in client.list_actions("xero_accounting_api")] == [
        "xero_accounting_api-create-invoice"
    ]
    assert client.list_actions("no_such_app") == []
    action = client.get_action("slack-send-message")
    props = {p["name"]: p for p in action["configurable_props"]}
    assert props["slack"]["type"] == "app" and props["channel"]["remoteOptions"] is True
    assert props["thread_ts"]["optional"] is True
    options = client.configure_prop("slack-send-message", "channel", "user-1", slack.id, "slack")
    assert options["errors"] == []
    assert {"label": "#finance", "value": "C0FINANCE1"} in options["options"]
    sent = pd.recorded("/actions/configure", "POST")[-1].json()
    assert sent["configured_props"] == {"slack": {"authProvisionId": slack.id}}
    with pytest.raises(NotFound):
        client.get_action("slack-no-such-action")


def test_action_catalog_pages_are_all_read(pd: PipedreamStandin, client: ConnectClient) -> None:
    pd.page_size = 1  # three actions, one per page: the client follows end_cursor
    everything = list(client._pages("list actions", client._sdk.actions.with_raw_response.list,
                                    {"app": None, "limit": 1}))
    assert len(everything) == 3


def test_catalog_calls_refresh_a_refused_token_and_map_errors(
    pd: PipedreamStandin, client: ConnectClient
) -> None:
    client.list_actions("slack")
    pd.expire_tokens()  # Pipedream refuses the cached token: one new token, the call repeats
    assert client.list_actions("slack")
    assert client.token_fetches == 2
    pd.fail_next(429, scope="any")
    with pytest.raises(RateLimited) as raised:
        client.get_action("slack-send-message")
    assert raised.value.retryable and raised.value.retry_after == 1.0
    # The SDK's exception (with the answer's body) is not chained into ours.
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert pd.client_secret not in "".join(traceback.format_exception(raised.value))
