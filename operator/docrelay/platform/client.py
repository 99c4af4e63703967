"""An httpx client for the document platform's v3 API (references.md §1).

Each endpoint is described once as an `ApiRequest` (method, path, query, body, how to read
the answer); the sync `PlatformClient` and the async `AsyncPlatformClient` only differ in how
they send it and how they wait between attempts.

Retries: 429 always (the platform did nothing), and 5xx, timeouts and lost connections for
idempotent requests only; creating a subscription is retried only when the request never
reached the platform, so a retry cannot create two subscriptions. Waits grow exponentially
with jitter and are never shorter than the platform's `Retry-After`; attempts are bounded.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from docrelay.platform.errors import (
    InvalidRequest,
    InvalidResponse,
    NotFound,
    PlatformError,
    RateLimited,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger("docrelay.platform")

# The runtime contract's recommended outbound timeouts: connect 5 s, read 30 s.
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
DEFAULT_VERSION = "v3"
_DETAIL_LIMIT = 200

T = TypeVar("T")
JSONDict = dict[str, Any]


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try. Delays in seconds: tests pass tiny ones."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After longer than this is not waited for: the caller gets RateLimited (or
    # Unavailable) with `retry_after` set and can schedule the retry itself.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Full jitter over an exponentially growing ceiling (attempt 1 is the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class ApiRequest(Generic[T]):
    """One call of the API, independent of the transport."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Safe to send twice: GET, DELETE and activation. A create is not.
    idempotent: bool = True
    expect_body: bool = True


def _segment(identifier: str | int) -> str:
    """An identifier as one path segment: no `/` or `..` can change the path."""
    text = str(identifier)
    if not text:
        raise ValueError("identifier must not be empty")
    return quote(text, safe="")


def _dict(value: Any) -> JSONDict:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def _results(value: Any) -> list[JSONDict]:
    """List endpoints answer `{count, next, previous, results}`; some answer a bare array."""
    items = value.get("results") if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise TypeError("expected a list of JSON objects")
    return items


def _nothing(_: Any) -> None:
    return None


# The endpoints: pure descriptions, shared by both clients.


def get_document(identifier: str, compact: bool = True) -> ApiRequest[JSONDict]:
    # compact=true: `data` holds parsed values (what the document type's JSON schema
    # describes), not the annotation objects with coordinates and confidences.
    params = {"compact": "true"} if compact else {}
    return ApiRequest("GET", f"/v3/documents/{_segment(identifier)}", _dict, params)


def get_document_type(identifier: str) -> ApiRequest[JSONDict]:
    return ApiRequest("GET", f"/v3/document_types/{_segment(identifier)}", _dict)


def get_document_type_schema(identifier: str) -> ApiRequest[JSONDict]:
    return ApiRequest("GET", f"/v3/document_types/{_segment(identifier)}/json_schema", _dict)


def list_documents(
    workspace: str | None = None,
    document_type: str | None = None,
    limit: int = 20,
    offset: int = 0,
    ordering: str = "-created_dt",
) -> ApiRequest[list[JSONDict]]:
    if not 1 <= limit <= 300:
        raise ValueError("limit must be between 1 and 300 (the platform's page size)")
    params: dict[str, str | int] = {"limit": limit, "offset": offset, "ordering": ordering}
    if workspace:
        params["workspace"] = workspace
    if document_type:
        params["document_type"] = document_type
    return ApiRequest("GET", "/v3/documents", _results, params)


def list_workspaces(organization: str | None = None) -> ApiRequest[list[JSONDict]]:
    """The workspaces these credentials can see (of one organisation, if given)."""
    params = {"organization": organization} if organization else {}
    return ApiRequest("GET", "/v3/workspaces", _results, params)


def list_document_types(
    organization: str | None = None, workspace: str | None = None
) -> ApiRequest[list[JSONDict]]:
    """The document types these credentials can see (of one organisation or workspace)."""
    params = {
        key: value
        for key, value in (("organization", organization), ("workspace", workspace))
        if value
    }
    return ApiRequest("GET", "/v3/document_types", _results, params)


def get_validation_results(document: str) -> ApiRequest[list[JSONDict]]:
    if not document:
        raise ValueError("document must not be empty")
    return ApiRequest("GET", "/v3/validation_results", _results, {"document": document})


def create_subscription(
    target_url: str,
    event: str,
    organization: str,
    workspace: str | None = None,
    version: str = DEFAULT_VERSION,
) -> ApiRequest[JSONDict]:
    body: JSONDict = {
        "targetUrl": target_url,
        "event": event,
        "organization": organization,
        "version": version,
    }
    if workspace:
        body["workspace"] = workspace
    return ApiRequest("POST", "/v3/resthook_subscriptions", _dict, json=body, idempotent=False)


