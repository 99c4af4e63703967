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
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from kubernetes import client, watch
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from docrelay.builders.run import CONTAINER
from docrelay.builders.sealing import CERT_CONFIG_MAP, CERT_ENTRY, integration_secret
from docrelay.cli import deploy as cli_deploy
from docrelay.cli import replay as cli_replay
from docrelay.cli import seal as cli_seal
from docrelay.cli.agent_cmd import revision_code
from docrelay.cli.common import CliError
from docrelay.cli.logs import egress_record, live_pod, stored_log
from docrelay.console import pages
from docrelay.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SECURITY_HEADERS,
    Session,
    Sessions,
    cookie_attributes,
    csrf_ok,
)
from docrelay.kube import ACCOUNTS, INTEGRATIONS, REVISIONS, SECRETS, Kube, KubeError
from docrelay.kube import runs as kube_runs
from docrelay.models.common import API_VERSION, GROUP, VERSION
from docrelay.naming import idempotency_key, run_name
from docrelay.reconcile.conversation import CONVERSATION_ANNOTATION
from docrelay.reconcile.deploy import DEPLOY_REQUEST_ANNOTATION, DeployAction, DeployRequest
from docrelay.sealing import Binding, key_id, public_key_from_certificate
from docrelay.sealing.envelope import SealingError, parse

