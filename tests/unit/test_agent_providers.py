"""The language-model clients against the stand-in, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from devkit.standins.llm import Fault, LLMStandIn, Reply, serving_llm
from docrelay.agent.providers import (
    Anthropic,
    Message,
    OpenAICompatible,
    ProviderError,
    ProviderRejected,
    ProviderSettings,
    ProviderUnavailable,
    RetryPolicy,
    build_provider,
    parse_retry_after,
)
from tests.leakcheck import assert_clean, canary

KEY = canary(header=True)  # sent in a header
HELLO = [Message("user", "say hello")]


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[LLMStandIn, str]]:
    with serving_llm(api_key=KEY) as (stand_in, server):
        yield stand_in, server.base_url


@pytest.fixture
def llm(served: tuple[LLMStandIn, str]) -> Iterator[LLMStandIn]:
    stand_in, _ = served
    stand_in.clear()
    stand_in.respond_with(None)
    yield stand_in
    stand_in.clear()


@pytest.fixture
def base(served: tuple[LLMStandIn, str]) -> str:
    return served[1]


def openai(base: str, sleeps: list[float] | None = None, **kwargs: Any) -> OpenAICompatible:
    return OpenAICompatible(
        base_url=base + "/v1",
        model="gpt-test",
        api_key=kwargs.pop("api_key", KEY),
        sleep=(sleeps if sleeps is not None else []).append,
        **kwargs,
    )


def anthropic(base: str, sleeps: list[float] | None = None, **kwargs: Any) -> Anthropic:
    return Anthropic(
        base_url=base,
        model="claude-test",
        api_key=kwargs.pop("api_key", KEY),
        sleep=(sleeps if sleeps is not None else []).append,
        **kwargs,
    )


# --- round trips -------------------------------------------------------------------------------


def test_openai_round_trip(llm: LLMStandIn, base: str) -> None:
    llm.script(Reply("hello", model="gpt-test-2026-01-01"))
    with openai(base) as provider:
        completion = provider.complete("be brief", HELLO, max_tokens=50)
    assert completion.text == "hello"
    assert completion.model == "gpt-test-2026-01-01"
    assert completion.usage.input_tokens and completion.usage.output_tokens == 1
    assert completion.stop_reason == "stop" and not completion.truncated
    [request] = llm.requests
    assert request.path == "/v1/chat/completions"
    assert request.authorized
    assert request.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert request.body["max_tokens"] == 50
    assert request.messages == (("user", "say hello"),)


def test_openai_max_completion_tokens_and_no_key(base: str) -> None:
    with serving_llm() as (stand_in, server):  # a local server that checks no key
        stand_in.script("ok")
        provider = OpenAICompatible(
            base_url=server.base_url + "/v1",
            model="llama3",
            max_tokens_field="max_completion_tokens",
            max_tokens=77,
        )
        assert provider.complete("", HELLO).text == "ok"
        [request] = stand_in.requests
    assert request.body["max_completion_tokens"] == 77 and "max_tokens" not in request.body
    assert "authorization" not in request.headers
    assert request.body["messages"] == [{"role": "user", "content": "say hello"}]


def test_anthropic_round_trip(llm: LLMStandIn, base: str) -> None:
    llm.script(Reply("bonjour"))
    with anthropic(base, max_tokens=123) as provider:
        completion = provider.complete("be brief", HELLO)
    assert completion.text == "bonjour"
    assert completion.model == "claude-test"
    assert completion.stop_reason == "end_turn"
    [request] = llm.requests
    assert request.path == "/v1/messages"
    assert request.authorized
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.body["system"] == "be brief"
    assert request.body["max_tokens"] == 123
    assert request.body["messages"] == [{"role": "user", "content": "say hello"}]


def test_anthropic_accepts_a_base_ending_in_v1(llm: LLMStandIn, base: str) -> None:
    llm.script("ok")
    assert anthropic(base + "/v1/").complete("", HELLO).text == "ok"
    assert llm.requests[0].path == "/v1/messages"


@pytest.mark.parametrize("make", [openai, anthropic])
def test_truncated_reply_is_reported(llm: LLMStandIn, base: str, make: Any) -> None:
    llm.script(Reply("def lambda_handler(", truncated=True))
    completion = make(base).complete("", HELLO)
    assert completion.truncated
    assert completion.stop_reason in ("length", "max_tokens")


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [openai, anthropic])
def test_429_then_200_waits_as_retry_after_says(llm: LLMStandIn, base: str, make: Any) -> None:
    llm.script(Fault.rate_limited(retry_after="2"), "fine")
    sleeps: list[float] = []
    assert make(base, sleeps).complete("", HELLO).text == "fine"
    assert sleeps == [2.0]
    assert len(llm.requests) == 2


def test_retry_after_as_an_http_date(llm: LLMStandIn, base: str) -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    llm.script(Fault.rate_limited(retry_after=format_datetime(now + timedelta(seconds=7), True)))
    llm.script("fine")
    sleeps: list[float] = []
    assert openai(base, sleeps, now=lambda: now).complete("", HELLO).text == "fine"
    assert sleeps == [7.0]


def test_5xx_and_drops_back_off_exponentially(llm: LLMStandIn, base: str) -> None:
    llm.script(Fault.server_error(500), Fault.dropped(), Fault.server_error(529), "fine")
    sleeps: list[float] = []
    retry = RetryPolicy(max_attempts=4, backoff_base=0.5, backoff_cap=1.5)
    assert anthropic(base, sleeps, retry=retry).complete("", HELLO).text == "fine"
    assert sleeps == [0.5, 1.0, 1.5]  # base * 2^(n-1), capped


def test_retries_are_bounded(llm: LLMStandIn, base: str) -> None:
    llm.script(*[Fault.server_error(503)] * 5)
    sleeps: list[float] = []
    with pytest.raises(ProviderUnavailable) as caught:
        openai(base, sleeps, retry=RetryPolicy(max_attempts=3)).complete("", HELLO)
    assert len(llm.requests) == 3
    assert len(sleeps) == 2
    assert caught.value.status == 503
    assert caught.value.attempts == 3
    assert "answered 503: the server had an error" in str(caught.value)


def test_a_long_retry_after_is_handed_to_the_caller(llm: LLMStandIn, base: str) -> None:
    llm.script(Fault.rate_limited(retry_after="3600"))
    sleeps: list[float] = []
    with pytest.raises(ProviderUnavailable) as caught:
        openai(base, sleeps).complete("", HELLO)
    assert sleeps == []  # not slept through
    assert caught.value.retry_after == 3600.0
    assert len(llm.requests) == 1


def test_provider_down_is_unavailable(base: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now: every connection is refused.
    sleeps: list[float] = []
    provider = OpenAICompatible(
        base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key=KEY, sleep=sleeps.append
    )
    with pytest.raises(ProviderUnavailable) as caught:
        provider.complete("", HELLO)
    assert f"openai at http://127.0.0.1:{port}/v1 is unreachable" in str(caught.value)
    assert caught.value.attempts == 4
    assert len(sleeps) == 3


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [openai, anthropic])
def test_wrong_key_is_rejected_without_retry_or_leak(
    llm: LLMStandIn, base: str, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = canary(header=True)
    sleeps: list[float] = []
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderRejected) as caught:
        make(base, sleeps, api_key=wrong).complete("", HELLO)
    assert caught.value.status == 401
    assert sleeps == [] and len(llm.requests) == 1
    assert not llm.requests[0].authorized
    assert_clean(str(caught.value) + caplog.text, [wrong], "the error and the log")
    assert_clean(repr(make(base, api_key=wrong)), [wrong], "the provider's repr")


def test_a_key_echoed_by_the_provider_is_redacted(llm: LLMStandIn, base: str) -> None:
    llm.script(Fault.rejected(400, f"bad request for key {KEY}"))
    with pytest.raises(ProviderRejected) as caught:
        openai(base).complete("", HELLO)
    assert_clean(str(caught.value), [KEY], "the error")
    assert "bad request for key ***" in str(caught.value)


def test_retries_are_logged_without_the_key(
    llm: LLMStandIn, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm.script(Fault.rejected(500, f"boom {KEY}"), "fine")
    caplog.set_level(logging.DEBUG)
    assert openai(base).complete("", HELLO).text == "fine"
    assert "retrying in 1.0 s" in caplog.text
    assert_clean(caplog.text, [KEY], "the log")


@pytest.mark.parametrize("code", ["insufficient_quota", "enforced_spend_limit_reached"])
def test_a_429_for_exhausted_quota_is_not_retried(llm: LLMStandIn, base: str, code: str) -> None:
    llm.script(Fault.rate_limited(retry_after="1", code=code))
    sleeps: list[float] = []
    with pytest.raises(ProviderRejected) as caught:
        anthropic(base, sleeps).complete("", HELLO)
    assert caught.value.status == 429 and sleeps == []


def test_a_reply_that_is_not_the_api_shape_is_an_error(base: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    provider = OpenAICompatible(
        base_url="http://llm.invalid/v1",
        model="m",
        client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(ProviderError, match="not a openai reply"):
        provider.complete("", HELLO)


def test_the_stand_in_refuses_anthropic_without_a_version_header(
    llm: LLMStandIn, base: str
) -> None:
    response = httpx.post(
        base + "/v1/messages",
        headers={"x-api-key": KEY},
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- Retry-After parsing and settings ----------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "Sun, 01 Mar 2026 12:00:30 GMT"}, 30.0),
        ({"retry-after": "Sun, 01 Mar 2026 11:00:00 GMT"}, 0.0),  # in the past
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers), lambda: NOW) == expected


def test_settings_build_either_provider(llm: LLMStandIn, base: str) -> None:
    settings = ProviderSettings.model_validate(
        {
            "kind": "anthropic",
            "baseUrl": base,
            "model": "claude-test",
            "apiKeySecret": {"name": "llm-credentials"},
            "maxAttempts": 2,
            "readTimeoutSeconds": 30,
        }
    )
    assert settings.api_key_secret is not None and settings.api_key_secret.key == "api-key"
    llm.script(Fault.server_error(), "via settings")
    sleeps: list[float] = []
    provider = build_provider(settings, KEY, sleep=sleeps.append)
    assert isinstance(provider, Anthropic)
    assert provider.complete("", HELLO).text == "via settings"
    assert sleeps == [1.0]
    openai_settings = settings.model_copy(update={"kind": "openai"})
    assert isinstance(build_provider(openai_settings, None), OpenAICompatible)


@pytest.mark.parametrize(
    "changes",
    [
        {"kind": "gemini"},
        {"baseUrl": "ftp://llm.example"},
        {"model": ""},
        {"maxAttempts": 0},
        {"apiKey": "sk-inline-value"},  # a value is never configuration
        {"backoffBaseSeconds": 10, "backoffCapSeconds": 5},
    ],
)
def test_invalid_settings(changes: dict[str, Any]) -> None:
    spec = {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-x"}
    with pytest.raises(ValidationError):
        ProviderSettings.model_validate(spec | changes)