def activate_subscription(hook_secret: str) -> ApiRequest[JSONDict]:
    if not hook_secret:
        raise ValueError("hook_secret must not be empty")
    return ApiRequest(
        "POST", "/v3/resthook_subscriptions/activate", _dict, headers={"X-Hook-Secret": hook_secret}
    )


def list_subscriptions(limit: int = 100, offset: int = 0) -> ApiRequest[list[JSONDict]]:
    return ApiRequest(
        "GET", "/v3/resthook_subscriptions", _results, {"limit": limit, "offset": offset}
    )


def get_subscription(subscription_id: int) -> ApiRequest[JSONDict]:
    return ApiRequest("GET", f"/v3/resthook_subscriptions/{_segment(subscription_id)}", _dict)


def delete_subscription(subscription_id: int) -> ApiRequest[None]:
    return ApiRequest(
        "DELETE",
        f"/v3/resthook_subscriptions/{_segment(subscription_id)}",
        _nothing,
        expect_body=False,
    )


# Answers to outcomes.


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, moment.timestamp() - current)


def _platform_reason(response: httpx.Response) -> tuple[str | None, str | None]:
    """The platform's `{type, errors: [{attr, code, detail}]}` body, first error only."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code, detail, attr = first.get("code"), first.get("detail"), first.get("attr")
        if isinstance(detail, str) and isinstance(attr, str) and attr != "non_field_errors":
            detail = f"{attr}: {detail}"
        return (code if isinstance(code, str) else None), (
            detail if isinstance(detail, str) else None
        )
    detail = body.get("detail")
    return None, detail if isinstance(detail, str) else None


_STATUS_ERRORS: dict[int, type[PlatformError]] = {
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    408: Unavailable,
    429: RateLimited,
}


class _Core:
    """What both clients share: the key (kept out of every message), policy and mapping."""

    def __init__(self, api_key: str, retry: RetryPolicy) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        self._api_key = api_key
        self.retry = retry

    def _clean(self, text: str) -> str:
        # Defence in depth: a server (or a proxy) echoing the key must not put it in a message.
        text = text.replace(self._api_key, "***")
        return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT] + "..."

    def _error(self, request: ApiRequest[Any], response: httpx.Response) -> PlatformError:
        status = response.status_code
        code, detail = _platform_reason(response)
        kind = _STATUS_ERRORS.get(status) or (
            Unavailable if status >= 500 else InvalidRequest if status >= 400 else InvalidResponse
        )
        message = f"{request.method} {request.path} answered {status}"
        if code:
            message += f" {code}"
        if detail:
            message += f": {detail}"
        return kind(
            self._clean(message),
            status=status,
            code=code,
            method=request.method,
            path=request.path,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )

    def _transport_error(self, request: ApiRequest[Any], exc: httpx.HTTPError) -> PlatformError:
        # Only the exception's type: httpx messages can carry URLs, and the chain is dropped.
        return Unavailable(
            f"{request.method} {request.path} failed: {type(exc).__name__}",
            method=request.method,
            path=request.path,
        )

    def _outcome(self, request: ApiRequest[T], response: httpx.Response) -> T:
        if not response.is_success:
            raise self._error(request, response)
        if not request.expect_body:
            return request.read(None)
        try:
            return request.read(response.json())
        except (ValueError, TypeError):
            raise InvalidResponse(
                f"{request.method} {request.path} answered {response.status_code} "
                "with a body that is not the expected JSON",
                status=response.status_code,
                method=request.method,
                path=request.path,
            ) from None

    def _should_retry(
        self, request: ApiRequest[Any], error: PlatformError, sent: bool, attempt: int
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with `error`."""
        if attempt >= self.retry.attempts or not error.retryable:
            return None
        if sent and not request.idempotent and not isinstance(error, RateLimited):
            return None
        delay = self.retry.backoff(attempt)
        if error.retry_after is not None:
            if error.retry_after > self.retry.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        log.warning(
            "%s %s: %s; attempt %d of %d in %.2f s",
            request.method,
            request.path,
            error.status or "no answer",
            attempt + 1,
            self.retry.attempts,
            delay,
        )
        return delay

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(retry={self.retry!r})"


