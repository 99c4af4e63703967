"""The console's HTTP server: pages, actions and live updates, each an API call made with the
signed-in user's own credentials.

Two ways to sign in:

- ``kubeconfig`` (``docrelay console`` on a laptop, as ``kubectl proxy``): the process acts
  with the user's kubeconfig; the browser signs in once with the secret link the command
  prints, so other local users and other sites' pages get nothing.
- ``token`` (the chart's ``console.enabled``): each user pastes a bearer token (a
  ServiceAccount token or an OIDC ID token); the console forwards it on every API call, so
  RBAC decides everything and the console has no rights of its own.

Every action is one the CLI already offers (deploy, revert, replay, add a sealed secret),
with the same guard rails. Secret values are sealed in the browser (static/seal.js); this
server only ever receives ciphertext, and checks that it is sealed for the place it is sent.
"""

from __future__ import annotations

import base64
import copy
import hmac
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import urllib3
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from kubernetes import client, watch
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from docrelay.actions import Refused, conversations, get_integration
from docrelay.actions.accounts import (
    ACCOUNT_NAME,
    check_account,
    connect_client,
    connect_link,
    save_connected_account,
)
from docrelay.actions.platform import platform_client
from docrelay.actions.revisions import (
    check_deployable,
    request_deploy,
    revert_target,
    revision_code,
)
from docrelay.actions.runs import (
    REPLAYABLE,
    broker_record,
    egress_record,
    live_pod,
    new_test_run,
    replay_manifest,
    stored_log,
)
from docrelay.actions.secrets import check_names, history_rows
from docrelay.builders.run import CONTAINER
from docrelay.builders.sealing import CERT_CONFIG_MAP, CERT_ENTRY, integration_secret
from docrelay.console import pages
from docrelay.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    MAX_TOKEN_BYTES,
    SECURITY_HEADERS,
    Session,
    SessionCookies,
    SignInLimit,
    TokenClients,
    cookie_attributes,
    csrf_ok,
    random_session_key,
)
from docrelay.kube import ACCOUNTS, INTEGRATIONS, REVISIONS, SECRETS, Kube, KubeError
from docrelay.kube import runs as kube_runs
from docrelay.models.common import GROUP, VERSION
from docrelay.pipedream import ConnectError
from docrelay.platform.errors import PlatformError
from docrelay.reconcile.deploy import DeployAction
from docrelay.sealing import Binding, key_id, public_key_from_certificate
from docrelay.sealing.envelope import SealingError, parse

STATIC = Path(__file__).parent / "static"
WATCH_SECONDS = 20
LOG_LIMIT = 512 * 1024
DOCUMENTS_LISTED = 50
CONNECT_PURPOSE = "pipedream-connect"
CONNECT_SECONDS = 4 * 3600  # a Connect token's life
KNOWN_ACCOUNTS = 200  # accounts of the user and app before connecting, to find the new one
SINCE = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}


