"""Connected accounts, pure parts: a Connect answer -> the account's status and Ready; the
accounts' health -> an Integration's AccountsReady; the credentials Secret; the broker's
reading of an api_request and its mapping of Connect errors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from docrelay.gateway.accounts import Refused, parse_proxy_call, refusal_for, resolve_account
from docrelay.models import ConnectedAccount, Integration
from docrelay.pipedream import (
    ActionFailed,
    ConnectError,
    ConnectUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamTimeout,
)
from docrelay.pipedream.credentials import CredentialsError, credentials_from_secret
from docrelay.reconcile.accounts import (
    AccountCheck,
    account_health,
    account_status,
    accounts_verdict,
    needs_check,
    status_patch,
)
from docrelay.reconcile.integration import Observed, plan_integration
from tests.leakcheck import assert_clean, canary

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
APN = "apn_abc123"
CLIENT_SECRET = canary()


def account(status: dict[str, Any] | None = None, generation: int = 2, **spec: Any) -> Any:
    return ConnectedAccount.model_validate({
        "metadata": {"name": "xero", "namespace": "team", "generation": generation},
        "spec": {"app": "xero_accounting_api", "accountId": APN, "externalUserId": "fin",
                 **spec},
        "status": status,
    })


def answer(**fields: Any) -> dict[str, Any]:
    return {"id": APN, "external_id": "fin", "healthy": True, "dead": False,
            "app": {"name_slug": "xero_accounting_api"}, "expires_at": None, **fields}


@pytest.mark.parametrize(
    ("check", "status", "reason", "says"),
    [
        (AccountCheck(account=answer()), "True", "Healthy", "is healthy"),
        (AccountCheck(account=answer(expires_at="2026-05-01T00:00:00.000Z")), "True", "Healthy",
         "expire at 2026-05-01T00:00:00+00:00"),
        (AccountCheck(account=answer(dead=True, healthy=False)), "False", "Dead",
         "connect it again"),
        (AccountCheck(account=answer(healthy=False)), "False", "Unhealthy", "unhealthy"),
        (AccountCheck(not_found=True), "False", "NotFound", "does not exist"),
        (AccountCheck(account=answer(app={"name_slug": "slack"})), "False", "AppMismatch",
         "an account of app slack, not xero_accounting_api"),
        (AccountCheck(account=answer(external_id="someone")), "False", "NotFound",
         "another external user"),
        (AccountCheck(problem="Pipedream answered 503 to GET account"), "Unknown", "CheckFailed",
         "could not ask Pipedream"),
    ],
)
def test_account_status(check: AccountCheck, status: str, reason: str, says: str) -> None:
    result = account_status(account(), check, NOW)
    (ready,) = result.conditions
    assert (ready.type, ready.status.value, ready.reason) == ("Ready", status, reason)
    assert says in ready.message and APN in ready.message
    assert result.observed_generation == 2 and result.last_checked_at == NOW


def test_flags_and_expiry_are_kept_when_pipedream_cannot_be_asked() -> None:
    first = account_status(account(), AccountCheck(account=answer(dead=True)), NOW)
    old = account(status=first.model_dump(mode="json", by_alias=True, exclude_none=True))
    later = account_status(old, AccountCheck(problem="unreachable"), NOW)
    assert (later.healthy, later.dead) == (True, True)
    gone = account_status(old, AccountCheck(not_found=True), NOW)
    patch = status_patch(gone)
    assert patch["healthy"] is None and patch["dead"] is None and patch["expiresAt"] is None


def test_transition_time_moves_only_when_ready_changes() -> None:
    first = account_status(account(), AccountCheck(account=answer()), NOW)
    old = account(status=first.model_dump(mode="json", by_alias=True, exclude_none=True))
    later = datetime(2026, 3, 4, 6, 0, 0, tzinfo=UTC)
    same = account_status(old, AccountCheck(account=answer()), later)
    assert same.conditions[0].last_transition_time == first.conditions[0].last_transition_time
    dead = account_status(old, AccountCheck(account=answer(dead=True)), later)
    assert dead.conditions[0].last_transition_time == later


def obj(name: str, reason: str | None, generation: int = 1, observed: int | None = 1) -> dict:
    status: dict[str, Any] = {"observedGeneration": observed}
    if reason:
        status["conditions"] = [{"type": "Ready", "reason": reason}]
    return {"metadata": {"name": name, "generation": generation}, "status": status}


def test_health_and_needs_check() -> None:
    assert account_health(obj("a", "Dead")) == "Dead"
    assert account_health(obj("a", "Dead", generation=2)) == "NotChecked"  # edited since
    assert account_health(obj("a", None)) == "NotChecked"
    assert needs_check(obj("a", None, observed=None))
    assert not needs_check(obj("a", "Healthy"))


@pytest.mark.parametrize(
    ("health", "ok", "reason", "says"),
    [
        ({"a": "Healthy", "b": "Healthy"}, True, "AccountsPresent", "every connected account"),
        ({"a": "Healthy", "b": "NotChecked"}, True, "AccountsPresent", "not known yet: b"),
        ({"a": "Healthy", "b": "CheckFailed"}, True, "AccountsPresent", "not known yet: b"),
        ({"a": "Dead", "b": "Healthy"}, False, "AccountDead", "dead at Pipedream"),
        ({"a": "Unhealthy", "b": "AppMismatch"}, False, "AccountUnhealthy",
         "a (unhealthy), b (of another app)"),
        ({"a": "Dead"}, False, "AccountsMissing", "not found in namespace team: b"),
    ],
)
def test_accounts_verdict(health: dict[str, str], ok: bool, reason: str, says: str) -> None:
    verdict = accounts_verdict("team", ["a", "b"], health)
    assert (verdict.ok, verdict.reason) == (ok, reason)
    assert says in verdict.message
    if reason == "AccountsMissing" and "a" in health:
        assert "dead at Pipedream" in verdict.message and ": a" in verdict.message


def test_an_integration_names_its_dead_account() -> None:
    integration = Integration.model_validate({
        "metadata": {"name": "orders", "namespace": "team", "generation": 1},
        "spec": {"workspace": "ws", "documentType": "dt", "trigger": "DocumentValidated",
                 "code": "def lambda_handler(e, c):\n    return 1\n",
                 "connectedAccounts": ["xero", "slack"]},
    })
    plan = plan_integration(Observed(
        integration, (), frozenset(), frozenset({"xero", "slack"}), None, NOW,
        account_health={"xero": "Dead", "slack": "Healthy"},
    ))
    conditions = {c.type: c for c in plan.status.conditions}
    accounts = conditions["AccountsReady"]
    assert (accounts.status.value, accounts.reason) == ("False", "AccountDead")
    assert "xero" in accounts.message and "slack" not in accounts.message
    assert (conditions["Ready"].status.value, conditions["Ready"].reason) == (
        "False", "AccountDead")


def b64(**values: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def test_credentials_from_the_secret() -> None:
    full = b64(client_id="id", client_secret=CLIENT_SECRET, project_id="proj_abc",
               environment="development", url="http://127.0.0.1:1")
    credentials = credentials_from_secret(full)
    assert (credentials.project_id, credentials.environment) == ("proj_abc", "development")
    assert_clean(repr(credentials), [CLIENT_SECRET], "the credentials' repr")
    assert credentials_from_secret(b64(client_id="i", client_secret="s",
                                       project_id="proj_a")).url == "https://api.pipedream.com"
    for data, says in (
        (None, "no Secret docrelay-pipedream"),
        (b64(client_id="i", project_id="proj_a"), "lacks client_secret"),
        (b64(client_id="i", client_secret=CLIENT_SECRET, project_id="p"), "not a Pipedream"),
        ({**full, **b64(environment="staging")}, "development or production"),
        ({**full, "url": "%%%"}, "not base64"),
    ):
        with pytest.raises(CredentialsError, match=says) as bad:
            credentials_from_secret(data)
        assert_clean(str(bad.value), [CLIENT_SECRET], "the error")


LISTED = {"xero": {"spec": {"accountId": APN}}, "gone": None}


@pytest.mark.parametrize(
    ("requested", "status"),
    [("xero", None), (APN, None), ("gone", 403), ("slack", 403), ("apn_other", 403)],
)
def test_resolve_account(requested: str, status: int | None) -> None:
    if status is None:
        assert resolve_account(LISTED, requested) == LISTED["xero"]
    else:
        with pytest.raises(Refused) as refused:
            resolve_account(LISTED, requested)
        assert refused.value.status == status


def test_parse_proxy_call() -> None:
    call = parse_proxy_call({
        "url": "https://api.xero.com/x", "method": "put", "headers": {"A": "b"},
        "params": {"q": 1}, "json": {"k": [1]},
        "files": [{"field": "f", "filename": "a.pdf", "contentBase64": "AAE="}],
    })
    assert (call.method, call.body, call.params) == ("PUT", {"k": [1]}, {"q": 1})
    assert call.files == [("f", ("a.pdf", b"\0\1", "application/octet-stream"))]
    assert parse_proxy_call({"url": "http://h", "bodyBase64": "AAE="}).body == b"\0\1"
    assert parse_proxy_call({"url": "http://h", "text": "x"}).body == "x"
    for bad in (
        [], {}, {"url": "ftp://h"}, {"url": "/relative"}, {"url": "http://h", "method": "TRACE"},
        {"url": "http://h", "headers": {"a": 1}}, {"url": "http://h", "params": []},
        {"url": "http://h", "bodyBase64": "%%"}, {"url": "http://h", "files": []},
        {"url": "http://h", "files": [{"contentBase64": "AA=="}]},
        {"url": "http://h", "data": 3},
    ):
        with pytest.raises(Refused) as refused:
            parse_proxy_call(bad)
        assert refused.value.status == 400


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (RateLimited("x", retry_after=2.5), 429, 3),
        (RateLimited("x", retry_after=None), 429, 1),
        (RateLimited("x", retry_after=0.2, status_code=None), 429, 1),
        (UpstreamTimeout("x", status_code=504), 504, 5),
        (ConnectUnavailable("x"), 503, 5),
        (Unauthorized("x", status_code=401), 502, None),
        (NotFound("x", status_code=404), 404, None),
        (ActionFailed("x"), 422, None),
        (ConnectError("x", status_code=500, retryable=True), 503, 5),
        (ConnectError("x", status_code=400), 502, None),
    ],
)
def test_connect_errors_as_answers(error: ConnectError, status: int, retry_after: int) -> None:
    refused = refusal_for(error)
    assert (refused.status, refused.retry_after) == (status, retry_after)
    assert "x" not in refused.reason.split()  # our words, never the error's text


def test_events_only_when_the_health_changes() -> None:
    from docrelay.handlers.accounts import health_event

    def ready(status: str, reason: str) -> Any:
        return account_status(account(), AccountCheck(account=answer()), NOW).conditions[
            0
        ].model_copy(update={"status": status, "reason": reason})

    healthy, dead, unknown = ready("True", "Healthy"), ready("False", "Dead"), ready(
        "Unknown", "CheckFailed")
    assert health_event(None, healthy) is None
    assert health_event(None, dead) == "Warning"
    assert health_event(healthy, dead) == "Warning"
    assert health_event(dead, dead) is None
    assert health_event(dead, healthy) == "Normal"
    assert health_event(healthy, unknown) is None
    assert health_event(dead, ready("False", "Unhealthy")) == "Warning"