class PlatformClient(_Core):
    """Synchronous client. Use as a context manager, or call `close()`.

    `sleep` and `transport` are for tests (record waits, or serve from memory).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry or RetryPolicy())
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url, headers=self._headers(), timeout=timeout, transport=transport
        )

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, request: ApiRequest[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    params=dict(request.params) or None,
                    json=request.json,
                    headers=dict(request.headers) or None,
                )
            except httpx.HTTPError as exc:
                error = self._transport_error(request, exc)
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            else:
                try:
                    return self._outcome(request, response)
                except PlatformError as exc:
                    error, sent = exc, True
            delay = self._should_retry(request, error, sent, attempt)
            if delay is None:
                raise error
            self._sleep(delay)

    def get_document(self, identifier: str, compact: bool = True) -> JSONDict:
        """`{"data", "meta", "error", "warnings"}`, camelCase."""
        return self.call(get_document(identifier, compact))

    def get_document_type(self, identifier: str) -> JSONDict:
        return self.call(get_document_type(identifier))

    def get_document_type_schema(self, identifier: str) -> JSONDict:
        return self.call(get_document_type_schema(identifier))

    def list_documents(
        self,
        workspace: str | None = None,
        document_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
        ordering: str = "-created_dt",
    ) -> list[JSONDict]:
        """Most recent first by default."""
        return self.call(list_documents(workspace, document_type, limit, offset, ordering))

    def get_validation_results(self, document: str) -> list[JSONDict]:
        return self.call(get_validation_results(document))

    def list_workspaces(self, organization: str | None = None) -> list[JSONDict]:
        return self.call(list_workspaces(organization))

    def list_document_types(
        self, organization: str | None = None, workspace: str | None = None
    ) -> list[JSONDict]:
        return self.call(list_document_types(organization, workspace))

    def create_subscription(
        self,
        target_url: str,
        event: str,
        organization: str,
        workspace: str | None = None,
        version: str = DEFAULT_VERSION,
    ) -> JSONDict:
        """The platform then POSTs `X-Hook-Secret` to `target_url`; activate with it."""
        return self.call(create_subscription(target_url, event, organization, workspace, version))

    def activate_subscription(self, hook_secret: str) -> JSONDict:
        return self.call(activate_subscription(hook_secret))

    def list_subscriptions(self, limit: int = 100, offset: int = 0) -> list[JSONDict]:
        return self.call(list_subscriptions(limit, offset))

    def get_subscription(self, subscription_id: int) -> JSONDict:
        return self.call(get_subscription(subscription_id))

    def delete_subscription(self, subscription_id: int) -> None:
        self.call(delete_subscription(subscription_id))


class AsyncPlatformClient(_Core):
    """The same API for async callers (the broker and gateway are asyncio servers)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(api_key, retry or RetryPolicy())
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=self._headers(), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncPlatformClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, request: ApiRequest[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    params=dict(request.params) or None,
                    json=request.json,
                    headers=dict(request.headers) or None,
                )
            except httpx.HTTPError as exc:
                error = self._transport_error(request, exc)
                sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            else:
                try:
                    return self._outcome(request, response)
                except PlatformError as exc:
                    error, sent = exc, True
            delay = self._should_retry(request, error, sent, attempt)
            if delay is None:
                raise error
            await self._sleep(delay)

    async def get_document(self, identifier: str, compact: bool = True) -> JSONDict:
        return await self.call(get_document(identifier, compact))

    async def get_document_type(self, identifier: str) -> JSONDict:
        return await self.call(get_document_type(identifier))

    async def get_document_type_schema(self, identifier: str) -> JSONDict:
        return await self.call(get_document_type_schema(identifier))

    async def list_documents(
        self,
        workspace: str | None = None,
        document_type: str | None = None,
        limit: int = 20,
        offset: int = 0,
        ordering: str = "-created_dt",
    ) -> list[JSONDict]:
        return await self.call(list_documents(workspace, document_type, limit, offset, ordering))

    async def get_validation_results(self, document: str) -> list[JSONDict]:
        return await self.call(get_validation_results(document))

    async def create_subscription(
        self,
        target_url: str,
        event: str,
        organization: str,
        workspace: str | None = None,
        version: str = DEFAULT_VERSION,
    ) -> JSONDict:
        return await self.call(
            create_subscription(target_url, event, organization, workspace, version)
        )

    async def activate_subscription(self, hook_secret: str) -> JSONDict:
        return await self.call(activate_subscription(hook_secret))

    async def list_subscriptions(self, limit: int = 100, offset: int = 0) -> list[JSONDict]:
        return await self.call(list_subscriptions(limit, offset))

    async def get_subscription(self, subscription_id: int) -> JSONDict:
        return await self.call(get_subscription(subscription_id))

    async def delete_subscription(self, subscription_id: int) -> None:
        await self.call(delete_subscription(subscription_id))
