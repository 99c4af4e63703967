"""Pipedream's connection webhook, decided (docrelay.reconcile.connections): which deliveries
match a connection request, which accounts Pipedream's own answer lets through, and that a
request is used once. The gateway's I/O around it is tested against the real API server in
tests/cluster/test_connect_webhook.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devkit.standins.pipedream import PipedreamStandin
from devkit.standins.server import serving
from docrelay.actions import Refused
from docrelay.actions.accounts import connect_link
from docrelay.cli import main
from docrelay.pipedream import ConnectClient
from docrelay.reconcile.connections import (
    REQUEST_ANNOTATION,
    USED_ANNOTATION,
    ConnectRequest,
    Refusal,
    account_manifest,
    account_patch,
    check_account,
    check_delivery,
    digest,
    new_nonce,
    new_request,
    request_of,
    webhook_uri,
)

NOW = 1_800_000_000.0
NONCE = new_nonce()
TOKEN = "ctok_0123456789abcdef"


def request(**changes: Any) -> ConnectRequest:
    made = new_request(
        account="xero-finance",
        app="xero_accounting_api",
        external_user="finance-team",
        environment="development",
        nonce=NONCE,
        connect_token=TOKEN,
        now=NOW,
    )
    return ConnectRequest(**{**made.__dict__, **changes})


def success(**changes: Any) -> dict[str, Any]:
    return {
        "event": "CONNECTION_SUCCESS",
        "connect_token": TOKEN,
        "environment": "development",
        "connect_session_id": 123,
        "account": {"id": "apn_new1", "external_id": "finance-team"},
        **changes,
    }


def pipedream_account(**changes: Any) -> dict[str, Any]:
    return {
        "id": "apn_new1",
        "external_id": "finance-team",
        "healthy": True,
        "dead": False,
        "app": {"name_slug": "xero_accounting_api"},
        "created_at": "2027-01-15T08:00:30Z",  # NOW + 30 s
        **changes,
    }


def test_the_request_holds_digests_only_and_reads_back() -> None:
    made = request()
    text = made.annotation()
    assert NONCE not in text and TOKEN not in text
    assert made.nonceSha256 == digest(NONCE) and made.expiresAt == NOW + 4 * 3600
    integration = {"metadata": {"annotations": {REQUEST_ANNOTATION: text}}}
    assert request_of(integration) == made
    assert request_of({"metadata": {"annotations": {REQUEST_ANNOTATION: "{not json"}}}) is None
    assert request_of({"metadata": {"annotations": {REQUEST_ANNOTATION: '{"account": 1}'}}}) is None
    assert request_of({"metadata": {}}) is None and request_of(None) is None
    assert webhook_uri("https://gw.example/", "team-a", "export", NONCE) == (
        f"https://gw.example/v1/pipedream/connections/team-a/export/{NONCE}"
    )


def test_a_matching_success_names_its_account() -> None:
    found = check_delivery(request(), NONCE, success(), NOW + 60)
    assert (found.event, found.account_id) == ("CONNECTION_SUCCESS", "apn_new1")
    error = {"event": "CONNECTION_ERROR", "connect_token": TOKEN, "environment": "development"}
    assert check_delivery(request(), NONCE, error, NOW).account_id is None


@pytest.mark.parametrize(
    ("case", "pending", "nonce", "payload", "now", "status", "reason"),
    [
        ("no request", None, NONCE, success(), NOW, 404, "no such connection request"),
        ("forged nonce", request(), new_nonce(), success(), NOW, 404, "no such connection"),
        ("not a nonce", request(), "../../x", success(), NOW, 404, "no such connection"),
        ("expired", request(), NONCE, success(), NOW + 4 * 3600 + 1, 410, "expired"),
        ("other event", request(), NONCE, success(event="TRIGGER"), NOW, 422, "not a Pipedream"),
        ("not an object", request(), NONCE, ["CONNECTION_SUCCESS"], NOW, 422, "not a Pipedream"),
        ("other token", request(), NONCE, success(connect_token="ctok_x"), NOW, 403, "token"),
        ("no token", request(), NONCE, success(connect_token=None), NOW, 403, "token"),
        ("other environment", request(), NONCE, success(environment="production"), NOW, 403,
         "environment"),
        ("no account", request(), NONCE, success(account=None), NOW, 422, "names no"),
        ("bad account id", request(), NONCE, success(account={"id": "apn_../x"}), NOW, 422,
         "names no"),
    ],
)  # fmt: skip
def test_deliveries_that_do_not_match_are_refused(
    case: str, pending: ConnectRequest | None, nonce: str, payload: Any, now: float,
    status: int, reason: str,
) -> None:  # fmt: skip
    with pytest.raises(Refusal) as refused:
        check_delivery(pending, nonce, payload, now)
    assert refused.value.status == status, case
    assert reason in refused.value.reason
    assert TOKEN not in refused.value.reason and NONCE not in refused.value.reason


def test_pipedreams_own_answer_must_be_this_users_new_account_of_this_app() -> None:
    check_account(request(), "apn_new1", pipedream_account())
    check_account(request(), "apn_new1", pipedream_account(created_at="2027-01-15T07:56:00Z"))
    for changes, reason in [
        ({"id": "apn_other"}, "another account"),
        ({"external_id": "someone-else"}, "external user"),
        ({"app": {"name_slug": "slack"}}, "app"),
        ({"dead": True}, "dead"),
        ({"created_at": "2027-01-14T08:00:00Z"}, "before this connection request"),
        ({"created_at": None}, "before this connection request"),
    ]:
        with pytest.raises(Refusal) as refused:
            check_account(request(), "apn_new1", pipedream_account(**changes))
        assert refused.value.status == 403 and reason in refused.value.reason


def test_the_account_is_created_marked_and_a_replay_is_refused() -> None:
    made = account_manifest(request(), "apn_new1")
    assert made["metadata"] == {
        "name": "xero-finance",
        "annotations": {USED_ANNOTATION: digest(NONCE)},
    }
    assert made["spec"] == {
        "app": "xero_accounting_api",
        "accountId": "apn_new1",
        "externalUserId": "finance-team",
        "environment": "development",
    }
    dead = {"metadata": {"name": "xero-finance"}, "spec": {**made["spec"], "accountId": "apn_old"}}
    patch = account_patch(request(), "apn_new1", dead)
    assert patch["spec"]["accountId"] == "apn_new1"
    with pytest.raises(Refusal) as refused:
        account_patch(request(), "apn_new1", made)  # the same request, once more
    assert refused.value.status == 409


# --- the link that asks for the webhook (docrelay.actions.accounts.connect_link) ---------------
# Shared by the console and `docrelay connect --gateway-url`; the whole path through the real
# API server and the gateway is tests/cluster/test_connect_webhook.py.

GATEWAY = "https://gw.example/tenant"


class Patches:
    """Kube as connect_link uses it: only the Integration's patch, recorded (the real API server's
    answer to it is the cluster test's)."""

    def __init__(self) -> None:
        self.custom = self
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> dict[str, Any]:
        self.calls.append((namespace, plural, name, body))
        return {}


