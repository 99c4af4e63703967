"""Pipedream Connect's connection webhook, decided (docs/pipedream.md, "The connection webhook").

Pipedream sends `CONNECTION_SUCCESS` / `CONNECTION_ERROR` to the `webhook_uri` of the Connect
token, unsigned. So a delivery is trusted only as far as it matches a **connection request**
someone with the rights to write the Integration left on it (the console, as the signed-in
user): an annotation holding the SHA-256 of a single-use nonce (the last part of the
`webhook_uri` path, 256 random bits, never stored), the SHA-256 of the Connect token, the
ConnectedAccount's name, app, external user, environment and when it expires. A delivery must
name that nonce, that token and that environment; the account it names is then retrieved
from Pipedream with the tenant's own credentials and must be of that user and app, alive, and
created after the request. Once used, the ConnectedAccount carries the nonce's digest, so the
same delivery again is refused. Everything here is pure: the gateway does the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from docrelay.models.common import API_VERSION

REQUEST_ANNOTATION = "docrelay.io/connect-request"  # on the Integration: the pending request
USED_ANNOTATION = "docrelay.io/connect-request"  # on the ConnectedAccount: the request it used
CONNECT_SECONDS = 4 * 3600  # a Connect token's life
CLOCK_SKEW_SECONDS = 300  # Pipedream's clock against ours, for "created after the request"
NONCE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
ACCOUNT_ID = re.compile(r"^apn_[A-Za-z0-9]{1,64}$")
EVENTS = ("CONNECTION_SUCCESS", "CONNECTION_ERROR")
PATH_PREFIX = "/v1/pipedream/connections"


class Refusal(Exception):
    """A delivery refused: the HTTP status and a short reason that never echoes it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def webhook_uri(gateway_url: str, namespace: str, integration: str, nonce: str) -> str:
    """Where Pipedream reports this connection: the tenant's gateway, this Integration, the
    request's nonce."""
    return f"{gateway_url.rstrip('/')}{PATH_PREFIX}/{namespace}/{integration}/{nonce}"


@dataclass(frozen=True)
class ConnectRequest:
    """What the Integration's annotation holds: digests, names, times (Unix seconds)."""

    account: str  # the ConnectedAccount's name
    app: str
    externalUserId: str  # the annotation's JSON spelling
    environment: str
    nonceSha256: str
    tokenSha256: str
    requestedAt: int
    expiresAt: int

    def annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


def new_request(
    *,
    account: str,
    app: str,
    external_user: str,
    environment: str,
    nonce: str,
    connect_token: str,
    now: float,
) -> ConnectRequest:
    return ConnectRequest(
        account=account,
        app=app,
        externalUserId=external_user,
        environment=environment,
        nonceSha256=digest(nonce),
        tokenSha256=digest(connect_token),
        requestedAt=int(now),
        expiresAt=int(now) + CONNECT_SECONDS,
    )


def request_of(integration: Mapping[str, Any] | None) -> ConnectRequest | None:
    """The Integration's pending connection request; None when it has none or a malformed
    one (nothing to match)."""
    if integration is None:
        return None
    text = ((integration.get("metadata") or {}).get("annotations") or {}).get(REQUEST_ANNOTATION)
    if not text:
        return None
    try:
        data = json.loads(text)
        found = ConnectRequest(**data)
    except (ValueError, TypeError):
        return None
    strings = (found.account, found.app, found.externalUserId, found.environment)
    numbers = (found.requestedAt, found.expiresAt)
    if not all(isinstance(v, str) and v for v in strings) or not all(
        isinstance(v, int) for v in numbers
    ):
        return None
    return found


@dataclass(frozen=True)
class Delivery:
    event: str
    account_id: str | None  # CONNECTION_SUCCESS only


def check_delivery(
    request: ConnectRequest | None, nonce: str, payload: Any, now: float
) -> Delivery:
    """The delivery matched against the request, cheapest checks first. A nonce that matches
    no request (forged, replaced by a newer link, another tenant's) is 404 whatever the body."""
    if (
        request is None
        or not NONCE.match(nonce)
        or not hmac.compare_digest(digest(nonce), request.nonceSha256)
    ):
        raise Refusal(404, "no such connection request")
    if now > request.expiresAt:
        raise Refusal(410, "the connection request has expired")
    if not isinstance(payload, dict) or payload.get("event") not in EVENTS:
        raise Refusal(422, "not a Pipedream Connect connection event")
    token = payload.get("connect_token")
    if not isinstance(token, str) or not hmac.compare_digest(digest(token), request.tokenSha256):
        raise Refusal(403, "not the Connect token of this connection request")
    if payload.get("environment") != request.environment:
        raise Refusal(403, "not the environment of this connection request")
    if payload["event"] == "CONNECTION_ERROR":
        return Delivery("CONNECTION_ERROR", None)
    account = payload.get("account")
    account_id = account.get("id") if isinstance(account, dict) else None
    if not isinstance(account_id, str) or not ACCOUNT_ID.match(account_id):
        raise Refusal(422, "the event names no Pipedream account")
    return Delivery("CONNECTION_SUCCESS", account_id)


def _seconds(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def check_account(request: ConnectRequest, account_id: str, retrieved: Mapping[str, Any]) -> None:
    """The account as Pipedream itself answers it (our credentials, not the delivery's word)
    must be the one this request asked for: same id, user and app, alive, connected after
    the request was made (not an older account of the same user)."""
    app = retrieved.get("app") if isinstance(retrieved.get("app"), dict) else {}
    if retrieved.get("id") != account_id:
        raise Refusal(403, "Pipedream answered another account")
    if retrieved.get("external_id") != request.externalUserId:
        raise Refusal(403, "the account is not of this request's external user")
    if (app or {}).get("name_slug") != request.app:
        raise Refusal(403, "the account is not of this request's app")
    if retrieved.get("dead"):
        raise Refusal(403, "Pipedream reports the account dead")
    created = _seconds(retrieved.get("created_at"))
    if created is None or created < request.requestedAt - CLOCK_SKEW_SECONDS:
        raise Refusal(403, "the account was connected before this connection request")


def account_manifest(request: ConnectRequest, account_id: str) -> dict[str, Any]:
    """The ConnectedAccount the request asked for, marked with the request it used."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ConnectedAccount",
        "metadata": {
            "name": request.account,
            "annotations": {USED_ANNOTATION: request.nonceSha256},
        },
        "spec": account_spec(request, account_id),
    }


def account_spec(request: ConnectRequest, account_id: str) -> dict[str, Any]:
    return {
        "app": request.app,
        "accountId": account_id,
        "externalUserId": request.externalUserId,
        "environment": request.environment,
    }


def account_patch(
    request: ConnectRequest, account_id: str, existing: Mapping[str, Any]
) -> dict[str, Any]:
    """The merge patch that points an existing ConnectedAccount (a dead one connected again)
    at the new account; 409 when this request was used on it already (a replay)."""
    used = ((existing.get("metadata") or {}).get("annotations") or {}).get(USED_ANNOTATION)
    if used == request.nonceSha256:
        raise Refusal(409, "this connection was reported already")
    return {
        "metadata": {"annotations": {USED_ANNOTATION: request.nonceSha256}},
        "spec": account_spec(request, account_id),
    }
