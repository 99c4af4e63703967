"""A Pipedream Connect stand-in: the public contract (references.md §2) over real HTTP.

Covers: the client-credentials token (configurable lifetime, 401 when expired or unknown),
``x-pd-environment``, accounts with cursor pagination, Connect tokens and links, the proxy
(URL-safe base64 target, only ``x-pd-proxy-*`` headers forwarded with the prefix stripped,
the account's credentials inserted here, 30 s upstream limit -> 504), injectable 429/504 for
the next N calls, a few scripted actions, and the action catalog of a few apps (list by app,
retrieve a component, configure a prop's remote options), and the connection webhook
(``CONNECTION_SUCCESS`` / ``CONNECTION_ERROR`` POSTed to the Connect token's ``webhook_uri``
when the Connect Link page completes, as Pipedream sends it: unsigned JSON). Every request is
recorded.

The proxy forwards to loopback targets only: tests run their "upstream" on 127.0.0.1, and a
stand-in must never reach the outside world.

    python -m devkit.standins.pipedream --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import email.policy
import hashlib
import html
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

PROXY_PREFIX = "x-pd-proxy-"
ENVIRONMENTS = ("development", "production")
_HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
     "trailer", "proxy-authorization", "proxy-connection", "content-encoding"}
)
_MACRO = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_APP_SLUG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class StandinAccount:
    """A connected account. ``credentials`` stay here: no endpoint returns them."""

    id: str
    external_id: str
    app_slug: str
    app_name: str = ""
    name: str = ""
    auth_type: str = "oauth"
    environment: str = "development"
    healthy: bool = True
    dead: bool = False
    expires_at: datetime | None = None
    error: str | None = None
    credentials: dict[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def access_token(self) -> str:
        return self.credentials["oauth_access_token"]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name or f"{self.app_slug} ({self.external_id})",
            "external_id": self.external_id,
            "healthy": self.healthy,
            "dead": self.dead,
            "app": {"name_slug": self.app_slug, "name": self.app_name or self.app_slug,
                    "auth_type": self.auth_type, "categories": [], "featured_weight": 0,
                    "img_src": f"https://assets.pipedream.net/s.v0/{self.app_slug}/logo/orig",
                    "scope_profiles": []},
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at) if self.expires_at else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


ActionScript = Callable[[dict[str, Any], StandinAccount], Any]


class ActionError(Exception):
    """Raised by a scripted action: the stand-in answers with an error object."""


def _xero_create_invoice(props: dict[str, Any], account: StandinAccount) -> Any:
    lines = props.get("line_items") or props.get("LineItems") or []
    total = sum(float(line.get("UnitAmount", 0)) * float(line.get("Quantity", 1))
                for line in lines if isinstance(line, dict))
    return {"Invoices": [{
        "InvoiceID": f"inv-{secrets.token_hex(4)}",
        "InvoiceNumber": props.get("invoice_number") or "INV-0001",
        "Type": props.get("type", "ACCPAY"),
        "Contact": {"Name": props.get("contact_name", "")},
        "Status": "DRAFT",
        "Total": total,
    }]}


def _slack_send_message(props: dict[str, Any], account: StandinAccount) -> Any:
    if not props.get("channel"):
        raise ActionError("channel is required")
    return {"ok": True, "channel": props["channel"], "ts": f"{time.time():.6f}",
            "message": {"text": props.get("text", "")}}


DEFAULT_ACTIONS: dict[str, tuple[str, ActionScript]] = {
    "xero_accounting_api-create-invoice": ("xero_accounting_api", _xero_create_invoice),
    "slack-send-message": ("slack", _slack_send_message),
}


def _prop(name: str, type_: str, label: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "label": label, "description": description, **extra}


# A few apps' actions as Connect's catalog describes them (GET .../actions?app=, GET
# .../actions/{key}): each a component with its key, version and configurable props. The app
# prop (type "app") is where the caller puts {"authProvisionId": <account id>}.
DEFAULT_CATALOG: dict[str, dict[str, Any]] = {
    "slack-send-message": {
        "key": "slack-send-message", "name": "Send Message", "version": "0.1.4",
        "component_type": "action",
        "description": "Send a message to a user, group, private channel or public channel.",
        "configurable_props": [
            _prop("slack", "app", "Slack", app="slack"),
            _prop("channel", "string", "Channel", "The channel (id) to post to.",
                  remoteOptions=True),
            _prop("text", "string", "Text", "The message text (mrkdwn)."),
            _prop("thread_ts", "string", "Thread Timestamp",
                  "Reply in this thread instead of the channel.", optional=True),
        ],
    },
    "slack-list-channels": {
        "key": "slack-list-channels", "name": "List Channels", "version": "0.0.9",
        "component_type": "action", "description": "Return a list of all channels.",
        "configurable_props": [_prop("slack", "app", "Slack", app="slack")],
    },
    "xero_accounting_api-create-invoice": {
        "key": "xero_accounting_api-create-invoice", "name": "Create Invoice",
        "version": "0.2.1", "component_type": "action",
        "description": "Create a bill (ACCPAY) or a sales invoice (ACCREC).",
        "configurable_props": [
            _prop("xero_accounting_api", "app", "Xero", app="xero_accounting_api"),
            _prop("tenant_id", "string", "Tenant ID", "The Xero organisation.",
                  remoteOptions=True),
            _prop("contact_name", "string", "Contact Name", "The supplier or customer."),
            _prop("type", "string", "Type", "ACCPAY for a bill, ACCREC for a sales invoice.",
                  options=["ACCPAY", "ACCREC"]),
            _prop("invoice_number", "string", "Invoice Number", optional=True),
            _prop("line_items", "any", "Line Items",
                  "[{Description, Quantity, UnitAmount, AccountCode}]"),
        ],
    },
}

# What configure-prop answers for a prop with remoteOptions, per (action key, prop name).
DEFAULT_PROP_OPTIONS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("slack-send-message", "channel"): [
        {"label": "#finance", "value": "C0FINANCE1"},
        {"label": "#general", "value": "C0GENERAL1"},
    ],
    ("xero_accounting_api-create-invoice", "tenant_id"): [
        {"label": "Demo Company (UK)", "value": "tenant-demo-uk"},
    ],
}


class PipedreamStandin:
    """State and knobs of one stand-in project. ``app`` is the ASGI app to serve."""

    def __init__(
        self,
        *,
        project_id: str = "proj_standin1",
        client_id: str = "pd_client_standin",
        client_secret: str | None = None,
        token_lifetime: float = 3600.0,
        page_size: int = 10,
        upstream_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project_id = project_id
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.token_lifetime = token_lifetime
        self.page_size = page_size
        self.upstream_timeout = upstream_timeout
        self.clock = clock
        self.accounts: dict[str, StandinAccount] = {}
        self.actions: dict[str, tuple[str, ActionScript]] = dict(DEFAULT_ACTIONS)
        self.catalog: dict[str, dict[str, Any]] = dict(DEFAULT_CATALOG)
        self.prop_options = dict(DEFAULT_PROP_OPTIONS)
        self.connect_tokens: dict[str, dict[str, Any]] = {}
        self.connected: list[StandinAccount] = []  # accounts connected on the Connect page
        # Connection webhooks sent: (webhook_uri, payload, the receiver's status or None).
        self.webhooks: list[tuple[str, dict[str, Any], int | None]] = []
        # Set: the next Connect Link completion fails with this error (CONNECTION_ERROR).
        self.connect_error: str | None = None
        self.requests: list[RecordedRequest] = []
        self._tokens: dict[str, float] = {}  # server token -> expiry on self.clock
        self._failures: list[tuple[int, str]] = []  # (status, "proxy" | "any"), in order
        self._lock = threading.Lock()
        self.app = create_app(self)

    # -- knobs for tests -------------------------------------------------------------------

    def add_account(self, external_id: str, app_slug: str, **fields: Any) -> StandinAccount:
        fields.setdefault("credentials", {"oauth_access_token": f"at_{secrets.token_hex(16)}"})
        account = StandinAccount(id=fields.pop("id", f"apn_{secrets.token_hex(6)}"),
                                 external_id=external_id, app_slug=app_slug, **fields)
        with self._lock:
            self.accounts[account.id] = account
        return account

    def reset(self) -> None:
        """Forget accounts, tokens, records and injected failures (one server, many tests)."""
        with self._lock:
            self.accounts.clear()
            self.connect_tokens.clear()
            self.connected.clear()
            self.webhooks.clear()
            self.connect_error = None
            self.requests.clear()
            self._tokens.clear()
            self._failures.clear()
            self.actions = dict(DEFAULT_ACTIONS)
            self.catalog = dict(DEFAULT_CATALOG)
            self.prop_options = dict(DEFAULT_PROP_OPTIONS)

    def fail_next(self, status: int, count: int = 1, scope: str = "proxy") -> None:
        """The next ``count`` proxy calls (``scope="any"``: any Connect call) answer
        ``status`` (429 or 504, typically) without doing anything."""
        with self._lock:
            self._failures.extend([(status, scope)] * count)

    def expire_tokens(self) -> None:
        """Every server token issued so far expires now (as after its lifetime)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    @property
    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._tokens)

    def recorded(self, path_part: str = "", method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if path_part in r.path
                    and (method is None or r.method == method)]

    def send_webhook(self, uri: str, payload: dict[str, Any]) -> int | None:
        """POST a connection event to ``uri`` as Pipedream does (JSON, no signature); the
        receiver's status (None: unreachable). Loopback only. Tests call it to replay one."""
        status: int | None = None
        if _loopback(urlsplit(uri).hostname):
            try:
                status = httpx.post(uri, json=payload, timeout=30).status_code
            except httpx.HTTPError:
                status = None
        with self._lock:
            self.webhooks.append((uri, payload, status))
        return status

    def connection_event(self, token: str, found: dict[str, Any],
                         account: StandinAccount | None, error: str | None = None
                         ) -> dict[str, Any]:
        """The body of Pipedream's connection webhook for this Connect token."""
        event: dict[str, Any] = {
            "event": "CONNECTION_ERROR" if account is None else "CONNECTION_SUCCESS",
            "connect_token": token,
            "environment": found["environment"],
            "connect_session_id": int(hashlib.sha256(token.encode()).hexdigest()[:12], 16),
        }
        if account is None:
            event["error"] = error or "The connection failed."
        else:
            event["account"] = account.public()
        return event

    # -- used by the app -------------------------------------------------------------------

    def _record(self, request: Request, body: bytes, status: int) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(
                request.method, request.url.path, dict(request.query_params),
                {k.lower(): v for k, v in request.headers.items()}, body, status))

    def _take_failure(self, is_proxy: bool) -> int | None:
        with self._lock:
            for index, (status, scope) in enumerate(self._failures):
                if scope == "any" or is_proxy:
                    del self._failures[index]
                    return status
            return None

    def _issue_token(self) -> str:
        token = f"pd_at_{secrets.token_urlsafe(24)}"
        with self._lock:
            self._tokens[token] = self.clock() + self.token_lifetime
        return token

    def _token_valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self.clock() < expiry


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _decode_target(url_64: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(url_64 + "=" * (-len(url_64) % 4))
        return raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def create_app(standin: PipedreamStandin) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for every forwarded call: building one per call costs ~50 ms (TLS setup).
        async with httpx.AsyncClient() as upstream:
            app.state.upstream = upstream
            yield

    app = FastAPI(title="Pipedream Connect stand-in", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.standin = standin
    connect = f"/v1/connect/{standin.project_id}"

    @app.middleware("http")
    async def record_and_check(request: Request, call_next: Any) -> Response:
        body = await request.body()
        path = request.url.path
        response: Response
        if path.startswith("/v1/connect/"):
            response = _check_connect_call(standin, request, path)
            if response.status_code == 200:
                response = await call_next(request)
        else:
            response = await call_next(request)
        standin._record(request, body, response.status_code)
        return response

    @app.post("/v1/oauth/token")
    async def oauth_token(request: Request) -> Response:
        raw = await request.body()
        if "json" in request.headers.get("content-type", ""):
            try:
                form = json.loads(raw or b"{}")
            except ValueError:
                return _error(400, "body is not JSON")
        else:
            form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
        if not isinstance(form, dict) or form.get("grant_type") != "client_credentials":
            return _error(400, "unsupported_grant_type")
        if not (secrets.compare_digest(str(form.get("client_id", "")), standin.client_id)
                and secrets.compare_digest(str(form.get("client_secret", "")),
                                           standin.client_secret)):
            return _error(401, "invalid_client")
        return JSONResponse({"access_token": standin._issue_token(), "token_type": "Bearer",
                             "expires_in": int(standin.token_lifetime),
                             "created_at": int(time.time())})

    def _account_for(request: Request, account_id: str) -> StandinAccount | None:
        account = standin.accounts.get(account_id)
        if account is None or account.environment != request.headers["x-pd-environment"]:
            return None
        return account

    @app.get(f"{connect}/accounts")
    async def list_accounts(request: Request) -> Response:
        q = request.query_params
        environment = request.headers["x-pd-environment"]
        matching = sorted(
            (a for a in standin.accounts.values()
             if a.environment == environment
             and q.get("external_user_id") in (None, a.external_id)
             and q.get("app") in (None, a.app_slug)),
            key=lambda a: a.id,
        )
        try:
            limit = max(1, min(int(q.get("limit", standin.page_size)), standin.page_size))
        except ValueError:
            return _error(400, "limit must be a number")
        start = 0
        if q.get("after"):
            after = _decode_target(q["after"])
            ids = [a.id for a in matching]
            if after not in ids:
                return _error(400, "unknown cursor")
            start = ids.index(after) + 1
        page = matching[start:start + limit]

        def cursor(account: StandinAccount) -> str:
            return base64.urlsafe_b64encode(account.id.encode()).decode().rstrip("=")

        return JSONResponse({
            "data": [a.public() for a in page],
            "page_info": {
                "count": len(page), "total_count": len(matching),
                "start_cursor": cursor(page[0]) if page else None,
                "end_cursor": cursor(page[-1]) if page else None,
            },
        })

    @app.get(f"{connect}/accounts/{{account_id}}")
    async def get_account(request: Request, account_id: str) -> Response:
        account = _account_for(request, account_id)
        if account is None:
            return _error(404, "account not found")
        return JSONResponse(account.public())

    @app.post(f"{connect}/tokens")
    async def create_token(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict) or not body.get("external_user_id"):
            return _error(400, "external_user_id is required")
        token = f"ctok_{secrets.token_hex(16)}"
        expires = datetime.now(UTC) + timedelta(hours=4)
        standin.connect_tokens[token] = {**body, "environment":
                                         request.headers["x-pd-environment"]}
        link = f"{str(request.base_url).rstrip('/')}/_static/connect.html?token={token}" \
               "&connectLink=true"
        return JSONResponse({"token": token, "expires_at": _iso(expires),
                             "connect_link_url": link})

    # -- the Connect Link page (what a person sees at connect_link_url) -----------------------
    # Pipedream's hosted page runs the app's OAuth; here one button stands for it. On success
    # it redirects to the token's success_redirect_uri (else a page saying so), as Pipedream
    # does; a used, unknown or expired token gets Pipedream's "This link has expired" page.

    def _link_token(token: str) -> dict[str, Any] | None:
        with standin._lock:
            found = standin.connect_tokens.get(token)
        if found is None or found.get("used"):
            return None
        return found

    def _expired() -> HTMLResponse:
        return HTMLResponse("<!doctype html><title>Pipedream Connect</title><p>This link has "
                            "expired. Please request a new one from the app developer.</p>",
                            status_code=400)

    @app.get("/_static/connect.html")
    async def connect_page(token: str = "", app: str = "") -> Response:
        found = _link_token(token)
        if found is None or not _APP_SLUG.match(app):
            return _expired()
        who = html.escape(str(found["external_user_id"]))
        return HTMLResponse(
            "<!doctype html><html lang=\"en\"><title>Pipedream Connect</title>"
            f"<h1>Connect {html.escape(app)}</h1><p>for {who}</p>"
            "<form method=\"post\" action=\"/_static/connect\">"
            f"<input type=\"hidden\" name=\"token\" value=\"{html.escape(token)}\">"
            f"<input type=\"hidden\" name=\"app\" value=\"{html.escape(app)}\">"
            "<button id=\"connect\" type=\"submit\">Connect</button></form></html>"
        )

    @app.post("/_static/connect")
    async def connect_account(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace"))
                .items()}
        token, app_slug = form.get("token", ""), form.get("app", "")
        with standin._lock:
            found = standin.connect_tokens.get(token)
            if found is None or found.get("used") or not _APP_SLUG.match(app_slug):
                found = None
            else:
                found["used"] = True  # single use
        if found is None:
            return _expired()
        hook = found.get("webhook_uri")
        if standin.connect_error is not None:  # the app's side failed: CONNECTION_ERROR
            error, standin.connect_error = standin.connect_error, None
            if hook:
                await asyncio.to_thread(standin.send_webhook, str(hook),
                                        standin.connection_event(token, found, None, error))
            target = found.get("error_redirect_uri")
            if target:
                return Response(status_code=303, headers={"Location": str(target)})
            return HTMLResponse("<!doctype html><title>Pipedream Connect</title><p>"
                                f"{html.escape(error)}</p>", status_code=400)
        account = standin.add_account(str(found["external_user_id"]), app_slug,
                                      environment=found["environment"])
        standin.connected.append(account)
        if hook:  # Pipedream reports the connection to the token's webhook_uri
            await asyncio.to_thread(standin.send_webhook, str(hook),
                                    standin.connection_event(token, found, account))
        target = found.get("success_redirect_uri")
        if target:
            return Response(status_code=303, headers={"Location": str(target)})
        return HTMLResponse(f"<!doctype html><title>Pipedream Connect</title><p>Connected "
                            f"{html.escape(app_slug)}: {html.escape(account.id)}</p>")

    # -- the action catalog (list by app, retrieve, configure a prop) ----------------------

    def _app_of(component: dict[str, Any]) -> str | None:
        for prop in component.get("configurable_props") or []:
            if prop.get("type") == "app":
                return str(prop.get("app"))
        return None

    @app.get(f"{connect}/actions")
    async def list_actions(request: Request) -> Response:
        q = request.query_params
        wanted = q.get("app")
        query = (q.get("q") or "").lower()
        matching = sorted(
            (c for c in standin.catalog.values()
             if (wanted is None or _app_of(c) == wanted)
             and (not query or query in f"{c['key']} {c['name']} {c.get('description', '')}"
                  .lower())),
            key=lambda c: str(c["key"]),
        )
        try:
            limit = max(1, min(int(q.get("limit", standin.page_size)), standin.page_size))
        except ValueError:
            return _error(400, "limit must be a number")
        start = 0
        if q.get("after"):
            keys = [str(c["key"]) for c in matching]
            after = _decode_target(q["after"])
            if after not in keys:
                return _error(400, "unknown cursor")
            start = keys.index(after) + 1
        page = matching[start:start + limit]
        more = start + limit < len(matching)

        def cursor(component: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(str(component["key"]).encode()).decode().rstrip("=")

        return JSONResponse({
            "data": page,
            "page_info": {
                "count": len(page), "total_count": len(matching),
                "start_cursor": cursor(page[0]) if page else None,
                "end_cursor": cursor(page[-1]) if page and more else None,
            },
        })

    @app.post(f"{connect}/actions/configure")
    async def configure_prop(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict) or not body.get("external_user_id") \
                or not body.get("id") or not body.get("prop_name"):
            return _error(400, "id, external_user_id and prop_name are required")
        component = standin.catalog.get(str(body["id"]))
        if component is None:
            return _error(404, "action not found")
        props = {p["name"]: p for p in component["configurable_props"]}
        prop = props.get(str(body["prop_name"]))
        if prop is None:
            return _error(400, f"no prop {body['prop_name']} in {body['id']}")
        app_slug = _app_of(component)
        configured = body.get("configured_props") or {}
        auth = configured.get(app_slug) if isinstance(configured, dict) else None
        account_id = auth.get("authProvisionId") if isinstance(auth, dict) else None
        account = _account_for(request, str(account_id))
        if (account is None or account.external_id != body["external_user_id"]
                or account.app_slug != app_slug):
            # Pipedream answers 200 with the problem in "errors" for a prop it cannot load.
            return JSONResponse({"options": None, "string_options": None, "context": None,
                                 "observations": [],
                                 "errors": [f"{app_slug} account is required to load options"]})
        options = standin.prop_options.get((str(body["id"]), prop["name"]))
        if options is None and prop.get("options"):
            options = [{"label": str(o), "value": o} for o in prop["options"]]
        return JSONResponse({"options": options or [], "string_options": None, "context": None,
                             "observations": [], "errors": []})

    @app.get(f"{connect}/actions/{{key}}")
    async def retrieve_action(request: Request, key: str) -> Response:
        component = standin.catalog.get(key)
        if component is None:
            return _error(404, "action not found")
        return JSONResponse({"data": component})

    @app.post(f"{connect}/actions/run")
    async def run_action(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _error(400, "body is not JSON")
        script = standin.actions.get(str(body.get("id")))
        if script is None:
            return _error(404, "action not found")
        app_slug, run = script
        props = body.get("configured_props") or {}
        auth = props.get(app_slug) if isinstance(props, dict) else None
        account_id = auth.get("authProvisionId") if isinstance(auth, dict) else None
        account = _account_for(request, str(account_id))
        if (account is None or account.external_id != body.get("external_user_id")
                or account.app_slug != app_slug):
            return _error(404, f"no {app_slug} account {account_id} for this external user")
        if account.dead:
            return _error(400, "the account is dead: connect it again")
        plain = {k: v for k, v in props.items() if k != app_slug}
        try:
            ret = run(plain, account)
        except ActionError as exc:
            failure = {"name": "Error", "message": str(exc)}
            return JSONResponse({"exports": {}, "os": [{"k": "error", "err": failure}],
                                 "ret": None, "error": failure})
        return JSONResponse({"exports": {"$summary": f"ran {body['id']}"}, "os": [],
                             "ret": ret, "stash_id": None})

    @app.api_route(f"{connect}/proxy/{{url_64}}",
                   methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def proxy(request: Request, url_64: str) -> Response:
        q = request.query_params
        if not q.get("external_user_id") or not q.get("account_id"):
            return _error(400, "external_user_id and account_id are required")
        account = _account_for(request, q["account_id"])
        if account is None or account.external_id != q["external_user_id"]:
            return _error(404, "account not found for this external user")
        if account.dead:
            return _error(403, "the account is dead: connect it again")
        target = _decode_target(url_64)
        parts = urlsplit(target or "")
        if target is None or parts.scheme not in ("http", "https") or not parts.hostname:
            return _error(400, "the path must be the URL-safe base64 of an absolute URL")
        if not _loopback(parts.hostname):
            return _error(400, "the stand-in forwards to loopback targets only")
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            lowered = name.lower()
            if lowered.startswith(PROXY_PREFIX):
                stripped = lowered[len(PROXY_PREFIX):]
                if stripped and stripped not in _HOP_BY_HOP:
                    # {{field}} macros name the account's credentials, as Pipedream's do.
                    headers[stripped] = _MACRO.sub(
                        lambda m: account.credentials.get(m.group(1), ""), value)
        if "content-type" in request.headers:
            headers["content-type"] = request.headers["content-type"]  # the body passes through
        headers.setdefault("authorization", f"Bearer {account.access_token}")
        upstream: httpx.AsyncClient = request.app.state.upstream
        try:
            answer = await upstream.request(request.method, target, headers=headers,
                                            content=await request.body(),
                                            timeout=standin.upstream_timeout)
        except httpx.TimeoutException:
            return _error(504, "the upstream did not answer within the proxy's limit")
        except httpx.HTTPError:
            return _error(502, "the upstream could not be reached")
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    return app


def _check_connect_call(standin: PipedreamStandin, request: Request, path: str) -> Response:
    """Auth, environment, project and injected failures, before any Connect endpoint."""
    authorization = request.headers.get("authorization", "")
    token = authorization[7:] if authorization.lower().startswith("bearer ") else ""
    if not token or not standin._token_valid(token):
        return _error(401, "invalid or expired token", **{"www-authenticate": "Bearer"})
    if request.headers.get("x-pd-environment") not in ENVIRONMENTS:
        return _error(400, "x-pd-environment must be development or production")
    if not path.startswith(f"/v1/connect/{standin.project_id}/"):
        return _error(404, "project not found")
    failure = standin._take_failure(is_proxy="/proxy/" in path)
    if failure is not None:
        extra = {"retry-after": "1"} if failure == 429 else {}
        return _error(failure, "injected failure", **extra)
    return Response(status_code=200)


def _multipart_parts(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The parts of a multipart body, with the standard library (no python-multipart)."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        parts.append({"name": part.get_param("name", header="content-disposition"),
                      "filename": part.get_filename(), "content_type": part.get_content_type(),
                      "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    return parts


def echo_upstream(received: list[dict[str, Any]] | None = None) -> FastAPI:
    """A tiny target API for tests and the demo: it records what reached it and answers
    ``/echo`` (what it got), ``/status/{code}``, ``/slow?seconds=`` and ``/upload``."""
    app = FastAPI(title="upstream", docs_url=None, redoc_url=None)
    log: list[dict[str, Any]] = received if received is not None else []
    app.state.received = log

    async def seen(request: Request) -> dict[str, Any]:
        body = await request.body()
        entry = {"method": request.method, "path": request.url.path,
                 "query": dict(request.query_params),
                 "headers": {k.lower(): v for k, v in request.headers.items()},
                 "body": body.decode(errors="replace")}
        log.append(entry)
        return entry

    @app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request) -> Response:
        return JSONResponse(await seen(request), headers={"x-upstream": "echo"})

    @app.api_route("/status/{code}", methods=["GET", "POST"])
    async def status(request: Request, code: int) -> Response:
        await seen(request)
        return JSONResponse({"error": f"upstream says {code}"}, status_code=code)

    @app.get("/slow")
    async def slow(request: Request) -> Response:
        await seen(request)
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        return JSONResponse({"slow": True})

    @app.post("/upload")
    async def upload(request: Request) -> Response:
        await seen(request)
        parts = _multipart_parts(request.headers.get("content-type", ""), await request.body())
        return JSONResponse({"parts": parts}, status_code=201)

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--project-id", default="proj_standin1")
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    parser.add_argument("--page-size", type=int, default=10)
    args = parser.parse_args(argv)
    standin = PipedreamStandin(project_id=args.project_id, token_lifetime=args.token_lifetime,
                               page_size=args.page_size)
    account = standin.add_account("demo-user", "xero_accounting_api", app_name="Xero")
    # A development stand-in: its made-up credentials are printed so the demo can use them.
    print(json.dumps({"base_url": f"http://127.0.0.1:{args.port}",
                      "project_id": standin.project_id, "client_id": standin.client_id,
                      "client_secret": standin.client_secret, "account_id": account.id,
                      "external_user_id": account.external_id}), flush=True)
    uvicorn.run(standin.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
