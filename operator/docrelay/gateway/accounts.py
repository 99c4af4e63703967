"""The broker's connected-account endpoints: `api_request` through the Pipedream Connect proxy
and `execute_action` through actions/run (docs/broker.md, docs/pipedream.md).

A run may use only an account its Integration lists (by ConnectedAccount name, or by the
account's `apn_` id); anything else is refused with 403 before Pipedream is asked. The
tenant's Pipedream credentials come from its Secret (`pipedream_secret`); they never leave
this process. 429 and 504 come back as 429 and 504 (with Retry-After), which the SDK raises as
retryable errors; a target's own non-2xx answer comes back as `{"success": false, ...}` with
its status, so a broker refusal and a target's 403 cannot be confused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from docrelay.gateway.kubeapi import KubeApi
from docrelay.gateway.settings import GatewaySettings
from docrelay.models.common import GROUP, VERSION
from docrelay.pipedream import (
    ActionFailed,
    ConnectError,
    ConnectUnavailable,
    NotFound,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from docrelay.pipedream.credentials import (
    ClientCache,
    ConnectCredentials,
    CredentialsError,
    credentials_from_secret,
)

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
ACCOUNT_ID = re.compile(r"^apn_[A-Za-z0-9]+$")
ACTION_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
MAX_HEADERS = 64


class Refused(Exception):
    """Mirrors broker.Refusal without importing it (broker imports this module)."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


# --- pure: which account, what call, which answer ---------------------------------------------


def resolve_account(
    listed: Mapping[str, Mapping[str, Any] | None], requested: str
) -> Mapping[str, Any]:
    """The ConnectedAccount the run asks for, among those its Integration lists (name ->
    object, None when it does not exist). `requested` is a ConnectedAccount name or the
    account's `apn_` id."""
    if requested in listed:
        found = listed[requested]
        if found is None:
            raise Refused(403, "the integration lists this account, but it does not exist")
        return found
    if ACCOUNT_ID.match(requested):
        for obj in listed.values():
            if obj is not None and (obj.get("spec") or {}).get("accountId") == requested:
                return obj
    raise Refused(403, "the integration does not list this account")


@dataclass(frozen=True)
class ProxyCall:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    body: Any = None
    data: Any = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise Refused(400, f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, f"{what} is not base64") from None


def parse_proxy_call(payload: Any) -> ProxyCall:
    """The SDK's api_request, as it sends it (docs/broker.md); 400 for anything else."""
    if not isinstance(payload, dict):
        raise Refused(400, "the request must be a JSON object")
    url = payload.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url) or len(url) > 8192:
        raise Refused(400, "url must be an absolute http(s) URL")
    method = str(payload.get("method") or "POST").upper()
    if method not in METHODS:
        raise Refused(400, "method must be one of " + ", ".join(sorted(METHODS)))
    headers = payload.get("headers") or {}
    if (
        not isinstance(headers, dict)
        or len(headers) > MAX_HEADERS
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise Refused(400, "headers must be an object of strings")
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise Refused(400, "params must be an object")
    body: Any = None
    if "json" in payload:
        body = payload["json"]
    elif "text" in payload:
        if not isinstance(payload["text"], str):
            raise Refused(400, "text must be a string")
        body = payload["text"]
    elif "bodyBase64" in payload:
        body = _b64(payload["bodyBase64"], "bodyBase64")
    data = payload.get("data")
    if data is not None and not isinstance(data, (dict, str)):
        raise Refused(400, "data must be an object or a string")
    files = None
    if payload.get("files") is not None:
        raw = payload["files"]
        if not isinstance(raw, list) or not raw or len(raw) > 16:
            raise Refused(400, "files must be a list of 1 to 16 files")
        files = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("field"), str):
                raise Refused(400, "each file needs a field name")
            content = _b64(item.get("contentBase64"), "a file's contentBase64")
            files.append(
                (
                    item["field"],
                    (
                        str(item.get("filename") or item["field"]),
                        content,
                        str(item.get("contentType") or "application/octet-stream"),
                    ),
                )
            )
    return ProxyCall(url, method, headers, params, body, data, files)


def check_action(payload: Any) -> tuple[str, dict[str, Any]]:
    """(toolName, toolParams) of an execute_action call, or 400."""
    if not isinstance(payload, dict):
        raise Refused(400, "the request must be a JSON object")
    tool = payload.get("toolName")
    params = payload.get("toolParams") or {}
    if not isinstance(tool, str) or not ACTION_ID.match(tool):
        raise Refused(400, "toolName must be a Pipedream action id")
    if not isinstance(params, dict):
        raise Refused(400, "toolParams must be an object")
    return tool, params