@pytest.fixture
def pipedream() -> Iterator[tuple[PipedreamStandin, ConnectClient]]:
    pd = PipedreamStandin()
    with (
        serving(pd.app) as server,
        ConnectClient(
            server.base_url, pd.project_id, "development", pd.client_id, pd.client_secret
        ) as client,
    ):
        yield pd, client


def test_a_link_with_the_gateway_asks_for_the_webhook_and_leaves_its_request(
    pipedream: tuple[PipedreamStandin, ConnectClient],
) -> None:
    pd, client = pipedream
    kube = Patches()
    made = connect_link(
        client, kube, "team-a", app="xero_accounting_api", external_user="finance-team",  # type: ignore[arg-type]
        gateway_url=GATEWAY, integration="export", account="xero-finance",
    )  # fmt: skip
    assert made.webhook and made.url.endswith("&app=xero_accounting_api")
    (asked,) = pd.recorded("/tokens", "POST")
    hook = asked.json()["webhook_uri"]
    prefix = f"{GATEWAY}/v1/pipedream/connections/team-a/export/"
    assert hook.startswith(prefix)
    nonce = hook.removeprefix(prefix)
    token = parse_qs(urlsplit(made.url).query)["token"][0]
    # The request on the Integration: what the gateway matches Pipedream's delivery against.
    ((namespace, plural, name, body),) = kube.calls
    assert (namespace, plural, name) == ("team-a", "integrations", "export")
    text = body["metadata"]["annotations"][REQUEST_ANNOTATION]
    assert nonce not in text and token not in text  # digests only
    pending = request_of(body)
    assert pending is not None
    assert (pending.account, pending.app, pending.externalUserId, pending.environment) == (
        "xero-finance", "xero_accounting_api", "finance-team", "development")  # fmt: skip
    delivery = {**success(connect_token=token), "account": {"id": "apn_new1"}}
    assert check_delivery(pending, nonce, delivery, pending.requestedAt + 60).account_id == (
        "apn_new1"
    )


def test_a_link_without_the_gateway_is_only_a_link(
    pipedream: tuple[PipedreamStandin, ConnectClient],
) -> None:
    pd, client = pipedream
    kube = Patches()
    made = connect_link(client, kube, "team-a", app="slack", external_user="ops")  # type: ignore[arg-type]
    assert not made.webhook and made.url.endswith("&app=slack")
    (asked,) = pd.recorded("/tokens", "POST")
    assert "webhook_uri" not in asked.json() and kube.calls == []
    with pytest.raises(Refused, match="needs the Integration"):
        connect_link(client, kube, "team-a", app="slack", external_user="ops",  # type: ignore[arg-type]
                     gateway_url=GATEWAY)  # fmt: skip
    assert len(pd.recorded("/tokens", "POST")) == 1 and kube.calls == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--gateway-url", GATEWAY], "--gateway-url needs --integration and --account"),
        (["--gateway-url", GATEWAY, "--integration", "export"], "needs --integration and"),
        (["--integration", "export", "--account", "xero"], "give --gateway-url too"),
        (["--gateway-url", "gw.example", "--integration", "export", "--account", "xero"],
         "is not the gateway's public URL"),
        (["--gateway-url", GATEWAY + "?x=1", "--integration", "export", "--account", "xero"],
         "is not the gateway's public URL"),
        (["--gateway-url", GATEWAY, "--integration", "export", "--account", "Xero_Finance"],
         "is not a ConnectedAccount name"),
    ],
)  # fmt: skip
def test_docrelay_connect_refuses_a_half_given_webhook_before_any_call(
    capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """Checked before the kubeconfig is even read (this one names no cluster): exit 2."""
    code = main(["connect", "slack", "--external-user", "ops", "--kubeconfig",
                 "/nonexistent/kubeconfig", *argv])  # fmt: skip
    assert code == 2
    assert says in capsys.readouterr().err


def test_docrelay_connect_help_says_how_the_gateway_creates_the_account(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["connect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--gateway-url URL", "--integration NAME", "--account NAME"):
        assert flag in text
    assert re.search(r"Pipedream reports the connection to the tenant gateway, which creates", text)
