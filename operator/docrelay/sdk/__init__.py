"""What integration code imports: the platform's helper names, served through the run broker.

    from docrelay.sdk import get_document

    def lambda_handler(event, context):
        document = get_document(event["document_identifier"])
        number = document["data"]["invoiceNumber"]

Every call goes to the broker (DOCRELAY_BROKER_URL) with the pod's projected token; the
broker fetches from the platform with credentials this process never sees. Standard library
only, like the runner. Timeouts: connect 5 s, read 30 s. Failures raise typed exceptions that
the runner classifies (429/5xx and no answer: retryable; other 4xx: the code's error).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from docrelay.runner.brokerclient import BrokerClient, BrokerError

__all__ = [
    "BrokerUnavailable",
    "DocumentNotFound",
    "Forbidden",
    "NoConnectedAccounts",
    "SdkError",
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
    """Connected accounts (Pipedream Connect) are not available in docrelay yet."""

    retryable = False


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


def _no_accounts(name: str) -> NoConnectedAccounts:
    return NoConnectedAccounts(
        f"{name}: no connected accounts yet (Pipedream Connect is not available in this "
        "docrelay version); call the API directly with a secret from os.environ"
    )


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
    raise _no_accounts("api_request")


def execute_action(account_id: str, tool_name: str, tool_params: dict[str, Any]) -> Any:
    raise _no_accounts("execute_action")


def upload_file(account_id: str, content: bytes, file_name: str, content_type: str) -> str:
    raise _no_accounts("upload_file")
