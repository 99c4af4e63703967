"""The platform client against the stand-in over real HTTP: every method, the error types,
bounded retries honouring Retry-After, and the API key kept out of every message and log."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.standins import server
from devkit.standins.platform import HookReceiver, PlatformState, create_app
from devkit.standins.server import Switch
from docrelay.platform import (
    DEFAULT_TIMEOUT,
    AsyncPlatformClient,
    InvalidRequest,
    InvalidResponse,
    NotFound,
    PlatformClient,
    PlatformError,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    Unavailable,
)
from docrelay.platform.client import retry_after_seconds
from docrelay.platform.models import model_from_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "sk-platform-test-4f1b9c2e7a"
ORG = "dRlyOrg1"
INVOICE, RESUME = "XqLmNoPa", "RsUmEiOp"
INVOICES_WS, INVOICE_TYPE = "mEFayXdO", "tVpGRBWd"
FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, max_retry_after=5)


@pytest.fixture(scope="module")
def switch() -> Iterator[tuple[Switch, str]]:
    plug = Switch()
    with server.serving(plug) as running:
        yield plug, running.base_url


@pytest.fixture(scope="module")
def receiver_switch() -> Iterator[tuple[Switch, str]]:
    plug = Switch()
    with server.serving(plug) as running:
        yield plug, running.base_url


@pytest.fixture
def state(switch: tuple[Switch, str]) -> Iterator[PlatformState]:
    platform_state = PlatformState.from_dir(EXAMPLES, api_key=KEY)
    switch[0].app = create_app(platform_state)
    yield platform_state
    platform_state.close()


@pytest.fixture
def base_url(switch: tuple[Switch, str], state: PlatformState) -> str:
    return switch[1]


class Sleeps(list[float]):
    """Records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(base_url: str, sleeps: Sleeps) -> Iterator[PlatformClient]:
    with PlatformClient(base_url, KEY, retry=FAST, sleep=sleeps) as platform:
        yield platform


@pytest.fixture
def receiver(receiver_switch: tuple[Switch, str]) -> tuple[HookReceiver, str]:
    hooks = HookReceiver()
    receiver_switch[0].app = hooks.app()
    return hooks, f"{receiver_switch[1]}/hooks"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Every method.


def test_get_document_returns_the_documented_shape(
    client: PlatformClient, state: PlatformState
) -> None:
    document = client.get_document(INVOICE)
    assert set(document) == {"data", "meta", "error", "warnings"}
    assert document["meta"]["identifier"] == INVOICE
    assert document["data"]["lineItems"][1]["unitPrice"] == 189.95
    [request] = state.requests_to(f"/v3/documents/{INVOICE}")
    assert request.authorized and request.query == "compact=true"


def test_document_type_and_its_schema(client: PlatformClient) -> None:
    assert client.get_document_type(INVOICE_TYPE)["name"] == "Invoice"
    schema = client.get_document_type_schema(INVOICE_TYPE)
    assert schema["title"] == "Invoice" and "lineItems" in schema["required"]


def test_list_documents_most_recent_of_a_type(client: PlatformClient, state: PlatformState) -> None:
    documents = client.list_documents(workspace=INVOICES_WS, document_type=INVOICE_TYPE, limit=1)
    assert [d["meta"]["identifier"] for d in documents] == ["VbTrEwQz"]
    query = state.requests_to("/v3/documents")[-1].query
    assert "workspace=mEFayXdO" in query and "document_type=tVpGRBWd" in query
    assert "ordering=-created_dt" in query
    assert len(client.list_documents()) == 3
    with pytest.raises(ValueError):
        client.list_documents(limit=0)


def test_a_document_validates_against_its_type_fetched_over_http(client: PlatformClient) -> None:
    document = client.get_document(RESUME)
    type_id = document["meta"]["documentType"]
    model = model_from_schema(client.get_document_type_schema(type_id))
    resume: Any = model.model_validate(document["data"])
    assert resume.candidate_name.first_name == "Amelia"


def test_validation_results(client: PlatformClient) -> None:
    results = client.get_validation_results(INVOICE)
    assert {r["passed"] for r in results} == {True, False}
    assert client.get_validation_results(RESUME) == []


