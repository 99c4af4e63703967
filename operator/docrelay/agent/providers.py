"""Language-model clients: OpenAI-compatible chat completions and Anthropic Messages, on httpx.

The only module of the agent that does I/O. Both clients retry 429 and 5xx responses and
transport failures with exponential backoff, honouring `Retry-After` (and `retry-after-ms`),
a bounded number of times. The API key is sent in a header and never appears in an exception
message, a log line or a repr.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from docrelay.agent.chat import (
    Completion,
    Message,
    Provider,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    Usage,
)

__all__ = [
    "Anthropic",
    "Completion",
    "Message",
    "OpenAICompatible",
    "Provider",
    "ProviderError",
    "ProviderRejected",
    "ProviderSettings",
    "ProviderUnavailable",
    "RetryPolicy",
    "SecretKeyRef",
    "Usage",
    "build_provider",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

ANTHROPIC_VERSION = "2023-06-01"
USER_AGENT = "docrelay-agent"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)  # generation is slow; connecting is not
MAX_DETAIL = 300  # characters of a provider's error message kept in ours
# 429s that mean money or quota ran out, not "slow down": retrying cannot succeed.
QUOTA_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "enforced_spend_limit_reached"}
)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts in all (the first included); waits base * 2^(n-1) capped, or Retry-After."""

    max_attempts: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    # A longer Retry-After is not slept through (it would hold an operator thread): the
    # error carries it so the caller can schedule a later try.
    max_retry_after: float = 60.0

    def backoff(self, retry: int) -> float:
        return float(min(self.backoff_cap, self.backoff_base * 2 ** (retry - 1)))


def parse_retry_after(
    headers: httpx.Headers, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class _HttpProvider:
    """The shared request/retry loop; subclasses say how to build and read a request."""

    kind = "provider"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_tokens: int = 4096,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{self.kind}: base URL must be http(s)://host[/path]")
        self._base = str(url).rstrip("/")
        # Named in messages without credentials or query (either may hold a secret).
        self._where = f"{url.scheme}://{url.netloc.decode().rpartition('@')[2]}{url.path}"
        self._model = model
        self._api_key = api_key or None
        self._max_tokens = max_tokens
        self._retry = retry or RetryPolicy()
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._sleep = sleep
        self._now = now

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._where!r}, model={self._model!r})"

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> _HttpProvider:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- what subclasses provide -------------------------------------------------------------

    def _endpoint(self) -> str:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _body(self, system: str, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, data: dict[str, Any]) -> Completion:
        raise NotImplementedError

    # --- the loop ----------------------------------------------------------------------------

    def complete(
        self, system: str, messages: list[Message], max_tokens: int | None = None
    ) -> Completion:
        body = self._body(system, messages, max_tokens or self._max_tokens)
        headers = {"user-agent": USER_AGENT, **self._headers()}
        attempts = self._retry.max_attempts
        for attempt in range(1, attempts + 1):
            failure = self._attempt(self._endpoint(), headers, body, attempt)
            if isinstance(failure, Completion):
                return failure
            if attempt == attempts:
                failure.attempts = attempt
                raise failure
            delay = self._retry.backoff(attempt)
            if failure.retry_after is not None:
                if failure.retry_after > self._retry.max_retry_after:
                    failure.attempts = attempt
                    raise failure
                delay = failure.retry_after
            log.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)",
                self.kind, failure, delay, attempt + 1, attempts,
            )  # fmt: skip
            self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, url: str, headers: dict[str, str], body: dict[str, Any], attempt: int
    ) -> Completion | ProviderUnavailable:
        """A completion, or a retryable failure; raises what retrying cannot fix."""
        try:
            response = self._client.post(url, json=body, headers=headers)
        except httpx.TimeoutException as error:
            return ProviderUnavailable(
                f"{self.kind} at {self._where} timed out ({type(error).__name__})"
            )
        except httpx.TransportError as error:
            # httpx's text names the address only, never headers; redact anyway.
            return ProviderUnavailable(
                f"{self.kind} at {self._where} is unreachable: "
                f"{self._redact(str(error)) or type(error).__name__}"
            )
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                return self._parse(data)
            except (ValueError, KeyError, IndexError, TypeError) as error:
                raise ProviderError(
                    f"{self.kind} at {self._where} answered {status} with a body that is not "
                    f"a {self.kind} reply ({type(error).__name__})",
                    status=status,
                    attempts=attempt,
                ) from None
        code, detail = self._error_detail(response)
        message = f"{self.kind} at {self._where} answered {status}{detail}"
        retry_after = parse_retry_after(response.headers, self._now)
        if (status == 429 and code not in QUOTA_CODES) or status >= 500:
            return ProviderUnavailable(message, status=status, retry_after=retry_after)
        raise ProviderRejected(message, status=status, attempts=attempt)

    def _error_detail(self, response: httpx.Response) -> tuple[str | None, str]:
        """The error's code and `: message`, from either API's error shape, redacted."""
        try:
            data = response.json()
        except ValueError:
            return None, ""
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            return None, ""
        codes = [error.get(k) for k in ("code", "type")]
        details = error.get("details")
        if isinstance(details, dict):
            codes.insert(0, details.get("error_code"))
        code = next((c for c in codes if isinstance(c, str) and c in QUOTA_CODES), None)
        code = code or next((c for c in codes if isinstance(c, str)), None)
        text = error.get("message")
        if not isinstance(text, str) or not text:
            return code, f" ({code})" if code else ""
        text = self._redact(" ".join(text.split()))[:MAX_DETAIL]
        return code, f": {text}"

    def _redact(self, text: str) -> str:
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text