class Denied(Exception):
    """No session, or a write without its CSRF token."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def kube_for_token(base: client.Configuration, token: str) -> Kube:
    """A client that authenticates with `token` only: the base configuration's server and CA,
    none of its credentials."""
    configuration = copy.copy(base)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.cert_file = None
    configuration.key_file = None
    configuration.username = None
    configuration.password = None
    configuration.refresh_api_key_hook = None
    return Kube(client.ApiClient(configuration))


def create_app(
    *,
    namespace: str,
    auth: str,
    kube: Kube | None = None,
    base_configuration: client.Configuration | None = None,
    login_secret: str = "",
    secure_cookies: bool = False,
    operator_namespace: str | None = None,
    record_bodies: bool = False,
    session_key: bytes | None = None,
    sign_in_limit: SignInLimit | None = None,
    gateway_url: str | None = None,
) -> FastAPI:
    """`auth` "kubeconfig" (every session uses `kube`; signing in needs `login_secret`) or
    "token" (each session uses its own bearer token against `base_configuration`).
    `session_key` seals the session cookies: replicas sharing it share sessions; without it
    a random key of this process's own. `gateway_url` (the tenant gateway's public URL):
    Pipedream reports each connection to the gateway, which creates the ConnectedAccount;
    without it the console creates it on the user's way back (docs/console.md)."""
    if auth == "kubeconfig" and (kube is None or not login_secret):
        raise ValueError("kubeconfig sign-in needs the client and a login secret")
    if auth == "token" and base_configuration is None:
        raise ValueError("token sign-in needs the API server's configuration")
    sessions = SessionCookies(session_key or random_session_key(), f"{auth}|{namespace}")
    limit = sign_in_limit or SignInLimit()
    clients = TokenClients(
        lambda token: kube_for_token(base_configuration or client.Configuration(), token)
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = sessions
    # With record_bodies (tests only): every write's body, to show no secret value arrived.
    app.state.received = []
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    cert_namespace = operator_namespace or namespace

    class Headers(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            response = await call_next(request)
            for header, value in SECURITY_HEADERS.items():
                response.headers.setdefault(header, value)
            session = getattr(request.state, "session", None)
            if session is not None and sessions.stale(session):
                # The session lives in its cookie: issue it again with what changed. Only
                # "last used" moved (e.g. a live-update stream): no flash message comes back.
                if not session.changed:
                    session.flash = None
                session.seen = sessions.clock()
                response.set_cookie(
                    COOKIE, sessions.seal(session), **cookie_attributes(secure_cookies)
                )
            return response

    app.add_middleware(Headers)

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    def session_of(request: Request) -> Session:
        state = sessions.open(request.cookies.get(COOKIE))
        if state is None:
            raise Denied(401, "Not signed in.")
        token = str(state.get("token") or "")
        if auth == "token" and not token:
            raise Denied(401, "Not signed in.")
        session = Session(
            id=state["id"],
            csrf=state["csrf"],
            kube=clients.get(token) if auth == "token" else kube,
            user=state["user"],
            token=token,
            issued=state["iat"],
            seen=state["seen"],
            flash=state.get("flash"),
        )
        request.state.session = session
        return session

    async def form_of(request: Request) -> dict[str, str]:
        """A urlencoded form (what the pages' forms send): one value per field."""
        body = await request.body()
        if record_bodies:
            app.state.received.append(body)
        fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        return {k: v[0] for k, v in fields.items()}

    async def writer(request: Request) -> tuple[Session, dict[str, str]]:
        session = session_of(request)
        form = await form_of(request)
        offered = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not csrf_ok(session, offered):
            raise Denied(
                403, "Refused: the form's CSRF token is missing or wrong. Reload the page."
            )
        return session, form

    def page(session: Session, title: str, body: str, active: str = "") -> HTMLResponse:
        flash = session.pop_flash()
        note = f'<p class="flash" role="status">{pages.esc(flash)}</p>' if flash else ""
        return html(
            pages.layout(title, note + body, namespace=namespace, user=session.user, active=active)
        )

    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied) -> Response:
        if (
            exc.status == 401
            and request.method == "GET"
            and "text/html" in request.headers.get("accept", "")
        ):
            return RedirectResponse("/login", status_code=303)
        return html(pages.message_page("Not allowed", str(exc)), exc.status)

    @app.exception_handler(KubeError)
    async def kube_error(request: Request, exc: KubeError) -> Response:
        status = exc.status if exc.status in (401, 403, 404, 409) else 502
        return html(pages.message_page("The Kubernetes API said no", str(exc)), status or 502)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return html(pages.message_page("Refused", str(exc)), 409)

    # --- signing in ------------------------------------------------------------------------

    def signed_in(request: Request, session: Session) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, sessions.seal(session), **cookie_attributes(secure_cookies))
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        request.state.session = None  # issued here, not again by the middleware
        return response

    def address(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def too_many(request: Request) -> Response | None:
        wait = limit.retry_after(address(request))
        if not wait:
            return None
        response = html(
            pages.message_page(
                "Sign in", f"Too many failed sign-ins from here: try again in {wait} s."
            ),
            429,
        )
        response.headers["Retry-After"] = str(wait)
        return response

    @app.get("/login")
    def login_form(request: Request, token: str = "") -> Response:
        if auth == "kubeconfig":
            if token:
                refused = too_many(request)
                if refused:
                    return refused
                if hmac.compare_digest(token.encode(), login_secret.encode()):
                    assert kube is not None
                    return signed_in(request, sessions.new(kube, kube.whoami()))
                limit.failed(address(request))
            return html(
                pages.message_page(
                    "Sign in",
                    "Open the link `docrelay console` printed (it holds a secret) to sign in.",
                ),
                401,
            )
        # Login CSRF: the form's token is tied to this browser's sign-in cookie.
        nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
        response = html(pages.login_page(namespace, sessions.login_token(nonce)))
        response.set_cookie(
            LOGIN_COOKIE, nonce, **{**cookie_attributes(secure_cookies), "path": "/login"}
        )
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await form_of(request)
        token = form.get("token", "").strip()
        if auth != "token":
            return html(pages.message_page("Sign in", "Sign-in with a token is not enabled."), 401)
        if not sessions.login_ok(request.cookies.get(LOGIN_COOKIE), form.get("login")):
            return html(
                pages.message_page(
                    "Sign in", "Refused: sign in from the console's own sign-in page (reload it)."
                ),
                403,
            )
        refused = too_many(request)
        if refused:
            return refused
        if not token or len(token.encode()) > MAX_TOKEN_BYTES:
            limit.failed(address(request))
            return html(
                pages.message_page(
                    "Sign in", f"Give a bearer token (at most {MAX_TOKEN_BYTES} bytes)."
                ),
                401,
            )
        user_kube = clients.get(token)
        try:
            user = await run_in_threadpool(user_kube.whoami)
        except urllib3.exceptions.HTTPError:
            return html(
                pages.message_page("Sign in", "The Kubernetes API server did not answer."), 502
            )
        if user == "unknown":
            limit.failed(address(request))
            return html(
                pages.message_page("Sign in", "The API server did not accept that token."), 401
            )
        return signed_in(request, sessions.new(user_kube, user, token))

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await writer(request)
        request.state.session = None
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # --- pages -----------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def integrations(request: Request) -> Response:
        session = session_of(request)
        items = session.kube.list_objects(INTEGRATIONS, namespace)
        return page(session, "Integrations", pages.integrations_page(items), "integrations")

    def sealing_info(kube: Kube) -> dict[str, str] | None:
        try:
            data = kube.read_config_map_data(cert_namespace, CERT_CONFIG_MAP)
            if not data or CERT_ENTRY not in data:
                return None
            public_key = public_key_from_certificate(data[CERT_ENTRY].encode())
        except (KubeError, ValueError):
            return None
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"spki": base64.b64encode(der).decode(), "keyId": key_id(public_key)}

    def accounts_of(kube: Kube, integration: str, names: list[str], csrf: str) -> str:
        try:
            listed = kube.list_objects(ACCOUNTS, namespace)
        except KubeError as exc:
            return f'<p class="muted">Connected accounts: {pages.esc(exc)}</p>'
        by_name = {o["metadata"]["name"]: o for o in listed}
        # The form offers the first listed account that is missing or not Ready.
        broken = [
            n
            for n in names
            if n not in by_name
            or not any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (by_name[n].get("status") or {}).get("conditions") or []
            )
        ]
        account = by_name.get(broken[0]) if broken else None
        users = [str((o.get("spec") or {}).get("externalUserId") or "") for o in listed]
        spec = (account or {}).get("spec") or {}
        form = pages.connect_account_form(
            integration,
            csrf,
            account=broken[0] if broken else "",
            app=str(spec.get("app") or ""),
            external_user=str(spec.get("externalUserId") or next(filter(None, users), "")),
        )
        return pages.accounts_html(names, by_name) + form

    @app.get("/integrations/{name}", response_class=HTMLResponse)
    def integration(request: Request, name: str, diff: str = "", connect: str = "") -> Response:
        session = session_of(request)
        if connect == "failed":  # Pipedream's error redirect
            session.set_flash("Pipedream Connect reported an error: no account was connected.")
        kube = session.kube
        obj = kube.get(INTEGRATIONS, namespace, name)
        if obj is None:
            return page(session, "Not found", f"<p>No integration {pages.esc(name)} here.</p>")
        deployed = (obj.get("status") or {}).get("deployedRevision")
        code = None
        diff_html = ""
        if deployed:
            try:
                _, code = revision_code(kube, namespace, deployed)
                if diff and diff != deployed:
                    _, other = revision_code(kube, namespace, diff)
                    diff_html = (
                        f"<h3>Changes from {pages.esc(deployed)} to {pages.esc(diff)}</h3>"
                        + pages.diff_html(deployed, code, diff, other)
                    )
            except Refused as exc:
                diff_html = f'<p class="muted">{pages.esc(exc)}</p>'
        secrets = [
            o
            for o in kube.list_objects(SECRETS, namespace)
            if (o.get("spec") or {}).get("integration") == name
        ]
        runs = [
            r
            for r in kube_runs.list_runs(kube, namespace)
            if (r.get("spec") or {}).get("integration") == name
        ]
        body = pages.integration_page(
            obj,
            namespace=namespace,
            revisions=kube.list_revisions(namespace, name),
            secrets=history_rows(secrets),
            runs=runs,
            code=code,
            diff=diff_html,
            csrf=session.csrf,
            sealing=sealing_info(kube),
            now=datetime.now(UTC),
            accounts=accounts_of(
                kube,
                name,
                list((obj.get("spec") or {}).get("connectedAccounts") or []),
                session.csrf,
            ),
        )
        threads = [
            t
            for t in kube.list_objects(conversations.CONVERSATIONS, namespace)
            if (t.get("spec") or {}).get("integration") == name
        ]
        body += pages.conversations_section(name, threads, session.csrf)
        return page(session, name, body, "integrations")

    def runs_html(
        session: Session, phase: str, integration: str, since: str
    ) -> tuple[str, list[str]]:
        items = kube_runs.list_runs(session.kube, namespace)
        now = datetime.now(UTC)
        chosen = pages.filter_runs(
            items,
            phase=phase,
            integration=integration,
            since=now - SINCE[since] if since in SINCE else None,
        )
        names = sorted({str((r.get("spec") or {}).get("integration", "")) for r in items} - {""})
        return pages.runs_table(chosen, now), names

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request, phase: str = "", integration: str = "", since: str = "") -> Response:
        session = session_of(request)
        table, names = runs_html(session, phase, integration, since)
        body = pages.runs_page(
            table, phase=phase, integration=integration, since=since, integrations=names
        )
        return page(session, "Runs", body, "runs")

    @app.get("/runs/{name}", response_class=HTMLResponse)
    def run(request: Request, name: str) -> Response:
        session = session_of(request)
        kube = session.kube
        obj = kube.get(kube_runs.RUNS, namespace, name)
        if obj is None:
            return page(session, "Not found", f"<p>No run {pages.esc(name)} here.</p>")
        attempt = int((obj.get("status") or {}).get("attempt") or 0)
        log, live, egress, broker = None, False, None, None
        if attempt:
            pod = live_pod(kube, namespace, name, attempt)
            if pod is not None:
                log = kube_runs.pod_log(kube, namespace, pod, CONTAINER, LOG_LIMIT)
                live = log is not None
            if log is None:
                log = stored_log(kube, namespace, name, attempt)
            egress = egress_record(kube, namespace, name, attempt)
            broker = broker_record(kube, namespace, name, attempt)
        body = pages.run_page(
            obj,
            log=log,
            live=live,
            egress=egress,
            broker=broker,
            csrf=session.csrf,
            now=datetime.now(UTC),
        )
        return page(session, name, body, "runs")

    # --- actions (each one the CLI offers) ---------------------------------------------------

    def back(to: str, session: Session, message: str) -> Response:
        session.set_flash(message)
        return RedirectResponse(to, status_code=303)

    @app.post("/integrations/{name}/deploy")
    async def deploy(request: Request, name: str) -> Response:
        session, form = await writer(request)
        revision = form.get("revision", "")

        def act() -> str:
            obj = get_integration(session.kube, namespace, name)
            check_deployable(session.kube, namespace, name, revision)
            if (obj.get("status") or {}).get("deployedRevision") == revision:
                return f"Revision {revision} is already deployed."
            request_deploy(
                session.kube, namespace, name, DeployAction.DEPLOY, revision, session.user
            )
            return f"Deploy of revision {revision} requested; the operator records it below."

        return back(f"/integrations/{pages.q(name)}#code", session, await run_in_threadpool(act))

    @app.post("/integrations/{name}/revert")
    async def revert(request: Request, name: str) -> Response:
        session, _ = await writer(request)

        def act() -> str:
            target = revert_target(get_integration(session.kube, namespace, name))
            check_deployable(session.kube, namespace, name, target)
            request_deploy(session.kube, namespace, name, DeployAction.REVERT, target, session.user)
            return f"Revert to revision {target} requested."

        return back(f"/integrations/{pages.q(name)}#code", session, await run_in_threadpool(act))

    @app.post("/integrations/{name}/secrets")
    async def add_secret(request: Request, name: str) -> Response:
        session, form = await writer(request)
        key = form.get("key", "")
        sealed = form.get("encryptedValue", "")
        check_names(name, key)
        if not sealed:
            raise Refused("no sealed value: Add secret seals in the browser and needs its script")
        try:
            envelope = parse(sealed)
        except SealingError as exc:
            raise Refused(str(exc)) from None
        if envelope.binding_digest != Binding(namespace, name, key).digest():
            raise Refused("the value was sealed for another namespace, integration or key")

        def act() -> str:
            body = integration_secret(
                namespace=namespace,
                integration=name,
                key=key,
                sealed=sealed,
                key_id=envelope.key_id,
                sealed_at=datetime.now(UTC),
            )
            created = session.kube.create_or_get(SECRETS, namespace, body)
            return f"Secret {key} added as {created['metadata']['name']}."

        return back(f"/integrations/{pages.q(name)}#secrets", session, await run_in_threadpool(act))

    @app.post("/runs/{name}/replay")
    async def replay(request: Request, name: str) -> Response:
        session, _ = await writer(request)

        def act() -> str:
            original = session.kube.get(kube_runs.RUNS, namespace, name)
            if original is None:
                raise Refused(f"run {name} not found in namespace {namespace}")
            phase = (original.get("status") or {}).get("phase")
            if phase not in REPLAYABLE or (original.get("spec") or {}).get("test"):
                raise Refused(f"run {name} is {phase or 'not finished'}: nothing to replay")
            body = replay_manifest(original, "current")
            created = session.kube.create_or_get(kube_runs.RUNS, namespace, body)
            return created["metadata"]["name"]

        new = await run_in_threadpool(act)
        return back(f"/runs/{pages.q(new)}", session, f"Replay of {name}.")

    # --- connecting accounts through Pipedream Connect (docs/console.md) ----------------------

    def back_here(request: Request, path: str) -> str:
        """This console's own URL for `path`, as the browser reaches it."""
        scheme = "https" if secure_cookies else request.url.scheme
        return f"{scheme}://{request.url.netloc}{path}"

    @app.post("/integrations/{name}/accounts/connect")
    async def connect_account(request: Request, name: str) -> Response:
        session, form = await writer(request)
        account = form.get("account", "").strip()
        app_slug = form.get("app", "").strip()
        external_user = form.get("external_user", "").strip()
        if not ACCOUNT_NAME.match(account):
            raise Refused(f"{account!r} is not a ConnectedAccount name (lowercase, digits, '-')")
        check_account(app_slug, external_user)

        def act() -> tuple[str, str]:
            get_integration(session.kube, namespace, name)
            with connect_client(session.kube, namespace) as pipedream:
                known = [
                    str(a.get("id"))
                    for a in pipedream.list_accounts(external_user_id=external_user, app=app_slug)
                ]
                state = sessions.seal_data(
                    CONNECT_PURPOSE,
                    {
                        "session": session.id,
                        "integration": name,
                        "account": account,
                        "app": app_slug,
                        "user": external_user,
                        "environment": pipedream.environment,
                        "known": known[:KNOWN_ACCOUNTS],
                        "webhook": bool(gateway_url),
                    },
                )
                # With the gateway's URL, also the request the gateway matches Pipedream's
                # webhook against (the same action as `docrelay connect --gateway-url`).
                made = connect_link(
                    pipedream,
                    session.kube,
                    namespace,
                    app=app_slug,
                    external_user=external_user,
                    gateway_url=gateway_url,
                    integration=name,
                    account=account,
                    success_redirect_uri=back_here(request, f"/accounts/connected?state={state}"),
                    error_redirect_uri=back_here(
                        request, f"/integrations/{pages.q(name)}?connect=failed#accounts"
                    ),
                )
            return made.url, made.expires_at

        try:
            link, expires = await run_in_threadpool(act)
        except ConnectError as exc:
            raise Refused(f"Pipedream refused: {exc}") from None
        body = pages.connect_link_page(name, app_slug, external_user, link, expires)
        return page(session, f"Connect {app_slug}", body, "integrations")

    @app.get("/accounts/connected")
    def account_connected(request: Request, state: str = "", again: str = "") -> Response:
        if sessions.open(request.cookies.get(COOKIE)) is None and not again:
            # Back from Pipedream's site: a SameSite=Strict cookie is not sent on a navigation
            # another site started. One step on this site's own page brings it along.
            target = f"/accounts/connected?state={pages.q(state)}&again=1"
            return html(pages.continue_page(target))
        session = session_of(request)
        pending = sessions.open_data(CONNECT_PURPOSE, state, CONNECT_SECONDS)
        if pending is None or pending.get("session") != session.id:
            raise Denied(403, "This connection was not started in this session: start again.")
        integration = str(pending["integration"])
        if pending.get("webhook"):
            # Pipedream reports the connection to the gateway, which creates the account
            # (docs/pipedream.md): nothing is created here, so one connection is one object.
            return back(
                f"/integrations/{pages.q(integration)}#accounts",
                session,
                f"Pipedream connected {pending['app']}: it reports the account to the gateway, "
                f"which creates ConnectedAccount {pending['account']}; the operator then checks "
                "its health (reload to see it).",
            )

        def act() -> str:
            with connect_client(session.kube, namespace, environment=pending["environment"]) as pd:
                found = [
                    a
                    for a in pd.list_accounts(external_user_id=pending["user"], app=pending["app"])
                    if str(a.get("id")) not in set(pending["known"])
                ]
            if not found:
                raise Refused(
                    f"Pipedream reports no new {pending['app']} account for {pending['user']}: "
                    "connect again"
                )
            newest = max(found, key=lambda a: (str(a.get("created_at") or ""), str(a["id"])))
            save_connected_account(
                session.kube,
                namespace,
                pending["account"],
                app=pending["app"],
                account_id=str(newest["id"]),
                external_user=pending["user"],
                environment=pending["environment"],
            )
            return (
                f"Connected {pending['app']} as ConnectedAccount {pending['account']} "
                f"({newest['id']}); the operator checks its health at Pipedream."
            )

        try:
            message = act()
        except ConnectError as exc:
            raise Refused(f"Pipedream refused: {exc}") from None
        return back(f"/integrations/{pages.q(integration)}#accounts", session, message)

    @app.get("/integrations/{name}/test", response_class=HTMLResponse)
    def pick_document(
        request: Request, name: str, workspace: str | None = None, document_type: str | None = None
    ) -> Response:
        session = session_of(request)
        kube = session.kube
        obj = get_integration(kube, namespace, name)
        spec = obj.get("spec") or {}
        # The integration's own scope unless the person chose another (empty: all of them).
        chosen_workspace = spec.get("workspace", "") if workspace is None else workspace
        chosen_type = spec.get("documentType", "") if document_type is None else document_type
        revisions = sorted(
            (
                r
                for r in kube.list_objects(REVISIONS, namespace)
                if (r.get("spec") or {}).get("integration") == name
            ),
            key=lambda r: r["metadata"].get("creationTimestamp") or "",
        )
        listed: dict[str, list[dict[str, Any]]] = {"workspaces": [], "types": [], "documents": []}
        problem = ""
        try:
            with platform_client(kube, namespace) as platform:
                listed["workspaces"] = platform.list_workspaces()
                listed["types"] = platform.list_document_types(workspace=chosen_workspace or None)
                listed["documents"] = platform.list_documents(
                    chosen_workspace or None, chosen_type or None, limit=DOCUMENTS_LISTED
                )
        except Refused as exc:
            problem = f"The platform's documents cannot be listed: {exc}. Type the identifier."
        except KubeError as exc:
            problem = (
                f"You may not read the platform's credentials ({exc}): type the identifier on "
                "the integration's page instead."
            )
        except PlatformError as exc:
            problem = f"The platform refused: {exc}"
        body = pages.pick_document_page(
            name,
            workspaces=listed["workspaces"],
            document_types=listed["types"],
            workspace=chosen_workspace,
            document_type=chosen_type,
            documents=listed["documents"],
            revisions=[r["metadata"]["name"] for r in revisions],
            csrf=session.csrf,
            problem=problem,
        )
        return page(session, f"Test run of {name}", body, "integrations")

    @app.post("/integrations/{name}/test")
    async def test_run(request: Request, name: str) -> Response:
        session, form = await writer(request)
        document = form.get("document", "").strip()
        revision = form.get("revision", "").strip()
        if not document:
            raise Refused("name the document to test with")

        def act() -> str:
            obj = get_integration(session.kube, namespace, name)
            if revision:
                found = session.kube.get(REVISIONS, namespace, revision)
                if found is None or (found.get("spec") or {}).get("integration") != name:
                    raise Refused(f"revision {revision} of integration {name} not found")
            body = new_test_run(namespace, name, document, obj["spec"]["trigger"], revision)
            return str(
                session.kube.create_or_get(kube_runs.RUNS, namespace, body)["metadata"]["name"]
            )

        created = await run_in_threadpool(act)
        return back(f"/runs/{pages.q(created)}", session, f"Test run on document {document}.")

    # --- conversations with the agent (what `docrelay chat` writes) ---------------------------

    def open_thread(kube: Kube, integration: str, purpose: str, run: str | None) -> str:
        thread = conversations.open_thread(kube, namespace, integration, purpose, run)
        return str(thread["metadata"]["name"])

    @app.post("/integrations/{name}/chat")
    async def start_chat(request: Request, name: str) -> Response:
        session, form = await writer(request)
        purpose = form.get("purpose", "Build")
        if purpose not in ("Build", "Change"):
            raise Refused("a conversation is to Build or to Change an integration")
        thread = await run_in_threadpool(open_thread, session.kube, name, purpose, None)
        return RedirectResponse(f"/chats/{pages.q(thread)}", status_code=303)

    @app.post("/runs/{name}/fix-in-chat")
    async def fix_in_chat(request: Request, name: str) -> Response:
        session, _ = await writer(request)

        def act() -> str:
            run = session.kube.get(kube_runs.RUNS, namespace, name)
            if run is None:
                raise Refused(f"run {name} not found in namespace {namespace}")
            integration = str((run.get("spec") or {}).get("integration") or "")
            return open_thread(session.kube, integration, "Fix", name)

        thread = await run_in_threadpool(act)
        return RedirectResponse(f"/chats/{pages.q(thread)}", status_code=303)

    @app.get("/chats/{name}", response_class=HTMLResponse)
    def chat(request: Request, name: str) -> Response:
        session = session_of(request)
        thread = session.kube.get(conversations.CONVERSATIONS, namespace, name)
        if thread is None:
            return page(session, "Not found", f"<p>No conversation {pages.esc(name)} here.</p>")
        return page(session, name, pages.conversation_page(thread, session.csrf), "integrations")

    @app.post("/chats/{name}/turns")
    async def add_turn(request: Request, name: str) -> Response:
        session, form = await writer(request)
        action = form.get("action", "Say")
        if action not in ("Say", "Approve"):
            raise Refused("the console says something or approves a revision")
        turn: dict[str, Any] = {"action": action}
        if action == "Say":
            text = form.get("text", "").strip()
            if not text:
                raise Refused("say something")
            turn["text"] = text
        elif form.get("revision"):
            turn["revision"] = form["revision"]

        def act() -> None:
            conversations.append_turn(session.kube, namespace, name, session.user, **turn)

        await run_in_threadpool(act)
        return RedirectResponse(f"/chats/{pages.q(name)}", status_code=303)

    # --- live updates ------------------------------------------------------------------------

    def watch_once(kube: Kube, plural: str, field_selector: str, version: str) -> tuple[bool, str]:
        """Block until an object changes (True) or the watch times out (False)."""
        stream = watch.Watch().stream(
            kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            field_selector=field_selector,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=False,
        )
        for event in stream:
            obj = event.get("object") or {}
            new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            return True, new_version
        return False, version

    async def events(
        request: Request, session: Session, field_selector: str, plural: str = kube_runs.RUNS
    ) -> AsyncIterator[str]:
        listing = await run_in_threadpool(
            session.kube.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            field_selector=field_selector,
        )
        version = str(listing["metadata"].get("resourceVersion") or "")
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            try:
                changed, version = await run_in_threadpool(
                    watch_once, session.kube, plural, field_selector, version
                )
            except client.ApiException:
                yield "event: gone\ndata: \n\n"
                return
            yield "data: changed\n\n" if changed else ": keep-alive\n\n"

    def sse(generator: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(
            generator, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    @app.get("/events/runs")
    def run_events(request: Request) -> StreamingResponse:
        return sse(events(request, session_of(request), ""))

    @app.get("/events/runs/{name}")
    def one_run_events(request: Request, name: str) -> StreamingResponse:
        return sse(events(request, session_of(request), f"metadata.name={name}"))

    @app.get("/events/chats/{name}")
    def chat_events(request: Request, name: str) -> StreamingResponse:
        return sse(
            events(
                request, session_of(request), f"metadata.name={name}", conversations.CONVERSATIONS
            )
        )

    return app


def serve(app: FastAPI, host: str, port: int, tls: tuple[str, str] | None = None) -> None:
    import uvicorn

    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    uvicorn.run(app, host=host, port=port, log_level="warning", **kwargs)
