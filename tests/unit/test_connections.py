"""Pipedream's connection webhook, decided (docrelay.reconcile.connections): which deliveries
match a connection request, which accounts Pipedream's own answer lets through, and that a
request is used once. The gateway's I/O around it is tested against the real API server in
tests/cluster/test_connect_webhook.py."""

from __future__ import annotations

from typing import Any

import pytest

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