STATIC = Path(__file__).parent / "static"
CONVERSATIONS = "integrationconversations"
WATCH_SECONDS = 20
LOG_LIMIT = 512 * 1024
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
) -> FastAPI:
    """`auth` "kubeconfig" (every session uses `kube`; signing in needs `login_secret`) or
    "token" (each session uses its own bearer token against `base_configuration`)."""
    if auth == "kubeconfig" and (kube is None or not login_secret):
        raise ValueError("kubeconfig sign-in needs the client and a login secret")
    if auth == "token" and base_configuration is None:
        raise ValueError("token sign-in needs the API server's configuration")
    sessions = Sessions()
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
            return response

    app.add_middleware(Headers)

    def html(body: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    def session_of(request: Request) -> Session:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise Denied(401, "Not signed in.")
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
        flash = session.extra.pop("flash", None)
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

    @app.exception_handler(CliError)
    async def refused(request: Request, exc: CliError) -> Response:
        return html(pages.message_page("Refused", str(exc)), 409)

    # --- signing in ------------------------------------------------------------------------

    def signed_in(session: Session) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session.id, **cookie_attributes(secure_cookies))
        return response

    @app.get("/login")
    def login_form(token: str = "") -> Response:
        if auth == "kubeconfig":
            if token and hmac.compare_digest(token.encode(), login_secret.encode()):
                assert kube is not None
                return signed_in(sessions.create(kube, kube.whoami()))
            return html(
                pages.message_page(
                    "Sign in",
                    "Open the link `docrelay console` printed (it holds a secret) to sign in.",
                ),
                401,
            )
        return html(pages.login_page(namespace))

    @app.post("/login")
    async def login(request: Request) -> Response:
        token = (await form_of(request)).get("token", "")
        if auth != "token" or not token.strip():
            return html(pages.message_page("Sign in", "Sign-in with a token is not enabled."), 401)
        user_kube = kube_for_token(base_configuration, token.strip())
        user = await run_in_threadpool(user_kube.whoami)
        if user == "unknown":
            return html(
                pages.message_page("Sign in", "The API server did not accept that token."), 401
            )
        return signed_in(sessions.create(user_kube, user))

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session, _ = await writer(request)
        sessions.drop(session.id)
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

    def accounts_of(kube: Kube, names: list[str]) -> str:
        if not names:
            return pages.accounts_html([], {})
        try:
            listed = kube.list_objects(ACCOUNTS, namespace)
        except KubeError as exc:
            return f'<p class="muted">Connected accounts: {pages.esc(exc)}</p>'
        return pages.accounts_html(names, {o["metadata"]["name"]: o for o in listed})

    @app.get("/integrations/{name}", response_class=HTMLResponse)
    def integration(request: Request, name: str, diff: str = "") -> Response:
        session = session_of(request)
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
            except CliError as exc:
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
            secrets=cli_seal.history_rows(secrets),
            runs=runs,
            code=code,
            diff=diff_html,
            csrf=session.csrf,
            sealing=sealing_info(kube),
            now=datetime.now(UTC),
            accounts=accounts_of(
                kube, list((obj.get("spec") or {}).get("connectedAccounts") or [])
            ),
        )
        threads = [
            t
            for t in kube.list_objects(CONVERSATIONS, namespace)
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
        log, live, egress = None, False, None
        if attempt:
            pod = live_pod(kube, namespace, name, attempt)
            if pod is not None:
                log = kube_runs.pod_log(kube, namespace, pod, CONTAINER, LOG_LIMIT)
                live = log is not None
            if log is None:
                log = stored_log(kube, namespace, name, attempt)
            egress = egress_record(kube, namespace, name, attempt)
        body = pages.run_page(
            obj, log=log, live=live, egress=egress, csrf=session.csrf, now=datetime.now(UTC)
        )
        return page(session, name, body, "runs")

    # --- actions (each one the CLI offers) ---------------------------------------------------

    def back(to: str, session: Session, message: str) -> Response:
        session.extra["flash"] = message
        return RedirectResponse(to, status_code=303)

    def request_deploy(
        kube: Kube, name: str, action: DeployAction, revision: str, user: str
    ) -> None:
        request = DeployRequest(
            id=uuid.uuid4().hex,
            action=action,
            revision=revision,
            requested_by=user,
            requested_at=datetime.now(UTC).replace(microsecond=0),
        )
        kube.patch_annotations(
            INTEGRATIONS, namespace, name, {DEPLOY_REQUEST_ANNOTATION: request.encode()}
        )

    def get_integration(kube: Kube, name: str) -> dict[str, Any]:
        obj = kube.get(INTEGRATIONS, namespace, name)
        if obj is None:
            raise CliError(f"integration {name} not found in namespace {namespace}")
        return obj

    @app.post("/integrations/{name}/deploy")
    async def deploy(request: Request, name: str) -> Response:
        session, form = await writer(request)
        revision = form.get("revision", "")

        def act() -> str:
            obj = get_integration(session.kube, name)
            cli_deploy._check_revision(session.kube, namespace, name, revision)
            if (obj.get("status") or {}).get("deployedRevision") == revision:
                return f"Revision {revision} is already deployed."
            request_deploy(session.kube, name, DeployAction.DEPLOY, revision, session.user)
            return f"Deploy of revision {revision} requested; the operator records it below."

        return back(f"/integrations/{pages.q(name)}#code", session, await run_in_threadpool(act))

    @app.post("/integrations/{name}/revert")
    async def revert(request: Request, name: str) -> Response:
        session, _ = await writer(request)

        def act() -> str:
            status = get_integration(session.kube, name).get("status") or {}
            history = status.get("history") or []
            last = history[-1] if history else None
            if (
                not last
                or last.get("revision") != status.get("deployedRevision")
                or not last.get("previousRevision")
            ):
                raise CliError(f"integration {name} has no previously deployed revision")
            target = last["previousRevision"]
            cli_deploy._check_revision(session.kube, namespace, name, target)
            request_deploy(session.kube, name, DeployAction.REVERT, target, session.user)
            return f"Revert to revision {target} requested."

        return back(f"/integrations/{pages.q(name)}#code", session, await run_in_threadpool(act))

    @app.post("/integrations/{name}/secrets")
    async def add_secret(request: Request, name: str) -> Response:
        session, form = await writer(request)
        key = form.get("key", "")
        sealed = form.get("encryptedValue", "")
        cli_seal.check_names(name, key)
        if not sealed:
            raise CliError("no sealed value: Add secret seals in the browser and needs its script")
        try:
            envelope = parse(sealed)
        except SealingError as exc:
            raise CliError(str(exc)) from None
        if envelope.binding_digest != Binding(namespace, name, key).digest():
            raise CliError("the value was sealed for another namespace, integration or key")

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
                raise CliError(f"run {name} not found in namespace {namespace}")
            phase = (original.get("status") or {}).get("phase")
            if phase not in cli_replay.REPLAYABLE or (original.get("spec") or {}).get("test"):
                raise CliError(f"run {name} is {phase or 'not finished'}: nothing to replay")
            body = cli_replay.replay_manifest(original, "current")
            created = session.kube.create_or_get(kube_runs.RUNS, namespace, body)
            return created["metadata"]["name"]

        new = await run_in_threadpool(act)
        return back(f"/runs/{pages.q(new)}", session, f"Replay of {name}.")

    @app.post("/integrations/{name}/test")
    async def test_run(request: Request, name: str) -> Response:
        session, form = await writer(request)
        document = form.get("document", "").strip()
        revision = form.get("revision", "").strip()
        if not document:
            raise CliError("name the document to test with")

        def act() -> str:
            obj = get_integration(session.kube, name)
            if revision:
                found = session.kube.get(REVISIONS, namespace, revision)
                if found is None or (found.get("spec") or {}).get("integration") != name:
                    raise CliError(f"revision {revision} of integration {name} not found")
            trigger = obj["spec"]["trigger"]
            event_id = f"test-{uuid.uuid4().hex}"
            body = {  # as `docrelay test` makes it
                "apiVersion": API_VERSION,
                "kind": "IntegrationRun",
                "metadata": {"name": run_name(name, event_id, document, trigger)},
                "spec": {
                    "integration": name,
                    "documentIdentifier": document,
                    "trigger": trigger,
                    "eventId": event_id,
                    "idempotencyKey": idempotency_key(namespace, name, event_id, document, trigger),
                    "test": True,
                    **({"revision": revision} if revision else {}),
                },
            }
            return str(
                session.kube.create_or_get(kube_runs.RUNS, namespace, body)["metadata"]["name"]
            )

        created = await run_in_threadpool(act)
        return back(f"/runs/{pages.q(created)}", session, f"Test run on document {document}.")

    # --- conversations with the agent (what `docrelay chat` writes) ---------------------------

    def open_thread(kube: Kube, integration: str, purpose: str, run: str | None) -> str:
        name = f"{run}-fix" if run else f"{integration}-{purpose.lower()}"
        if kube.get(CONVERSATIONS, namespace, name) is not None:
            return name
        owner = get_integration(kube, integration)
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": "IntegrationConversation",
            "metadata": {
                "name": name,
                "labels": {"docrelay.io/integration": integration},
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "Integration",
                        "name": integration,
                        "uid": owner["metadata"]["uid"],
                    }
                ],
            },
            "spec": {"integration": integration, "purpose": purpose, "turns": []},
        }
        if run:
            body["spec"]["run"] = run
        kube.create_or_get(CONVERSATIONS, namespace, body)
        if purpose == "Build":  # the thread writes the code: generation stands aside
            kube.patch_annotations(
                INTEGRATIONS, namespace, integration, {CONVERSATION_ANNOTATION: name}
            )
        return name

    @app.post("/integrations/{name}/chat")
    async def start_chat(request: Request, name: str) -> Response:
        session, form = await writer(request)
        purpose = form.get("purpose", "Build")
        if purpose not in ("Build", "Change"):
            raise CliError("a conversation is to Build or to Change an integration")
        thread = await run_in_threadpool(open_thread, session.kube, name, purpose, None)
        return RedirectResponse(f"/chats/{pages.q(thread)}", status_code=303)

    @app.post("/runs/{name}/fix-in-chat")
    async def fix_in_chat(request: Request, name: str) -> Response:
        session, _ = await writer(request)

        def act() -> str:
            run = session.kube.get(kube_runs.RUNS, namespace, name)
            if run is None:
                raise CliError(f"run {name} not found in namespace {namespace}")
            integration = str((run.get("spec") or {}).get("integration") or "")
            return open_thread(session.kube, integration, "Fix", name)

        thread = await run_in_threadpool(act)
        return RedirectResponse(f"/chats/{pages.q(thread)}", status_code=303)

    @app.get("/chats/{name}", response_class=HTMLResponse)
    def chat(request: Request, name: str) -> Response:
        session = session_of(request)
        thread = session.kube.get(CONVERSATIONS, namespace, name)
        if thread is None:
            return page(session, "Not found", f"<p>No conversation {pages.esc(name)} here.</p>")
        return page(session, name, pages.conversation_page(thread, session.csrf), "integrations")

    @app.post("/chats/{name}/turns")
    async def add_turn(request: Request, name: str) -> Response:
        session, form = await writer(request)
        action = form.get("action", "Say")
        if action not in ("Say", "Approve"):
            raise CliError("the console says something or approves a revision")
        turn: dict[str, Any] = {"action": action}
        if action == "Say":
            text = form.get("text", "").strip()
            if not text:
                raise CliError("say something")
            turn["text"] = text[:4000]
        elif form.get("revision"):
            turn["revision"] = form["revision"]

        def act() -> None:
            for _ in range(5):
                thread = session.kube.get(CONVERSATIONS, namespace, name)
                if thread is None:
                    raise CliError(f"conversation {name} not found")
                turns = list((thread.get("spec") or {}).get("turns") or [])
                entry = {
                    "id": f"u-{len(turns) + 1}",
                    "by": session.user,
                    "at": datetime.now(UTC)
                    .replace(microsecond=0)
                    .isoformat()
                    .replace("+00:00", "Z"),
                    **turn,
                }
                patch = {  # append-only; the resourceVersion refuses a concurrent append
                    "metadata": {"resourceVersion": thread["metadata"]["resourceVersion"]},
                    "spec": {"turns": [*turns, entry]},
                }
                try:
                    session.kube.custom.patch_namespaced_custom_object(
                        GROUP, VERSION, namespace, CONVERSATIONS, name, patch
                    )
                    return
                except client.ApiException as exc:
                    if exc.status != 409:
                        raise KubeError(
                            f"Kubernetes API {exc.status} ({exc.reason}) while adding a turn "
                            f"to {name}",
                            exc.status,
                        ) from None
            raise CliError(f"conversation {name} kept changing; try again")

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
        return sse(events(request, session_of(request), f"metadata.name={name}", CONVERSATIONS))

    return app


def serve(app: FastAPI, host: str, port: int, tls: tuple[str, str] | None = None) -> None:
    import uvicorn

    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    uvicorn.run(app, host=host, port=port, log_level="warning", **kwargs)
