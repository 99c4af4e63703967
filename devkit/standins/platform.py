"""A local stand-in of the document platform's v3 API (references.md §1), over real HTTP.

Serves documents, document types and their JSON schemas from sample files, checks the bearer
API key, answers errors in the platform's shape (`{type, errors: [{attr, code, detail}]}`),
and runs RESThook subscriptions as the platform does: on subscribe it POSTs `X-Hook-Secret`
to the target and expects 200; the subscription fires only once activated with that secret;
`deliver()` POSTs signed `{event, timestamp, payload}` bodies; ten failed deliveries in a row
deactivate a subscription. Tests reach into `PlatformState` (inject 429/5xx answers, read every
request received and every delivery made); a separate process offers the same under
`/_standin/` (not part of the platform's API). See docs/platform.md.

    python -m devkit.standins.platform --port 8300 --data examples
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from docrelay.gateway.signatures import sign_resthook

EVENTS = (
    "document.parse.completed",
    "document.parse.succeeded",
    "document.parse.failed",
    "document.validate.completed",
    "document.classify.completed",
    "document.classify.succeeded",
    "document.classify.failed",
    "document.rejected",
    "annotation.validated",
)
VERSIONS = ("v1", "v2", "v3")
# The platform deactivates a subscription whose receiver keeps failing (about 10 times).
DEACTIVATE_AFTER = 10
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def _now_iso(clock: Callable[[], float]) -> str:
    return (
        datetime.fromtimestamp(clock(), UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def error_body(kind: str, code: str, detail: str, attr: str | None = None) -> dict[str, Any]:
    """The platform's error shape (drf-standardized-errors)."""
    return {"type": kind, "errors": [{"attr": attr, "code": code, "detail": detail}]}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        attr: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        kind = (
            "server_error"
            if status >= 500
            else ("validation_error" if status == 400 else "client_error")
        )
        self.status = status
        self.body = error_body(kind, code, detail, attr)
        self.headers = headers or {}


def _identifier(value: Any) -> str | None:
    """`meta.workspace` is `{identifier, name}`; `meta.documentType` is the bare identifier
    in the v3 spec (older answers nest it too): accept both."""
    if isinstance(value, dict):
        value = value.get("identifier")
    return value if isinstance(value, str) else None


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "Not found.")


@dataclass
class Subscription:
    id: int
    event: str
    target_url: str
    organization: str
    workspace: str | None
    version: str
    secret: str
    created_dt: str
    active: bool = False
    auto_deactivated: bool = False
    auto_deactivate_reason: str | None = None
    consecutive_failures: int = 0

    def to_json(self, organization_name: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.event,
            "organization": {"identifier": self.organization, "name": organization_name},
            "workspace": self.workspace,
            "targetUrl": self.target_url,
            "active": self.active,
            "autoDeactivated": self.auto_deactivated,
            "autoDeactivateReason": self.auto_deactivate_reason,
            "version": self.version,
            "createdDt": self.created_dt,
        }


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received; the Authorization value is never kept."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    authorized: bool


@dataclass(frozen=True)
class Delivery:
    """One POST to a subscriber: a handshake or an event."""

    subscription_id: int
    kind: str  # "handshake" or "event"
    target_url: str
    body: bytes
    headers: dict[str, str]
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class _Fault:
    status: int
    remaining: int
    retry_after: str | None
    path_prefix: str


