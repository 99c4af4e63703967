"""What integration code imports: the platform's helper names, served through the run broker.

    from docrelay.sdk import get_document

    def lambda_handler(event, context):
        document = get_document(event["document_identifier"])
        number = document["data"]["invoiceNumber"]

Every call goes to the broker (DOCRELAY_BROKER_URL) with the pod's projected token; the
broker fetches from the platform, and calls connected apps through Pipedream Connect, with
credentials this process never sees. Standard library only, like the runner. Timeouts:
connect 5 s, read 30 s (45 s for api_request, 150 s for execute_action). Failures raise typed
exceptions that the runner classifies (429/5xx and no answer: retryable; other 4xx: the
code's error).

Dry runs (`event["dry_run"]` is True; the agent's automatic test runs are dry): nothing that
could change a downstream system is sent. `execute_action`, `upload_file` and an
`api_request` with a writing method (POST, PUT, PATCH, DELETE) come back as if they
succeeded, with `"dry_run": True` in the answer and a simulated body
(`{"dryRun": True, "simulated": "... not sent"}`); reads are real. Direct HTTP through the egress
proxy: plain-HTTP writes get a simulated 200 (header `X-Docrelay-Dry-Run: simulated`), and an
HTTPS connection is not opened (the run ends `EgressDenied`, "dry run: ... needs a live
test"). Code need not do anything different in a dry run; it must not take a simulated answer
for real data (docs/runner.md, "Dry runs").
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote, urlsplit

from docrelay.runner.brokerclient import BrokerClient, BrokerError

__all__ = [
    "ActionFailed",
    "ApiRequestError",
    "BrokerUnavailable",
    "DocumentNotFound",
    "Forbidden",
    "NoConnectedAccounts",
    "NotFound",
    "RateLimited",
    "SdkError",
    "UpstreamTimeout",
    "api_request",
    "execute_action",
    "get_document",
    "get_document_portal_url",
    "get_validation_results",
    "upload_file",
]


class SdkError(Exception):
    """A helper call failed. `status_code` is the broker's answer (None: no answer)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class BrokerUnavailable(SdkError):
    """No answer, or 429/5xx: worth retrying (the runner reports a TransientError)."""

    retryable = True


class Forbidden(SdkError):
    """The broker refused: not this run's document, or the run is no longer active."""

    retryable = False


class DocumentNotFound(SdkError):
    retryable = False


class NoConnectedAccounts(SdkError):
    """Kept for code written against earlier versions; no longer raised."""

    retryable = False


class RateLimited(BrokerUnavailable):
    """429: Pipedream's limit or the project's budget. Retryable; `retry_after` seconds."""

    def __init__(
        self, message: str, status_code: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status_code)
        self.retry_after = retry_after


class UpstreamTimeout(BrokerUnavailable):
    """504: the target did not answer within Pipedream's 30 s. Retryable."""


class NotFound(SdkError):
    """404: no such action (or account) at Pipedream."""

    retryable = False


class ActionFailed(SdkError):
    """The Pipedream action ran and reported an error."""

    retryable = False


class ApiRequestError(SdkError):
    """The target answered non-2xx through the proxy. `status_code` is the target's;
    `response` is `{"success": False, "data", "status_code", "headers"}`."""

    def __init__(self, message: str, status_code: int | None, response: dict[str, Any]) -> None:
        super().__init__(message, status_code)
        self.response = response
        self.retryable = status_code is not None and (status_code == 429 or status_code >= 500)


def _client() -> BrokerClient:
    try:
        return BrokerClient.from_env()
    except BrokerError as exc:
        raise SdkError(str(exc)) from None


def _call(method: str, path: str) -> Any:
    try:
        return _client().request(method, path)
    except BrokerError as exc:
        status = exc.status_code
        if status is None or status == 429 or status >= 500:
            raise BrokerUnavailable(str(exc), status) from None
        if status == 404:
            raise DocumentNotFound(str(exc), status) from None
        if status in (401, 403):
            raise Forbidden(str(exc), status) from None
        raise SdkError(str(exc), status) from None


def _segment(identifier: str) -> str:
    if not isinstance(identifier, str) or not identifier:
        raise ValueError("a document identifier is a non-empty string")
    return quote(identifier, safe="")


def get_document(identifier: str) -> dict[str, Any]:
    """The document, as the platform returns it: `{"data", "meta", "error", "warnings"}`."""
    return dict(_call("GET", f"/v1/broker/documents/{_segment(identifier)}"))


def get_validation_results(identifier: str) -> list[dict[str, Any]]:
    answer = _call("GET", f"/v1/broker/documents/{_segment(identifier)}/validation-results")
    return list(answer.get("results") or [])


def get_document_portal_url(identifier: str) -> str | None:
    answer = _call("GET", f"/v1/broker/documents/{_segment(identifier)}/portal-url")
    url = answer.get("url")
    return str(url) if url else None


# --- connected accounts (Pipedream Connect, through the broker) --------------------------------