def test_subscription_lifecycle(
    client: PlatformClient, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    created = client.create_subscription(
        target, "document.parse.completed", ORG, workspace=INVOICES_WS
    )
    assert created["active"] is False and created["workspace"] == INVOICES_WS
    activated = client.activate_subscription(hooks.hook_secrets[0])
    assert activated["id"] == created["id"] and activated["active"] is True
    [activation] = state.requests_to("/v3/resthook_subscriptions/activate")
    assert activation.headers["x-hook-secret"] == hooks.hook_secrets[0]
    assert [s["id"] for s in client.list_subscriptions()] == [created["id"]]
    assert client.get_subscription(created["id"])["active"] is True
    client.delete_subscription(created["id"])
    assert client.list_subscriptions() == []
    with pytest.raises(NotFound):
        client.delete_subscription(created["id"])


def test_identifiers_cannot_escape_their_path_segment(
    client: PlatformClient, state: PlatformState
) -> None:
    with pytest.raises(NotFound):
        client.get_document(f"../document_types/{INVOICE_TYPE}")
    assert state.requests[-1].path == f"/v3/documents/../document_types/{INVOICE_TYPE}"
    with pytest.raises(ValueError):
        client.get_document("")


# Errors.


def test_wrong_key_is_unauthorized_and_not_retried(base_url: str, state: PlatformState) -> None:
    with (
        PlatformClient(base_url, "not-the-key", retry=FAST) as platform,
        pytest.raises(Unauthorized) as caught,
    ):
        platform.get_document(INVOICE)
    error = caught.value
    assert error.status == 401 and error.code == "authentication_failed"
    assert not error.retryable
    assert (
        str(error) == f"GET /v3/documents/{INVOICE} answered 401 authentication_failed: "
        "Invalid token."
    )
    assert "not-the-key" not in str(error)
    assert len(state.requests) == 1


def test_unknown_document_is_not_found(client: PlatformClient, sleeps: Sleeps) -> None:
    with pytest.raises(NotFound) as caught:
        client.get_document("nope1234")
    assert caught.value.status == 404 and caught.value.code == "not_found"
    assert isinstance(caught.value, PlatformError) and not caught.value.retryable
    assert sleeps == []


def test_bad_request_is_invalid_request_naming_the_field(
    client: PlatformClient, receiver: tuple[HookReceiver, str]
) -> None:
    _, target = receiver
    with pytest.raises(InvalidRequest) as caught:
        client.create_subscription(target, "document.parse.completed", "someoneElse")
    assert caught.value.status == 400
    assert "organization: Organization not found." in str(caught.value)
    with pytest.raises(InvalidRequest):
        client.activate_subscription("not-a-secret")


# Retries.


def test_429_then_200_waits_as_long_as_retry_after_says(
    client: PlatformClient, state: PlatformState, sleeps: Sleeps
) -> None:
    state.fail_next(429, count=1, retry_after=2)
    assert client.get_document(INVOICE)["meta"]["identifier"] == INVOICE
    assert sleeps == [2.0]  # the backoff alone would be ~0.001 s
    assert len(state.requests_to(f"/v3/documents/{INVOICE}")) == 2


def test_retries_really_wait_with_tiny_delays(base_url: str, state: PlatformState) -> None:
    state.fail_next(429, count=1, retry_after=0)
    state.fail_next(503, count=1)
    with PlatformClient(base_url, KEY, retry=FAST) as platform:  # the real time.sleep
        assert platform.get_document_type(INVOICE_TYPE)["identifier"] == INVOICE_TYPE
    assert len(state.requests_to(f"/v3/document_types/{INVOICE_TYPE}")) == 3


def test_500_every_time_is_unavailable_after_the_bounded_attempts(
    client: PlatformClient, state: PlatformState, sleeps: Sleeps
) -> None:
    state.fail_next(500, count=10)
    with pytest.raises(Unavailable) as caught:
        client.get_document(INVOICE)
    assert caught.value.status == 500 and caught.value.retryable
    assert len(state.requests_to(f"/v3/documents/{INVOICE}")) == FAST.attempts
    assert len(sleeps) == FAST.attempts - 1
    assert all(0 < s <= FAST.max_delay for s in sleeps)


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=1, max_delay=8)
    ceilings = [1, 2, 4, 8, 8, 8]
    for attempt, ceiling in enumerate(ceilings, start=1):
        for _ in range(20):
            assert ceiling / 2 <= policy.backoff(attempt) <= ceiling


def test_429_every_time_is_rate_limited_with_retry_after(
    client: PlatformClient, state: PlatformState
) -> None:
    state.fail_next(429, count=10, retry_after=1)
    with pytest.raises(RateLimited) as caught:
        client.get_document(INVOICE)
    assert caught.value.retry_after == 1.0 and caught.value.retryable
    assert len(state.requests_to(f"/v3/documents/{INVOICE}")) == FAST.attempts


def test_a_retry_after_beyond_the_bound_is_handed_to_the_caller(
    client: PlatformClient, state: PlatformState, sleeps: Sleeps
) -> None:
    state.fail_next(429, count=1, retry_after=3600)
    with pytest.raises(RateLimited) as caught:
        client.get_document(INVOICE)
    assert caught.value.retry_after == 3600.0
    assert sleeps == [] and len(state.requests) == 1