@dataclass
class PlatformState:
    """Everything the stand-in knows; shared by the server's threads and the test's."""

    api_key: str = field(repr=False)
    organization: str = "dRlyOrg1"
    organization_name: str = "docrelay demo"
    # The organisation's RESThook signature key; the HMAC key is its UTF-8 bytes.
    signature_key: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    clock: Callable[[], float] = time.time
    http_timeout: float = 5.0
    # Subscribers the stand-in may call: loopback only, so it never reaches the internet.
    allowed_target_hosts: frozenset[str] = LOOPBACK_HOSTS
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    document_types: dict[str, dict[str, Any]] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation_results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _next_id: int = 1
    _http: httpx.Client | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # Data.

    @classmethod
    def from_dir(cls, data_dir: str | Path, api_key: str, **kwargs: Any) -> PlatformState:
        state = cls(api_key=api_key, **kwargs)
        state.load(data_dir)
        return state

    def load(self, data_dir: str | Path) -> None:
        """`document-types/*.json` (a type with its `jsonSchema`), `documents/*.json` (one
        document each), `documents/validation-results/<document>.json` (a list)."""
        root = Path(data_dir)
        for path in sorted((root / "document-types").glob("*.json")):
            self.add_document_type(json.loads(path.read_text()))
        for path in sorted((root / "documents").glob("*.json")):
            self.add_document(json.loads(path.read_text()))
        for path in sorted((root / "documents" / "validation-results").glob("*.json")):
            self.validation_results[path.stem] = json.loads(path.read_text())

    def add_document_type(self, document_type: dict[str, Any]) -> None:
        resource = dict(document_type)
        schema = resource.pop("jsonSchema", None) or {"type": "object"}
        with self._lock:
            self.document_types[resource["identifier"]] = resource
            self.schemas[resource["identifier"]] = schema

    def add_document(self, document: dict[str, Any]) -> None:
        with self._lock:
            self.documents[document["meta"]["identifier"]] = document

    # Test hooks.

    def fail_next(
        self,
        status: int,
        count: int = 1,
        retry_after: str | int | None = None,
        path_prefix: str = "/v3/",
    ) -> None:
        """Answer the next `count` API requests under `path_prefix` with `status`."""
        with self._lock:
            self._faults.append(
                _Fault(
                    status, count, None if retry_after is None else str(retry_after), path_prefix
                )
            )

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.path == path and (method is None or r.method == method)
            ]

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.remaining > 0:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        )

    # Events.

    def event_payload(self, document: dict[str, Any]) -> dict[str, Any]:
        """What a delivery carries: the document's `meta` (identifier, fileName, workspace
        as `{identifier, name}`, documentType as its identifier, state, ...), never its data."""
        return json.loads(json.dumps(document["meta"]))

    def deliver(
        self, event: str, document_identifier: str, timestamp: int | None = None
    ) -> list[Delivery]:
        """POST the event to every active subscription that matches it; one attempt each."""
        with self._lock:
            document = self.documents.get(document_identifier)
            if document is None:
                raise KeyError(f"no document {document_identifier!r}")
            workspace = _identifier(document["meta"].get("workspace"))
            targets = [
                s
                for s in self.subscriptions.values()
                if s.active
                and s.event == event
                and s.organization == self.organization
                and (s.workspace is None or s.workspace == workspace)
            ]
        moment = int(self.clock()) if timestamp is None else timestamp
        body = json.dumps(
            {"event": event, "timestamp": moment, "payload": self.event_payload(document)},
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Hook-Signature": sign_resthook(body, self.signature_key.encode(), moment),
        }
        results = []
        for subscription in targets:
            delivery = self._post(subscription, "event", body, headers)
            with self._lock:
                self._count(subscription, delivery)
            results.append(delivery)
        return results

    def _client(self) -> httpx.Client:
        # One client for all deliveries: building one (and its TLS context) per POST is slow.
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=self.http_timeout)
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def _count(self, subscription: Subscription, delivery: Delivery) -> None:
        if delivery.ok:
            subscription.consecutive_failures = 0
            return
        subscription.consecutive_failures += 1
        if subscription.consecutive_failures >= DEACTIVATE_AFTER and subscription.active:
            subscription.active = False
            subscription.auto_deactivated = True
            last = delivery.error or f"{delivery.status}"
            subscription.auto_deactivate_reason = (
                f"Resthook fails after {DEACTIVATE_AFTER} retries. "
                f"The last error received was: {last}"
            )

    def _post(
        self, subscription: Subscription, kind: str, body: bytes, headers: dict[str, str]
    ) -> Delivery:
        status: int | None = None
        error: str | None = None
        try:
            response = self._client().post(subscription.target_url, content=body, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"{status} - {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}"
        delivery = Delivery(
            subscription.id, kind, subscription.target_url, body, dict(headers), status, error
        )
        with self._lock:
            self.deliveries.append(delivery)
        return delivery

    # Subscriptions.

    def _subscribe(self, body: Any) -> Subscription:
        if not isinstance(body, dict):
            raise ApiError(400, "parse_error", "JSON object expected.")
        target_url = body.get("targetUrl")
        if not isinstance(target_url, str) or not target_url:
            raise ApiError(400, "required", "This field is required.", "targetUrl")
        parts = urlsplit(target_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(400, "invalid", "Enter a valid URL.", "targetUrl")
        if parts.hostname not in self.allowed_target_hosts:
            raise ApiError(400, "invalid", "The stand-in only calls loopback URLs.", "targetUrl")
        event = body.get("event")
        if event not in EVENTS:
            raise ApiError(400, "invalid_choice", f'"{event}" is not a valid choice.', "event")
        organization = body.get("organization")
        if organization != self.organization:
            raise ApiError(400, "does_not_exist", "Organization not found.", "organization")
        workspace = body.get("workspace")
        if workspace is not None and workspace not in self._workspaces():
            raise ApiError(400, "does_not_exist", "Workspace not found.", "workspace")
        version = body.get("version", "v3")
        if version not in VERSIONS:
            raise ApiError(400, "invalid_choice", f'"{version}" is not a valid choice.', "version")
        with self._lock:
            subscription = Subscription(
                id=self._next_id,
                event=event,
                target_url=target_url,
                organization=organization,
                workspace=workspace,
                version=version,
                secret=secrets.token_hex(32),
                created_dt=_now_iso(self.clock),
            )
            self._next_id += 1
            # Stored before the handshake: the receiver may activate before answering it.
            self.subscriptions[subscription.id] = subscription
        handshake = self._post(
            subscription, "handshake", b"", {"X-Hook-Secret": subscription.secret}
        )
        if handshake.status != 200:
            with self._lock:
                self.subscriptions.pop(subscription.id, None)
            raise ApiError(
                400,
                "invalid",
                f"The target URL did not confirm the subscription "
                f"({handshake.status or handshake.error}).",
                "targetUrl",
            )
        return subscription

    def _activate(self, secret: str | None) -> Subscription:
        if not secret:
            raise ApiError(400, "required", "X-Hook-Secret header is required.", "X-Hook-Secret")
        with self._lock:
            for subscription in self.subscriptions.values():
                if hmac.compare_digest(subscription.secret, secret):
                    subscription.active = True
                    subscription.auto_deactivated = False
                    subscription.auto_deactivate_reason = None
                    subscription.consecutive_failures = 0
                    return subscription
        raise ApiError(400, "invalid", "Invalid X-Hook-Secret.", "X-Hook-Secret")

    def _workspaces(self) -> set[str]:
        with self._lock:
            found = {_identifier(d["meta"].get("workspace")) for d in self.documents.values()}
            return {w for w in found if w}


def _page(items: list[Any], request: Request, default_limit: int, max_limit: int) -> dict[str, Any]:
    limit = _int_param(request, "limit", default_limit, 1, max_limit)
    offset = _int_param(request, "offset", 0, 0, None)
    chunk = items[offset : offset + limit]
    base = str(request.url.remove_query_params(["offset"]))
    joiner = "&" if "?" in base else "?"
    more = offset + limit < len(items)
    return {
        "count": len(items),
        "next": f"{base}{joiner}offset={offset + limit}" if more else None,
        "previous": f"{base}{joiner}offset={max(0, offset - limit)}" if offset else None,
        "results": chunk,
    }


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid", "A valid integer is required.", name) from None
    if value < low or (high is not None and value > high):
        raise ApiError(400, "invalid", f"Must be between {low} and {high}.", name)
    return value


def _fault_response(fault: _Fault) -> Response:
    if fault.status == 429:
        body = error_body("client_error", "throttled", "Request was throttled.")
    elif fault.status >= 500:
        body = error_body("server_error", "error", "A server error occurred.")
    else:
        body = error_body("client_error", "error", "Injected error.")
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
    return JSONResponse(body, status_code=fault.status, headers=headers)


def _recording(app: ASGIApp, state: PlatformState) -> ASGIApp:
    """Record every HTTP request, then answer an injected fault or pass it on."""

    async def middleware(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body") or message["type"] != "http.request":
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorized = state.authorized(headers.get("authorization"))
        if "authorization" in headers:
            headers["authorization"] = "<redacted>"
        state._record(
            RecordedRequest(
                scope["method"],
                scope["path"],
                scope.get("query_string", b"").decode("latin-1"),
                headers,
                body,
                authorized,
            )
        )
        fault = state._take_fault(scope["path"])
        if fault is not None:
            await _fault_response(fault)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return middleware


def create_app(state: PlatformState) -> Any:
    """The stand-in as an ASGI app (FastAPI inside a recording, fault-injecting wrapper)."""
    app = FastAPI(title="Document platform stand-in", version="v3", docs_url=None, redoc_url=None)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    # FastAPI's own refusals, reshaped as the platform's.
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        attr = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(
            error_body("validation_error", "invalid", str(first.get("msg", "Invalid.")), attr),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
        return JSONResponse(
            error_body("client_error", code, str(exc.detail)), status_code=exc.status_code
        )

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Response:
        if not state.authorized(request.headers.get("authorization")):
            if "authorization" in request.headers:
                body = error_body("client_error", "authentication_failed", "Invalid token.")
            else:
                body = error_body(
                    "client_error",
                    "not_authenticated",
                    "Authentication credentials were not provided.",
                )
            return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        return response

    def document_or_404(identifier: str) -> dict[str, Any]:
        with state._lock:
            document = state.documents.get(identifier)
        if document is None:
            raise _not_found()
        return document

    @app.get("/v3/documents/{identifier}")
    def get_document(identifier: str) -> dict[str, Any]:
        # Documents are stored compact (parsed values), so `compact` changes nothing here.
        return document_or_404(identifier)

    @app.get("/v3/documents")
    def list_documents(request: Request) -> dict[str, Any]:
        params = request.query_params
        workspace = params.get("workspace")
        document_type = params.get("document_type")
        include_data = params.get("include_data", "false").lower() == "true"
        ordering = params.get("ordering", "-created_dt")
        if ordering.lstrip("-") != "created_dt":
            raise ApiError(
                400, "invalid", "Only created_dt ordering is supported here.", "ordering"
            )
        with state._lock:
            documents = list(state.documents.values())
        chosen = [
            d
            for d in documents
            if (workspace is None or _identifier(d["meta"].get("workspace")) == workspace)
            and (
                document_type is None or _identifier(d["meta"].get("documentType")) == document_type
            )
        ]
        chosen.sort(
            key=lambda d: d["meta"].get("createdDt") or "", reverse=ordering.startswith("-")
        )
        summaries = [
            {
                "meta": d["meta"],
                "data": d["data"] if include_data else {},
                "error": d.get("error"),
                "warnings": d.get("warnings", []),
            }
            for d in chosen
        ]
        return _page(summaries, request, 20, 300)

    @app.get("/v3/workspaces")
    def list_workspaces(request: Request) -> list[dict[str, Any]]:
        """The organisation's workspaces (those its documents are in), a bare array as the
        platform answers."""
        organization = request.query_params.get("organization")
        if organization is not None and organization != state.organization:
            return []
        with state._lock:
            found = {
                _identifier(d["meta"].get("workspace")): d["meta"].get("workspace")
                for d in state.documents.values()
            }
        return [
            {
                "identifier": identifier,
                "name": value.get("name", "") if isinstance(value, dict) else "",
                "organization": {"identifier": state.organization},
            }
            for identifier, value in sorted(found.items(), key=lambda item: str(item[0]))
            if identifier
        ]

    @app.get("/v3/document_types")
    def list_document_types(request: Request) -> list[dict[str, Any]]:
        """The organisation's document types; with `workspace`, those of its documents."""
        params = request.query_params
        if params.get("organization") not in (None, state.organization):
            return []
        workspace = params.get("workspace")
        with state._lock:
            types = [dict(t) for t in state.document_types.values()]
            used = {
                _identifier(d["meta"].get("documentType"))
                for d in state.documents.values()
                if workspace is None or _identifier(d["meta"].get("workspace")) == workspace
            }
        return sorted(
            (t for t in types if workspace is None or t.get("identifier") in used),
            key=lambda t: str(t.get("identifier")),
        )

    @app.get("/v3/document_types/{identifier}")
    def get_document_type(identifier: str) -> dict[str, Any]:
        with state._lock:
            found = state.document_types.get(identifier)
        if found is None:
            raise _not_found()
        return found

    @app.get("/v3/document_types/{identifier}/json_schema")
    def get_document_type_schema(identifier: str) -> dict[str, Any]:
        with state._lock:
            found = state.schemas.get(identifier)
        if found is None:
            raise _not_found()
        return found

    @app.get("/v3/validation_results")
    def validation_results(request: Request) -> list[dict[str, Any]]:
        document = request.query_params.get("document")
        if not document:
            raise ApiError(400, "required", "This field is required.", "document")
        with state._lock:
            if document not in state.documents:
                raise ApiError(400, "invalid_choice", "Select a valid choice.", "document")
            return list(state.validation_results.get(document, []))

    @app.post("/v3/resthook_subscriptions", status_code=201)
    def create_subscription(body: dict[str, Any]) -> dict[str, Any]:
        return state._subscribe(body).to_json(state.organization_name)

    @app.post("/v3/resthook_subscriptions/activate")
    def activate_subscription(request: Request) -> dict[str, Any]:
        subscription = state._activate(request.headers.get("x-hook-secret"))
        return subscription.to_json(state.organization_name)

    @app.get("/v3/resthook_subscriptions")
    def list_subscriptions(request: Request) -> dict[str, Any]:
        with state._lock:
            items = [
                s.to_json(state.organization_name)
                for s in sorted(state.subscriptions.values(), key=lambda s: s.id)
            ]
        return _page(items, request, 20, 300)

    def subscription_or_404(subscription_id: str) -> Subscription:
        try:
            key = int(subscription_id)
        except ValueError:
            raise _not_found() from None
        with state._lock:
            found = state.subscriptions.get(key)
        if found is None:
            raise _not_found()
        return found

    @app.get("/v3/resthook_subscriptions/{subscription_id}")
    def get_subscription(subscription_id: str) -> dict[str, Any]:
        return subscription_or_404(subscription_id).to_json(state.organization_name)

    @app.delete("/v3/resthook_subscriptions/{subscription_id}", status_code=204)
    def delete_subscription(subscription_id: str) -> Response:
        found = subscription_or_404(subscription_id)
        with state._lock:
            state.subscriptions.pop(found.id, None)
        return Response(status_code=204)

    # Control endpoints for a stand-in running in its own process (the demo): not the API.

    @app.post("/_standin/deliver")
    def control_deliver(body: dict[str, Any]) -> dict[str, Any]:
        event = body.get("event")
        document = body.get("documentIdentifier")
        if event not in EVENTS or not isinstance(document, str):
            raise ApiError(400, "invalid", "event and documentIdentifier are required.")
        try:
            deliveries = state.deliver(event, document, body.get("timestamp"))
        except KeyError:
            raise _not_found() from None
        return {
            "deliveries": [
                {
                    "subscription": d.subscription_id,
                    "targetUrl": d.target_url,
                    "status": d.status,
                    "error": d.error,
                }
                for d in deliveries
            ]
        }

    @app.post("/_standin/faults")
    def control_faults(body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("status")
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ApiError(400, "invalid", "status must be an HTTP error status.", "status")
        state.fail_next(
            status,
            int(body.get("count", 1)),
            body.get("retryAfter"),
            str(body.get("pathPrefix", "/v3/")),
        )
        return {"status": status}

    @app.get("/_standin/requests")
    def control_requests() -> dict[str, Any]:
        with state._lock:
            return {
                "requests": [
                    {
                        "method": r.method,
                        "path": r.path,
                        "query": r.query,
                        "authorized": r.authorized,
                    }
                    for r in state.requests
                ]
            }

    return _recording(app, state)


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class HookReceiver:
    """A RESThook receiver for tests and the demo: records every POST and answers `status`
    (200 to a handshake unless `handshake_status` says otherwise). `on_handshake` is called
    with the secret after the answer is sent, as a real receiver activates afterwards."""

    status: int = 200
    handshake_status: int = 200
    on_handshake: Callable[[str], None] | None = None
    received: list[Received] = field(default_factory=list)
    hook_secrets: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if "x-hook-secret" not in r.headers]

    def app(self) -> Any:
        from starlette.background import BackgroundTask

        receiver = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @receiver.post("/{path:path}")
        async def receive(request: Request) -> Response:
            body = await request.body()
            headers = {k.lower(): v for k, v in request.headers.items()}
            secret = headers.get("x-hook-secret")
            with self._lock:
                self.received.append(Received(headers, body))
                if secret:
                    self.hook_secrets.append(secret)
            if secret:
                task = (
                    BackgroundTask(self.on_handshake, secret)
                    if self.on_handshake and self.handshake_status == 200
                    else None
                )
                return Response(
                    status_code=self.handshake_status,
                    headers={"X-Hook-Secret": secret},
                    background=task,
                )
            return Response(status_code=self.status)

        return receiver


def _key(value: str | None, env: str, what: str, generated: list[str]) -> str:
    if value:
        return value
    if os.environ.get(env):
        return os.environ[env]
    generated.append(what)
    return secrets.token_hex(20 if what == "api key" else 32)


def write_keys_file(path: Path, keys: dict[str, str]) -> Path:
    """`name: value` lines in a file created with mode 0600 (replaced if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{name}: {value}\n" for name, value in keys.items())
    return path


def main(argv: Iterable[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m devkit.standins.platform",
        description="Serve the document platform stand-in on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument(
        "--data", default="examples", help="directory holding documents/ and document-types/"
    )
    parser.add_argument("--api-key", help="else $DOCRELAY_PLATFORM_API_KEY, else random")
    parser.add_argument(
        "--signature-key", help="else $DOCRELAY_PLATFORM_SIGNATURE_KEY, else random"
    )
    parser.add_argument("--organization", default="dRlyOrg1")
    parser.add_argument(
        "--keys-file",
        default=".devkit/platform-standin.keys",
        help="where generated keys are written (mode 0600; default: %(default)s)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    generated: list[str] = []
    api_key = _key(args.api_key, "DOCRELAY_PLATFORM_API_KEY", "api key", generated)
    signature_key = _key(
        args.signature_key, "DOCRELAY_PLATFORM_SIGNATURE_KEY", "signature key", generated
    )
    state = PlatformState.from_dir(
        args.data, api_key=api_key, organization=args.organization, signature_key=signature_key
    )
    print(
        f"platform stand-in on http://127.0.0.1:{args.port} "
        f"({len(state.documents)} documents, {len(state.document_types)} document types, "
        f"organization {state.organization})",
        flush=True,
    )
    # A generated key exists nowhere else: it goes to a file only its owner can read, never
    # to the terminal (where scrollback and CI logs keep it); a given key is never written.
    if generated:
        values = {"api key": api_key, "signature key": signature_key}
        keys_file = write_keys_file(Path(args.keys_file), {k: values[k] for k in generated})
        print(f"generated {' and '.join(generated)}: written to {keys_file}", flush=True)
    uvicorn.run(create_app(state), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