PROXY_READ_TIMEOUT = 45.0  # Pipedream gives the target 30 s, then answers 504
ACTION_READ_TIMEOUT = 150.0  # the broker waits up to broker_action_timeout_seconds (120)


def _account_path(account_id: str, what: str) -> str:
    if not isinstance(account_id, str) or not account_id:
        raise ValueError("account_id is a ConnectedAccount name or its apn_ id")
    return f"/v1/broker/accounts/{quote(account_id, safe='')}/{what}"


def _call_account(path: str, body: dict[str, Any], read_timeout: float) -> Any:
    try:
        return _client().request("POST", path, body, read_timeout=read_timeout)
    except BrokerError as exc:
        status = exc.status_code
        if status == 429:
            raise RateLimited(str(exc), status, exc.retry_after) from None
        if status == 504:
            raise UpstreamTimeout(str(exc), status) from None
        if status is None or status >= 500:
            raise BrokerUnavailable(str(exc), status) from None
        if status in (401, 403):
            raise Forbidden(str(exc), status) from None
        if status == 404:
            raise NotFound(str(exc), status) from None
        if status == 422:
            raise ActionFailed(str(exc), status) from None
        raise SdkError(str(exc), status) from None


def _file_part(name: str, value: Any) -> dict[str, Any]:
    """requests-style: bytes, str, a file object, or (filename, content[, content_type])."""
    filename, content_type = name, "application/octet-stream"
    if isinstance(value, tuple):
        if len(value) == 2:
            filename, value = value
        elif len(value) >= 3:
            filename, value, content_type = value[0], value[1], value[2]
    if hasattr(value, "read"):
        value = value.read()
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError("a file's content must be bytes, str or a file object")
    return {
        "field": name,
        "filename": str(filename),
        "contentType": str(content_type),
        "contentBase64": base64.b64encode(bytes(value)).decode(),
    }


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def api_request(
    account_id: str,
    url: str,
    method: str = "POST",
    body: Any = None,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    files: Any = None,
    data: Any = None,
) -> dict[str, Any]:
    """Call `url` as the connected account, through the broker and Pipedream's proxy (which
    adds the account's credentials). Returns `{"success", "data", "status_code", "headers"}`;
    raises `ApiRequestError` when the target answers non-2xx (retryable when 429 or 5xx),
    `RateLimited` / `UpstreamTimeout` (retryable) and `Forbidden` (an account the
    integration does not list). In a dry run a writing method is not sent: the answer is a
    simulated success with `"dry_run": True`."""
    request: dict[str, Any] = {"url": url, "method": method.upper()}
    if headers:
        request["headers"] = {str(k): str(v) for k, v in headers.items()}
    if params:
        request["params"] = params
    if isinstance(body, (bytes, bytearray)):
        request["bodyBase64"] = base64.b64encode(bytes(body)).decode()
    elif isinstance(body, str):
        request["text"] = body
    elif body is not None:
        request["json"] = body
    if data is not None:
        request["data"] = data
    if files:
        items = files.items() if isinstance(files, dict) else files
        request["files"] = [_file_part(str(name), value) for name, value in items]
    answer = _call_account(_account_path(account_id, "request"), request, PROXY_READ_TIMEOUT)
    answer = dict(answer or {})
    if not answer.get("success"):
        status = answer.get("status_code")
        raise ApiRequestError(
            f"api_request {method.upper()} {_where(url)}: the target answered {status}",
            status if isinstance(status, int) else None,
            answer,
        )
    return answer


def execute_action(account_id: str, tool_name: str, tool_params: dict[str, Any]) -> Any:
    """Run a Pipedream action (e.g. `xero_accounting_api-create-invoice`) as the account.
    Returns `{"success": True, "result": {"ret", "exports", "os"}}`: the action's return value
    is `["result"]["ret"]`, as on the platform. In a dry run the action is not run: the answer
    has `"dry_run": True` and `ret` is `{"dryRun": True, "simulated": "..."}`."""
    body = {"toolName": tool_name, "toolParams": dict(tool_params or {})}
    return dict(_call_account(_account_path(account_id, "actions"), body, ACTION_READ_TIMEOUT))


def upload_file(account_id: str, content: bytes, file_name: str, content_type: str) -> str:
    """Store a file for this run and return a URL (signed, valid for an hour by default) that
    the account's app or a Pipedream action can fetch, as on the platform. At most 700 KiB;
    the file goes with the run. The account must be one the integration lists. In a dry run
    nothing is stored: the URL is under `https://dry-run.docrelay.invalid/` and fetches
    nothing."""
    if isinstance(content, str):
        content = content.encode()
    body = {
        "fileName": file_name,
        "contentType": content_type,
        "contentBase64": base64.b64encode(bytes(content)).decode(),
    }
    answer = _call_account(_account_path(account_id, "files"), body, PROXY_READ_TIMEOUT)
    return str((answer or {})["url"])