def test_creating_a_subscription_is_not_repeated_after_a_500(
    client: PlatformClient, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    _, target = receiver
    state.fail_next(500, count=1)
    with pytest.raises(Unavailable):
        client.create_subscription(target, "document.parse.completed", ORG)
    assert len(state.requests_to("/v3/resthook_subscriptions", "POST")) == 1
    # A 429 means the platform did nothing: that one is retried.
    state.fail_next(429, count=1, retry_after=0)
    created = client.create_subscription(target, "document.parse.completed", ORG)
    assert len(state.requests_to("/v3/resthook_subscriptions", "POST")) == 3
    assert list(state.subscriptions) == [created["id"]]


def test_no_connection_is_unavailable_after_retries(sleeps: Sleeps) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with (
        PlatformClient(nowhere, KEY, retry=FAST, sleep=sleeps) as platform,
        pytest.raises(Unavailable) as caught,
    ):
        platform.get_document(INVOICE)
    assert str(caught.value) == f"GET /v3/documents/{INVOICE} failed: ConnectError"
    assert caught.value.status is None and caught.value.__cause__ is None
    assert len(sleeps) == FAST.attempts - 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("soon", None),
    ],
)
def test_retry_after_values(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(later, now=now.timestamp()) == 30.0


# The key stays secret.


def _raise_each_error(base_url: str, state: PlatformState, target: str) -> list[PlatformError]:
    errors: list[PlatformError] = []

    def failing(status: int, platform: PlatformClient) -> None:
        state.fail_next(status, count=3, retry_after=0)
        platform.get_document(INVOICE)

    attempts: list[Any] = [
        lambda p: p.get_document("nope1234"),
        lambda p: p.create_subscription(target, "document.parse.completed", "other"),
        lambda p: failing(500, p),
        lambda p: failing(429, p),
    ]
    with PlatformClient(base_url, KEY, retry=FAST) as platform:
        for attempt in attempts:
            try:
                attempt(platform)
            except PlatformError as exc:
                errors.append(exc)
    with PlatformClient(base_url, KEY + "x", retry=FAST) as wrong:
        try:
            wrong.get_document(INVOICE)
        except PlatformError as exc:
            errors.append(exc)
    return errors


def test_the_api_key_never_appears_in_errors_or_logs(
    base_url: str,
    state: PlatformState,
    receiver: tuple[HookReceiver, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors = _raise_each_error(base_url, state, receiver[1])
    assert [type(e) for e in errors] == [
        NotFound,
        InvalidRequest,
        Unavailable,
        RateLimited,
        Unauthorized,
    ]
    for error in errors:
        for text in (str(error), repr(error), repr(error.args), repr(vars(error))):
            assert KEY not in text
    assert KEY not in caplog.text
    assert "attempt 2 of 3" in caplog.text  # the retries were logged, without the key
    assert KEY not in repr(PlatformClient(base_url, KEY))


def test_a_key_echoed_by_the_server_is_scrubbed_from_the_message() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        detail = f"bad token {request.headers['authorization']}"
        body = {"type": "client_error", "errors": [{"attr": None, "code": "x", "detail": detail}]}
        return httpx.Response(403, json=body)

    with (
        PlatformClient("http://platform.test", KEY, transport=httpx.MockTransport(echo)) as p,
        pytest.raises(Unauthorized) as caught,
    ):
        p.get_document(INVOICE)
    assert KEY not in str(caught.value) and "Bearer ***" in str(caught.value)


def test_a_success_without_the_promised_json_is_invalid_response() -> None:
    def html(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>maintenance</html>")

    with PlatformClient("http://platform.test", KEY, transport=httpx.MockTransport(html)) as p:
        with pytest.raises(InvalidResponse):
            p.get_document(INVOICE)
        with pytest.raises(InvalidResponse):
            p.list_subscriptions()


def test_timeouts_follow_the_runtime_contract() -> None:
    assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read) == (5.0, 30.0)


# The async twin.


def test_async_client_fetches_and_retries(base_url: str, state: PlatformState) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        state.fail_next(503, count=1, retry_after=1)
        async with AsyncPlatformClient(base_url, KEY, retry=FAST, sleep=sleep) as platform:
            document = await platform.get_document(RESUME)
            documents = await platform.list_documents(document_type="pLmNbVcX")
            with pytest.raises(NotFound):
                await platform.get_document_type_schema("nope1234")
            return document, documents

    document, documents = asyncio.run(main())
    assert document["data"]["candidateName"]["familyName"] == "Chen"
    assert [d["meta"]["identifier"] for d in documents] == [RESUME]
    assert waits == [1.0]
