"""The Pipedream Connect client the broker uses (references.md §2), synchronous.

Pipedream's official Python SDK (`pipedream`) makes the Connect calls it covers: accounts,
Connect tokens, the action catalog (list by app, retrieve, configure a prop) and running an
action. This module keeps what the SDK lacks: one shared server token refreshed ahead of
expiry and once on a 401, our error classes (the SDK's retries are off: the broker and the
runner's contract decide what is retried), masking, the proxy's rate limit, and the proxy
itself (the SDK's proxy sends JSON only; ours passes raw bodies, forms and multipart, and
prefixes the caller's headers).

It holds the project's client credentials, so it runs in the gateway/broker only, never in
a run pod. Safe to share between threads: one server token is cached for all of them and
refreshed by one thread at a time, before it expires and once more if Pipedream refuses it.
"""

from __future__ import annotations

import base64
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pipedream.client import Client as SdkClient
from pipedream.core.api_error import ApiError
from pipedream.core.parse_error import ParsingError
from pipedream.core.request_options import RequestOptions

from docrelay.masking import Masker
from docrelay.pipedream.errors import (
    ActionFailed,
    ConnectError,
    ConnectUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from docrelay.pipedream.ratelimit import TokenBucket

log = logging.getLogger("docrelay.pipedream")
T = TypeVar("T")

PROXY_HEADER_PREFIX = "x-pd-proxy-"
PROXY_UPSTREAM_LIMIT_SECONDS = 30.0
# Headers that describe the connection or the body's framing, not the request: httpx sets
# them for the request to Pipedream, and forwarding them upstream would be wrong.
_NOT_FORWARDED = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
    }
)
_UPSTREAM_BODY_KEPT = 4096


def encode_target_url(url: str) -> str:
    """URL-safe base64 of the target URL, unpadded, as Pipedream's examples spell it."""
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def _target_with_params(url: str, params: Mapping[str, Any] | None) -> str:
    if not params:
        return url
    return str(httpx.URL(url).copy_merge_params(dict(params)))


def _where(url: str) -> str:
    """The target for messages: scheme, host and path; the query may hold user data."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """An SDK model as the JSON Pipedream sent (only the fields it sent); else as is."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return value


def _response_data(response: httpx.Response) -> Any:
    if not response.content:
        return None
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text