class OpenAICompatible(_HttpProvider):
    """POST {base}/chat/completions: OpenAI, vLLM, Ollama, LiteLLM and the like.

    `base_url` is what those servers document as the base, usually ending in `/v1`
    (`https://api.openai.com/v1`, `http://ollama:11434/v1`). Without an API key no
    Authorization header is sent (Ollama and many vLLM installs need none).
    """

    kind = "openai"

    def __init__(
        self,
        *,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # OpenAI's newer models want max_completion_tokens; compatible servers know max_tokens.
        self._max_tokens_field = max_tokens_field

    def _endpoint(self) -> str:
        return f"{self._base}/chat/completions"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _body(self, system: str, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        turns = [{"role": "system", "content": system}] if system else []
        turns += [{"role": m.role, "content": m.content} for m in messages]
        return {"model": self._model, "messages": turns, self._max_tokens_field: max_tokens}

    def _parse(self, data: dict[str, Any]) -> Completion:
        choice = data["choices"][0]
        content = choice["message"].get("content")
        if isinstance(content, list):  # some compatible servers answer with content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        usage = data.get("usage") or {}
        reason = choice.get("finish_reason")
        return Completion(
            text=content or "",
            model=data.get("model") or self._model,
            usage=Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")),
            stop_reason=reason,
            truncated=reason == "length",
        )


class Anthropic(_HttpProvider):
    """POST {base}/v1/messages with `x-api-key` and `anthropic-version`.

    `base_url` is the host, `https://api.anthropic.com`; a trailing `/v1` is accepted too.
    """

    kind = "anthropic"

    def __init__(self, *, anthropic_version: str = ANTHROPIC_VERSION, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._version = anthropic_version

    def _endpoint(self) -> str:
        base = self._base.removesuffix("/v1")
        return f"{base}/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _body(self, system: str, messages: list[Message], max_tokens: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "max_tokens": max_tokens,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if system:
            body["system"] = system
        return body

    def _parse(self, data: dict[str, Any]) -> Completion:
        blocks = data["content"]
        text = "".join(
            b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
        )
        usage = data.get("usage") or {}
        reason = data.get("stop_reason")
        return Completion(
            text=text,
            model=data.get("model") or self._model,
            usage=Usage(usage.get("input_tokens"), usage.get("output_tokens")),
            stop_reason=reason,
            truncated=reason == "max_tokens",
        )


# --- configuration -----------------------------------------------------------------------------

SecretName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
SecretKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]


class _Settings(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True
    )


class SecretKeyRef(_Settings):
    """Where the API key is: a key of a Secret in the operator's namespace (read at startup)."""

    name: SecretName
    key: SecretKey = "api-key"


class ProviderSettings(_Settings):
    """One install's language model. Holds a reference to the API key, never the key."""

    kind: Literal["openai", "anthropic"]
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] = Field(
        description="OpenAI-compatible: the API base, e.g. https://api.openai.com/v1; "
        "Anthropic: https://api.anthropic.com"
    )
    model: Annotated[
        str,
        StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$"),
    ]
    api_key_secret: SecretKeyRef | None = Field(
        default=None, description="None: send no key (a local vLLM or Ollama)."
    )
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=120.0, gt=0, le=900)
    max_tokens: int = Field(default=4096, ge=256, le=200_000)
    max_attempts: int = Field(default=4, ge=1, le=10, description="HTTP attempts per request.")
    backoff_base_seconds: float = Field(default=1.0, ge=0, le=60)
    backoff_cap_seconds: float = Field(default=30.0, ge=0, le=600)
    max_retry_after_seconds: float = Field(default=60.0, ge=0, le=600)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    anthropic_version: str = Field(default=ANTHROPIC_VERSION, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _backoff_order(self) -> ProviderSettings:
        if self.backoff_cap_seconds < self.backoff_base_seconds:
            raise ValueError("backoffCapSeconds must be at least backoffBaseSeconds")
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base_seconds,
            backoff_cap=self.backoff_cap_seconds,
            max_retry_after=self.max_retry_after_seconds,
        )

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout_seconds, connect=self.connect_timeout_seconds)


def build_provider(
    settings: ProviderSettings,
    api_key: str | None,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> OpenAICompatible | Anthropic:
    """The client `settings` describe; `api_key` is the value the operator read from the Secret."""
    common: dict[str, Any] = {
        "base_url": settings.base_url,
        "model": settings.model,
        "api_key": api_key,
        "timeout": settings.timeout(),
        "max_tokens": settings.max_tokens,
        "retry": settings.retry_policy(),
        "client": client,
        "sleep": sleep,
    }
    if settings.kind == "anthropic":
        return Anthropic(anthropic_version=settings.anthropic_version, **common)
    return OpenAICompatible(max_tokens_field=settings.max_tokens_field, **common)