def refusal_for(exc: ConnectError) -> Refused:
    """A Connect failure as the broker's answer; the SDK raises it with `retryable` from the
    status (429 and 5xx retryable)."""
    if isinstance(exc, RateLimited):
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        who = "Pipedream" if exc.status_code == 429 else "the project's proxy budget"
        return Refused(429, f"rate limited by {who}; retry later", max(1, math.ceil(wait)))
    if isinstance(exc, UpstreamTimeout):
        return Refused(504, "the target did not answer within Pipedream's 30 s limit", 5)
    if isinstance(exc, ConnectUnavailable):
        return Refused(503, "Pipedream did not answer; retry later", 5)
    if isinstance(exc, Unauthorized):
        return Refused(502, "Pipedream refused the project's client credentials")
    if isinstance(exc, NotFound):
        return Refused(404, "Pipedream knows no such action or account")
    if isinstance(exc, ActionFailed):
        return Refused(422, "the action reported an error")
    return Refused(503 if exc.retryable else 502, "Pipedream failed", 5 if exc.retryable else None)


def upstream_answer(exc: UpstreamError) -> dict[str, Any]:
    """A target's non-2xx answer, as api_request reports it (the SDK raises on it)."""
    data: Any = exc.body
    if "json" in (exc.headers.get("content-type") or ""):
        with contextlib.suppress(ValueError):  # cut at 4 KiB: may no longer parse
            data = json.loads(exc.body)
    return {
        "success": False,
        "data": data,
        "status_code": exc.status_code,
        "headers": dict(exc.headers),
    }


# --- the broker's half --------------------------------------------------------------------


class Accounts:
    """Connected-account calls for authenticated callers (broker.Caller)."""

    def __init__(self, settings: GatewaySettings, kube: KubeApi) -> None:
        self.settings = settings
        self.kube = kube
        self.clients = ClientCache(action_timeout=settings.broker_action_timeout_seconds)
        # The Connect client is synchronous; a call may wait 35 s for a slow target. Its own
        # pool, so that slow targets do not starve the loop's default pool (cores + 4).
        self._pool = ThreadPoolExecutor(
            max_workers=settings.broker_connect_workers, thread_name_prefix="connect"
        )

    async def _run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    async def read_body(self, request: Request) -> Any:
        """The JSON body, at most broker_max_request_bytes (also without Content-Length)."""
        limit = self.settings.broker_max_request_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "request body too large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks) or b"null")
        except ValueError:
            raise Refused(400, "the request is not JSON") from None

    async def account(
        self, namespace: str, integration_spec: Mapping[str, Any], requested: str
    ) -> Mapping[str, Any]:
        names = [str(n) for n in integration_spec.get("connectedAccounts") or []]
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/connectedaccounts/"
        if requested in names:
            found = await self.kube.get_json(base + requested)
            return resolve_account({requested: found}, requested)
        if not ACCOUNT_ID.match(requested):
            raise Refused(403, "the integration does not list this account")
        objects = await asyncio.gather(*(self.kube.get_json(base + n) for n in names))
        return resolve_account(dict(zip(names, objects, strict=True)), requested)

    async def credentials(self, namespace: str, account: Mapping[str, Any]) -> ConnectCredentials:
        data = await self.kube.read_secret(namespace, self.settings.pipedream_secret)
        try:
            credentials = credentials_from_secret(
                data, self.settings.pipedream_secret, self.settings.pipedream_url
            )
        except CredentialsError:
            raise Refused(
                503, "no usable Pipedream credentials configured for this tenant", 30
            ) from None
        project = (account.get("spec") or {}).get("projectId")
        if project and project != credentials.project_id:
            raise Refused(
                403, "the account belongs to a Pipedream project this tenant has no credentials for"
            )
        return credentials

    async def request(
        self, namespace: str, integration_spec: Mapping[str, Any], requested: str, call: ProxyCall
    ) -> dict[str, Any]:
        account = await self.account(namespace, integration_spec, requested)
        spec = account.get("spec") or {}
        client = self.clients.get(
            await self.credentials(namespace, account), spec.get("environment")
        )
        try:
            return await self._run(
                client.proxy,
                str(spec["accountId"]),
                str(spec["externalUserId"]),
                call.url,
                call.method,
                body=call.body,
                headers=call.headers,
                params=call.params,
                files=call.files,
                data=call.data,
            )
        except UpstreamError as exc:
            return upstream_answer(exc)
        except ConnectError as exc:
            raise refusal_for(exc) from None

    async def action(
        self, namespace: str, integration_spec: Mapping[str, Any], requested: str, payload: Any
    ) -> dict[str, Any]:
        tool, params = check_action(payload)
        account = await self.account(namespace, integration_spec, requested)
        spec = account.get("spec") or {}
        client = self.clients.get(
            await self.credentials(namespace, account), spec.get("environment")
        )
        try:
            result = await self._run(
                client.run_action,
                tool,
                str(spec["externalUserId"]),
                str(spec["accountId"]),
                str(spec["app"]),
                params,
            )
        except ConnectError as exc:
            raise refusal_for(exc) from None
        # The platform's shape: execute_action(...)["result"]["ret"].
        return {"success": True, "result": result}