class ConnectClient:
    """Server-side client of one Pipedream Connect project and environment."""

    def __init__(
        self,
        base_url: str,
        project_id: str,
        environment: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        action_timeout: float = 300.0,
        refresh_margin: float = 300.0,
        proxy_bucket: TokenBucket | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if environment not in ("development", "production"):
            raise ValueError("environment must be development or production")
        self.project_id = project_id
        self.environment = environment
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._refresh_margin = refresh_margin
        self._bucket = proxy_bucket
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
        )
        self._prefix = f"/v1/connect/{project_id}"
        # The SDK over the same connection pool, with our token (the callable is asked on
        # every request) and no retries of its own.
        self._sdk = SdkClient(
            base_url=base_url.rstrip("/"),
            project_id=project_id,
            project_environment=environment,
            token=self._call_token,
            httpx_client=self._http,
            timeout=read_timeout,
            max_retries=0,
        )
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_deadline = 0.0  # on self._clock's scale
        self._this_call = threading.local()  # the token _call chose, for the SDK to send
        self._spent_tokens: list[str] = []  # for masking: a refused token is still a secret
        self.token_fetches = 0

    def __repr__(self) -> str:
        return f"ConnectClient(project_id={self.project_id!r}, environment={self.environment!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- errors ----------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Defence in depth: messages are built without secrets, and masked anyway."""
        values = [self._client_secret, *self._spent_tokens]
        if self._token:
            values.append(self._token)
        return Masker(v for v in values if len(v) >= 4).mask(text)

    def _error(self, cls: type[ConnectError], message: str, **kwargs: Any) -> ConnectError:
        return cls(self._scrub(message), **kwargs)

    def _status_error(self, status: int, headers: Mapping[str, str], what: str) -> ConnectError:
        """The error for a non-2xx answer of Pipedream's own endpoints."""
        message = f"Pipedream answered {status} to {what}"
        if status == 429:
            try:
                retry_after: float | None = max(0.0, float(headers.get("retry-after", "")))
            except ValueError:
                retry_after = None
            return self._error(RateLimited, message, retry_after=retry_after)
        if status == 504:
            return self._error(UpstreamTimeout, message, status_code=status)
        if status == 401:
            return self._error(Unauthorized, message, status_code=status)
        if status == 404:
            return self._error(NotFound, message, status_code=status)
        return self._error(ConnectError, message, status_code=status, retryable=status >= 500)

    def _raise_for_connect(self, response: httpx.Response, what: str) -> None:
        if not response.is_success:
            raise self._status_error(response.status_code, response.headers, what)

    # -- the server token ------------------------------------------------------------------

    def _fetch_token(self) -> None:
        """Client-credentials grant. Called with self._lock held."""
        body: dict[str, str] = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        if self._scope:
            body["scope"] = self._scope
        try:
            response = self._http.post("/v1/oauth/token", json=body)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            raise self._error(
                ConnectUnavailable, f"Pipedream unreachable for a server token ({reason})"
            ) from None
        if response.status_code in (400, 401, 403):
            raise self._error(
                Unauthorized,
                f"Pipedream refused the client credentials ({response.status_code})",
                status_code=response.status_code,
            )
        self._raise_for_connect(response, "POST /v1/oauth/token")
        try:
            payload = response.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise self._error(ConnectError, "Pipedream's token answer was not understood") from None
        if self._token:
            # A replaced token may still be valid for a while: keep masking the recent ones.
            self._spent_tokens = [*self._spent_tokens[-7:], self._token]
        self._token = token
        self.token_fetches += 1
        # Refresh ahead of expiry, but never so early that a short-lived token is useless.
        self._token_deadline = self._clock() + lifetime - min(self._refresh_margin, lifetime / 2)
        log.info(
            "fetched a Pipedream server token for %s (valid %.0f s)", self.project_id, lifetime
        )

    def _current_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._token_deadline:
                self._fetch_token()
            assert self._token is not None
            return self._token

    def _token_after_refusal(self, refused: str) -> str:
        """Pipedream said 401 to ``refused``: fetch a new one, unless another thread did."""
        with self._lock:
            if self._token == refused:
                log.info("Pipedream refused the server token; fetching a new one")
                self._fetch_token()
            assert self._token is not None
            return self._token

    # -- requests --------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One authenticated call; on a 401, once more with a fresh token."""
        token = self._current_token()
        for attempt in (1, 2):
            merged = {
                **(headers or {}),
                "authorization": f"Bearer {token}",
                "x-pd-environment": self.environment,
            }
            try:
                response = self._http.request(method, path, headers=merged, **kwargs)
            except httpx.TimeoutException as exc:
                raise self._error(
                    ConnectUnavailable, f"{what}: no answer in time ({type(exc).__name__})"
                ) from None
            except httpx.HTTPError as exc:
                raise self._error(
                    ConnectUnavailable, f"{what}: Pipedream unreachable ({type(exc).__name__})"
                ) from None
            if response.status_code != 401 or attempt == 2:
                return response
            token = self._token_after_refusal(token)
        raise AssertionError("unreachable")

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """One SDK call with our errors; on a 401, once more with a fresh server token.
        The SDK's own exceptions (which carry response bodies) never leave this method."""
        self._this_call.token = self._current_token()
        try:
            for attempt in (1, 2):
                try:
                    return call()
                except ApiError as exc:
                    status = exc.status_code or 0
                    if status == 401 and attempt == 1:
                        self._this_call.token = self._token_after_refusal(self._this_call.token)
                        continue
                    raise self._status_error(status, exc.headers or {}, what) from None
                except httpx.TimeoutException as exc:
                    reason = type(exc).__name__
                    raise self._error(
                        ConnectUnavailable, f"{what}: no answer in time ({reason})"
                    ) from None
                except httpx.HTTPError as exc:
                    reason = type(exc).__name__
                    raise self._error(
                        ConnectUnavailable, f"{what}: Pipedream unreachable ({reason})"
                    ) from None
            raise AssertionError("unreachable")
        finally:
            self._this_call.token = None

    def _call_token(self) -> str:
        """The SDK asks for a token on every request: the one this thread's call chose."""
        token = getattr(self._this_call, "token", None)
        return token if token is not None else self._current_token()

    def _answer(self, what: str, call: Callable[[], Any]) -> Any:
        """The JSON of a single-object answer. The SDK's models are stricter than the API
        (a new prop type, an app without an icon): an answer they refuse is used as JSON."""

        def raw() -> Any:
            try:
                return _plain(call().data)
            except ParsingError as exc:
                return exc.body

        return self._call(what, raw)

    def _pages(
        self, what: str, list_page: Callable[..., Any], params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged list (``page_info.end_cursor`` -> ``after``)."""

        def page(after: str | None) -> tuple[list[dict[str, Any]], Any, Any]:
            try:
                pager = list_page(**params, after=after)
            except ParsingError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                info = body.get("page_info") or {}
                return list(body.get("data") or []), info.get("end_cursor"), info.get("total_count")
            items = [_plain(item) for item in pager.items or []]
            info = getattr(pager.response, "page_info", None)
            return (
                items,
                getattr(info, "end_cursor", None),
                getattr(info, "total_count", None),
            )

        seen = 0
        cursors: set[str] = set()
        cursor: str | None = None
        while True:
            data, cursor, total = self._call(what, functools.partial(page, cursor))
            yield from data
            seen += len(data)
            # Stop on an empty page, no cursor, a cursor seen before (no endless loop on a
            # misbehaving server), or once total_count items came.
            if not data or not cursor or cursor in cursors:
                return
            if isinstance(total, int) and seen >= total:
                return
            cursors.add(cursor)

    # -- accounts and connect tokens -------------------------------------------------------

    def iter_accounts(
        self, external_user_id: str | None = None, app: str | None = None, limit: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every account, page by page."""
        params = {"external_user_id": external_user_id, "app": app, "limit": limit}
        return self._pages("GET accounts", self._sdk.accounts.with_raw_response.list, params)

    def list_accounts(
        self, external_user_id: str | None = None, app: str | None = None
    ) -> list[dict[str, Any]]:
        return list(self.iter_accounts(external_user_id=external_user_id, app=app))

    def get_account(self, account_id: str) -> dict[str, Any]:
        accounts = self._sdk.accounts.with_raw_response
        body = self._answer("GET account", lambda: accounts.retrieve(account_id))
        # The current API answers the account itself; older answers wrapped it in "data".
        if isinstance(body, dict) and "id" not in body and isinstance(body.get("data"), dict):
            body = body["data"]
        if not isinstance(body, dict):
            raise self._error(ConnectError, "GET account: the answer was not an account")
        return body

    def create_connect_token(
        self,
        external_user_id: str,
        success_redirect_uri: str | None = None,
        error_redirect_uri: str | None = None,
        webhook_uri: str | None = None,
        allowed_origins: list[str] | None = None,
    ) -> dict[str, Any]:
        """A single-use Connect token (4 h) and its link: ``{token, expires_at,
        connect_link_url}``. Add ``&app=<slug>`` to the link to preselect the app."""
        optional = {
            "success_redirect_uri": success_redirect_uri,
            "error_redirect_uri": error_redirect_uri,
            "webhook_uri": webhook_uri,
            "allowed_origins": allowed_origins,
        }
        tokens = self._sdk.tokens.with_raw_response
        answer = self._answer(
            "POST tokens",
            lambda: tokens.create(
                external_user_id=external_user_id,
                **{k: v for k, v in optional.items() if v is not None},
            ),
        )
        if not isinstance(answer, dict):
            raise self._error(ConnectError, "POST tokens: the answer was not an object")
        return {k: answer.get(k) for k in ("token", "expires_at", "connect_link_url")}

    # -- the action catalog ----------------------------------------------------------------

    def list_actions(self, app: str, limit: int = 50) -> list[dict[str, Any]]:
        """The app's actions in Pipedream's catalog (``GET .../actions?app=``): components
        with ``key``, ``name``, ``version``, ``description`` and ``configurable_props``."""
        actions = self._sdk.actions.with_raw_response.list
        params = {"app": app, "limit": limit}
        return list(self._pages(f"list actions of {app}", actions, params))

    def get_action(self, key: str) -> dict[str, Any]:
        """One action with its props (``GET .../actions/{key}``)."""
        actions = self._sdk.actions.with_raw_response
        body = self._answer(f"retrieve action {key}", lambda: actions.retrieve(key))
        # The SDK unwraps {"data": component}; an answer its models refused comes whole.
        if isinstance(body, dict) and "key" not in body:
            body = body.get("data")
        component = body
        if not isinstance(component, dict):
            raise self._error(ConnectError, f"retrieve action {key}: not a component")
        return component

    def configure_prop(
        self,
        key: str,
        prop_name: str,
        external_user_id: str,
        account_id: str,
        app_slug: str,
        props: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The values a prop may take for this account (``POST .../actions/configure``):
        ``{options: [{label, value}] | None, string_options, errors: [...]}``."""
        configured: dict[str, Any] = dict(props or {})
        configured[app_slug] = {"authProvisionId": account_id}
        actions = self._sdk.actions.with_raw_response
        answer = self._answer(
            f"configure {key} {prop_name}",
            lambda: actions.configure_prop(
                id=key,
                external_user_id=external_user_id,
                prop_name=prop_name,
                configured_props=configured,
            ),
        )
        if not isinstance(answer, dict):
            raise self._error(ConnectError, f"configure {key} {prop_name}: not an object")
        return {k: answer.get(k) for k in ("options", "string_options", "errors")}

    # -- the proxy -------------------------------------------------------------------------

    def proxy(
        self,
        account_id: str,
        external_user_id: str,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        files: Any = None,
        data: Any = None,
    ) -> dict[str, Any]:
        """Call ``url`` through the Connect proxy with the account's credentials, which
        Pipedream inserts. Returns ``{success, data, status_code, headers}`` like the
        platform's ``api_request``; raises on non-2xx."""
        if self._bucket is not None:
            acquired = self._bucket.acquire()
            if not acquired:
                raise RateLimited(
                    f"proxy calls of project {self.project_id} are at the limit; retry in "
                    f"{acquired.wait_seconds:.1f} s",
                    retry_after=acquired.wait_seconds,
                    status_code=None,
                )
        method = method.upper()
        target = _target_with_params(url, params)
        where = f"{method} {_where(target)}"
        outgoing: dict[str, str] = {}
        for name, value in (headers or {}).items():
            lowered = name.lower()
            if lowered in _NOT_FORWARDED:
                continue
            if lowered == "content-type" and files is None:
                # Describes the body, which passes through as is; multipart sets its own.
                outgoing["content-type"] = value
                continue
            forwarded = (
                lowered
                if lowered.startswith(PROXY_HEADER_PREFIX)
                else (PROXY_HEADER_PREFIX + lowered)
            )
            outgoing[forwarded] = value
        kwargs: dict[str, Any] = {
            "params": {"external_user_id": external_user_id, "account_id": account_id},
            # Pipedream gives the target 30 s, then answers 504: wait a little longer for it.
            "timeout": httpx.Timeout(
                PROXY_UPSTREAM_LIMIT_SECONDS + 5, connect=self._connect_timeout
            ),
        }
        if files is not None:
            kwargs["files"] = files
            if data is not None:
                kwargs["data"] = data
        elif data is not None:
            kwargs["data"] = data
        elif isinstance(body, (bytes, str)):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body
        path = f"{self._prefix}/proxy/{encode_target_url(target)}"
        response = self._send(method, path, what=f"proxy {where}", headers=outgoing, **kwargs)
        status = response.status_code
        if status == 429:
            raise self._error(
                RateLimited, f"proxy {where}: 429, rate limited", retry_after=_retry_after(response)
            )
        if status == 504:
            raise self._error(
                UpstreamTimeout,
                f"proxy {where}: the target did not answer within 30 s (504)",
                status_code=504,
            )
        result_headers = dict(response.headers)
        if not response.is_success:
            # Also a 401 that survived a fresh server token: that one is the target's.
            raise self._error(
                UpstreamError,
                f"proxy {where}: the target answered {status}",
                status_code=status,
                body=self._scrub(response.text[:_UPSTREAM_BODY_KEPT]),
                headers=result_headers,
            )
        return {
            "success": True,
            "data": _response_data(response),
            "status_code": status,
            "headers": result_headers,
        }

    # -- actions ---------------------------------------------------------------------------

    def run_action(
        self,
        action_id: str,
        external_user_id: str,
        account_id: str,
        app_slug: str,
        props: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run a Pipedream action as the account: ``{exports, os, ret}``."""
        configured: dict[str, Any] = dict(props or {})
        configured[app_slug] = {"authProvisionId": account_id}
        what = f"run action {action_id}"
        options: RequestOptions = {"timeout_in_seconds": int(self._action_timeout)}
        actions = self._sdk.actions.with_raw_response
        answer = self._answer(
            what,
            lambda: actions.run(
                id=action_id,
                external_user_id=external_user_id,
                configured_props=configured,
                request_options=options,
            ),
        )
        if not isinstance(answer, dict):
            raise self._error(ConnectError, f"{what}: the answer was not an object")
        if answer.get("error"):
            raise self._error(ActionFailed, f"{what}: the action reported an error")
        return {k: answer.get(k) for k in ("exports", "os", "ret")}
