"""The gateway's HTTP API: document events in, one IntegrationRun per matching Integration.

Order of checks for a delivery, cheapest and least trusting first: tenant (404), size (413),
media type (415), signature (401; nothing is parsed before), JSON (400), schema (422), body
timestamp (401), event type (unknown: 200, ignored), matching and creating runs (202; the API
server slow or away: 503 with Retry-After, so the platform retries and nothing is lost).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as metrics_text
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from docrelay.builders.sealing import CERT_CONFIG_MAP, CERT_ENTRY
from docrelay.gateway.deliveries import Delivery, DeliveryLog, now_text
from docrelay.gateway.events import (
    DeliveryBody,
    DocumentEvent,
    RequestError,
    document_event,
    event_time,
    parse_body,
    resthook_event_id,
    standard_event_id,
)
from docrelay.gateway.index import IntegrationIndex
from docrelay.gateway.kubeapi import ApiUnavailable, CreateResult, KubeApi
from docrelay.gateway.platform import PlatformError
from docrelay.gateway.platform import activate as activate_subscription
from docrelay.gateway.runs import run_manifest
from docrelay.gateway.settings import DNS_LABEL, GatewaySettings
from docrelay.gateway.signatures import (
    SignatureError,
    StaleTimestamp,
    standard_webhooks_key,
    verify_resthook,
    verify_standard_webhook,
)

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
Format = Literal["resthook", "standard"]


# --- response models (the OpenAPI document) ------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="A short reason; never an echo of the request.")


class RunRef(BaseModel):
    name: str
    integration: str
    created: bool = Field(description="False: the run existed already (a redelivery).")


class Accepted(BaseModel):
    outcome: Literal["accepted", "unmatched", "ignored", "subscribed"]
    event: str | None = None
    event_id: str | None = Field(None, alias="eventId")
    runs: list[RunRef] = Field(default_factory=list)


class Health(BaseModel):
    status: Literal["ok"]
    index_synced: bool = Field(alias="indexSynced")
    integrations: int


_REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed JSON"),
        (401, "Signature missing, wrong, or timestamp too old"),
        (404, "Not a namespace this gateway serves"),
        (413, "Body too large"),
        (415, "Not JSON"),
        (422, "Body does not match the event schema"),
        (503, "API server slow or unavailable; retry after Retry-After seconds"),
    )
}

_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": DeliveryBody.model_json_schema()}},
    }
}


# --- metrics --------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "docrelay_gateway_events",
            "Deliveries by format, outcome and reason.",
            ["format", "outcome", "reason"],
            registry=self.registry,
        )
        self.runs = Counter(
            "docrelay_gateway_runs",
            "IntegrationRuns by result: created, or existing (a redelivery).",
            ["result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "docrelay_gateway_request_seconds",
            "Time from a delivery's arrival to its answer.",
            ["format", "outcome"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def record(self, fmt: str, outcome: str, reason: str, started: float) -> None:
        self.events.labels(fmt, outcome, reason).inc()
        self.latency.labels(fmt, outcome).observe(time.perf_counter() - started)


# --- signing keys ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    resthook: tuple[bytes, ...]
    standard: tuple[bytes, ...]


def keys_from_secret(data: dict[str, str]) -> Keys:
    """Entries `resthook*`: raw RESThook keys; `standard*`: Standard Webhooks secrets."""
    resthook: list[bytes] = []
    standard: list[bytes] = []
    for name, encoded in sorted(data.items()):
        try:
            value = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if name.startswith("resthook") and value.strip():
            resthook.append(value.strip())
        elif name.startswith("standard"):
            try:
                standard.append(standard_webhooks_key(value.decode().strip()))
            except (ValueError, UnicodeDecodeError):
                log.warning("Secret entry %s is not a Standard Webhooks secret; skipped", name)
    return Keys(tuple(resthook), tuple(standard))


@dataclass
class _Cached:
    value: Any
    until: float


@dataclass
class KeyStore:
    kube: KubeApi
    secret: str
    ttl: float
    _cache: dict[str, _Cached] = field(default_factory=dict)

    async def get(self, namespace: str) -> Keys:
        now = time.monotonic()
        cached = self._cache.get(namespace)
        if cached is not None and cached.until > now:
            return cached.value
        try:
            data = await self.kube.read_secret(namespace, self.secret)
        except ApiUnavailable:
            if cached is not None:  # keep verifying with the last known keys
                return cached.value
            raise
        keys = keys_from_secret(data or {})
        if len(self._cache) >= 1024:  # requests for made-up namespaces must not grow it forever
            self._cache.clear()
        self._cache[namespace] = _Cached(keys, now + self.ttl)
        return keys


# --- the app --------------------------------------------------------------------------------


def _error(status: int, reason: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def create_app(
    settings: GatewaySettings,
    kube: KubeApi,
    index: IntegrationIndex,
    *,
    on_startup: Callable[[], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    metrics = Metrics()
    keystore = KeyStore(kube, settings.signing_secret, settings.keys_cache_seconds)
    deliveries = DeliveryLog(kube)  # the history `docrelay events` shows
    cert_cache: dict[str, _Cached] = {}

    health = kube.health

    async def heartbeat() -> None:
        """One small API call whenever nothing else has talked to the API server lately, so
        readiness stays current without a call per probe (docrelay.gateway.health)."""
        scope = None if settings.all_namespaces else settings.namespace
        while True:
            if health.needs_heartbeat():
                try:
                    await kube.probe(scope)
                except ApiUnavailable:
                    pass  # reported to health already
                except Exception as exc:  # the heartbeat must outlive any one failure
                    log.warning("API heartbeat failed (%s)", type(exc).__name__)
            await asyncio.sleep(min(1.0, health.heartbeat_seconds))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            on_startup()
        heartbeat_task = asyncio.create_task(heartbeat())
        history_stop = asyncio.Event()
        history_task = asyncio.create_task(deliveries.run(history_stop))
        from docrelay.gateway.dryrun import BROKER_RECORD_SUFFIX, ActionRecord
        from docrelay.gateway.proxy import EgressProxy, Recorder

        # Each run's broker actions, sent or simulated, in `<job>-broker` (docs/broker.md).
        actions = Recorder(
            kube,
            settings.egress_record_entries,
            suffix=BROKER_RECORD_SUFFIX,
            component="broker-record",
            make=ActionRecord,
        )
        app.state.broker.actions = actions.add
        app.state.broker.write_record = actions.write_now
        actions_stop = asyncio.Event()
        actions_task = asyncio.create_task(actions.run(actions_stop))
        proxy = None
        if settings.proxy_port is not None:  # the egress proxy shares the loop (docs/egress.md)
            proxy = EgressProxy(
                settings, app.state.broker, Recorder(kube, settings.egress_record_entries)
            )
            await proxy.start()
        app.state.proxy = proxy
        try:
            yield
        finally:
            if proxy is not None:
                await proxy.stop()
            if on_shutdown is not None:
                on_shutdown()
            heartbeat_task.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat_task
            actions_stop.set()
            with suppress(Exception):
                await actions_task  # one last flush
            history_stop.set()
            with suppress(Exception):
                await history_task
                await deliveries.flush()  # the last deliveries before the process ends
            await kube.aclose()

    app = FastAPI(
        title="docrelay gateway",
        version="1",
        description="Document events in (RESThooks, Standard Webhooks), verified and "
        "deduplicated; one IntegrationRun per matching Integration. See docs/gateway.md.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.index = index
    app.state.deliveries = deliveries

    def check_namespace(namespace: str) -> None:
        served = settings.all_namespaces or namespace == settings.namespace
        if not served or not re.match(DNS_LABEL, namespace) or len(namespace) > 63:
            raise RequestError(404, "this gateway takes no events for that namespace", "tenant")

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestError(413, f"body larger than {limit} bytes", "too_large")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in JSON_TYPES and not media.endswith("+json"):
            raise RequestError(415, "body must be application/json", "media_type")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a lying or absent Content-Length: stop reading at the limit
                raise RequestError(413, f"body larger than {limit} bytes", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def fan_out(
        fmt: Format, namespace: str, event: DocumentEvent, event_id: str
    ) -> tuple[int, Accepted, str]:
        if not index.synced:
            raise ApiUnavailable("integration index not loaded yet")
        names = index.match(namespace, event.workspace, event.document_type, event.trigger)
        results = await asyncio.gather(
            *(
                kube.create_run(namespace, run_manifest(namespace, n, event, event_id))
                for n in names
            ),
            return_exceptions=True,
        )
        runs = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # any one run not created: 503, the redelivery creates it
            assert isinstance(result, CreateResult)
            metrics.runs.labels("created" if result.created else "existing").inc()
            runs.append(RunRef(name=result.name, integration=name, created=result.created))
        outcome: Literal["accepted", "unmatched"]
        if not runs:
            outcome, reason = "unmatched", "no_integration"
        elif any(r.created for r in runs):
            outcome, reason = "accepted", "created"
        else:
            outcome, reason = "accepted", "duplicate"
        body = Accepted(outcome=outcome, event=event.event, eventId=event_id, runs=runs)
        return (202 if runs else 200), body, reason

    def remember(
        fmt: Format,
        namespace: str,
        outcome: str,
        reason: str,
        parsed: DeliveryBody | None = None,
        event: DocumentEvent | None = None,
        accepted: Accepted | None = None,
    ) -> None:
        """One line of the namespace's delivery history: identifiers and outcome only."""
        runs = accepted.runs if accepted is not None else []
        deliveries.add(
            namespace,
            Delivery(
                time=now_text(),
                format=fmt,
                outcome=outcome,
                reason=reason,
                event=(event.event if event else parsed.event if parsed else "")[:128],
                document=event.document if event else "",
                workspace=event.workspace if event else "",
                document_type=event.document_type if event else "",
                event_id=(accepted.event_id or "") if accepted is not None else "",
                runs=tuple(r.name for r in runs if r.created),
                existing=sum(1 for r in runs if not r.created),
            ),
        )

    async def deliver(fmt: Format, namespace: str, request: Request) -> Response:
        started = time.perf_counter()
        parsed: DeliveryBody | None = None
        event: DocumentEvent | None = None
        try:
            check_namespace(namespace)
            body = await read_body(request)
            keys = await keystore.get(namespace)
            now = clock()
            if fmt == "resthook":
                if not keys.resthook:
                    raise ApiUnavailable("no RESThook signing key configured")
                verify_resthook(
                    body, request.headers, keys.resthook, now, settings.tolerance_seconds
                )
            else:
                if not keys.standard:
                    raise ApiUnavailable("no Standard Webhooks secret configured")
                verified = verify_standard_webhook(
                    body, request.headers, keys.standard, now, settings.tolerance_seconds
                )
            parsed = parse_body(body)
            # The RESThook header's timestamp is not signed; the body's is.
            if (
                fmt == "resthook"
                and abs(now - event_time(parsed.timestamp)) > settings.tolerance_seconds
            ):
                raise StaleTimestamp("event timestamp outside the tolerance; not replayable")
            event = document_event(parsed)
            if event is None:
                metrics.record(fmt, "ignored", "event_type", started)
                remember(fmt, namespace, "ignored", "event_type", parsed)
                return JSONResponse(
                    Accepted(outcome="ignored", event=parsed.event, eventId=None).model_dump(
                        by_alias=True
                    )
                )
            if fmt == "resthook":
                event_id = resthook_event_id(event)
            else:
                assert verified.delivery_id is not None
                event_id = standard_event_id(verified.delivery_id)
            status, accepted, reason = await fan_out(fmt, namespace, event, event_id)
        except RequestError as exc:
            metrics.record(fmt, "refused", exc.code, started)
            if exc.code != "tenant":  # a namespace this gateway does not serve: no history
                remember(fmt, namespace, "refused", exc.code, parsed, event)
            return _error(exc.status, exc.reason)
        except SignatureError as exc:
            metrics.record(fmt, "refused", "signature", started)
            stale = isinstance(exc, StaleTimestamp)
            remember(fmt, namespace, "refused", "stale" if stale else "signature", parsed)
            return _error(exc.status, str(exc))
        except ApiUnavailable as exc:
            log.warning("answering 503: %s", exc)
            metrics.record(fmt, "unavailable", "api_server", started)
            remember(fmt, namespace, "unavailable", "api_server", parsed, event)
            return _error(503, "temporarily unavailable; retry later", settings.retry_after_seconds)
        metrics.record(fmt, accepted.outcome, reason, started)
        remember(fmt, namespace, accepted.outcome, reason, parsed, event, accepted)
        return JSONResponse(accepted.model_dump(by_alias=True), status_code=status)

    def activate(hook_secret: str) -> None:
        if not settings.platform_url:
            log.warning("subscription handshake answered, but no platform URL to activate it")
            return
        token = settings.platform_token.get_secret_value() if settings.platform_token else None
        try:
            activate_subscription(settings.platform_url, token, hook_secret)
        except PlatformError as exc:
            log.warning("subscription activation failed: %s", exc)

    @app.post(
        "/v1/events/{namespace}",
        response_model=Accepted,
        status_code=202,
        responses={
            200: {"model": Accepted, "description": "Handshake, ignored or unmatched"},
            **_REFUSALS,
        },
        openapi_extra=_BODY_SCHEMA,
        summary="Receive a RESThook delivery (or the subscription handshake)",
    )
    async def resthook(namespace: str, request: Request) -> Response:
        hook_secret = request.headers.get("x-hook-secret")
        if hook_secret is not None and "x-hook-signature" not in request.headers:
            try:
                check_namespace(namespace)
            except RequestError as exc:
                return _error(exc.status, exc.reason)
            # Answer first, activate after: the platform activates only a hook that answered.
            metrics.record("resthook", "subscribed", "handshake", time.perf_counter())
            return JSONResponse(
                Accepted(outcome="subscribed", eventId=None).model_dump(by_alias=True),
                headers={"X-Hook-Secret": hook_secret},
                background=BackgroundTask(activate, hook_secret),
            )
        return await deliver("resthook", namespace, request)

    @app.post(
        "/v1/standard-webhooks/{namespace}",
        response_model=Accepted,
        status_code=202,
        responses={200: {"model": Accepted, "description": "Ignored or unmatched"}, **_REFUSALS},
        openapi_extra=_BODY_SCHEMA,
        summary="Receive a Standard Webhooks delivery",
    )
    async def standard(namespace: str, request: Request) -> Response:
        return await deliver("standard", namespace, request)

    @app.get("/healthz", response_model=Health, summary="Liveness (always 200 while serving)")
    async def healthz() -> Health:
        return Health(status="ok", indexSynced=index.synced, integrations=len(index))

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": ErrorBody}},
        summary="Readiness: 200 while the gateway can take events (docs/gateway.md)",
    )
    async def readyz() -> Response:
        # No API call here: the answer comes from what the process's calls and the watch
        # reported (docrelay.gateway.health).
        state = health.readiness(index.synced)
        if not state.ready:
            return _error(503, state.reason, settings.retry_after_seconds)
        return JSONResponse(
            Health(status="ok", indexSynced=True, integrations=len(index)).model_dump(by_alias=True)
        )

    @app.get(
        "/v1/cert.pem",
        response_class=PlainTextResponse,
        responses={404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
        summary="The sealing certificate the operator publishes (for `docrelay seal`)",
    )
    async def cert() -> Response:
        where = settings.operator_namespace or settings.namespace
        if where is None:
            return _error(404, "no operator namespace configured")
        now = time.monotonic()
        cached = cert_cache.get(where)
        if cached is None or cached.until <= now:
            try:
                data = await kube.read_config_map(where, CERT_CONFIG_MAP)
            except ApiUnavailable:
                return _error(
                    503, "temporarily unavailable; retry later", settings.retry_after_seconds
                )
            pem = (data or {}).get(CERT_ENTRY)
            if not pem:  # not cached: it appears as soon as the operator publishes it
                return _error(404, "no sealing certificate published yet; is the operator running?")
            cached = _Cached(pem, now + 30)
            cert_cache[where] = cached
        return PlainTextResponse(cached.value, media_type="application/x-pem-file")

    # The run broker shares this process (docs/broker.md).
    from docrelay.gateway.broker import Broker, register
    from docrelay.gateway.connections import Connections
    from docrelay.reconcile.connections import PATH_PREFIX, Refusal

    app.state.broker = Broker(settings, kube)
    register(app, settings, kube, app.state.broker)
    connections = Connections(settings, kube, app.state.broker.accounts, clock)

    @app.post(
        PATH_PREFIX + "/{namespace}/{integration}/{nonce}",
        status_code=201,
        responses={
            200: {"description": "CONNECTION_ERROR of a known request: nothing created"},
            403: {"model": ErrorBody, "description": "Not this request's token, user or app"},
            409: {"model": ErrorBody, "description": "Reported already (a replay)"},
            410: {"model": ErrorBody, "description": "The connection request has expired"},
            **_REFUSALS,
        },
        summary="Pipedream Connect's connection webhook (docs/pipedream.md)",
    )
    async def connection(
        namespace: str, integration: str, nonce: str, request: Request
    ) -> Response:
        started = time.perf_counter()
        try:
            check_namespace(namespace)
            if not re.match(DNS_SUBDOMAIN, integration) or len(integration) > 253:
                raise Refusal(404, "no such connection request")
            body = await read_body(request)
            status, answer = await connections.deliver(namespace, integration, nonce, body)
        except RequestError as exc:
            metrics.record("pipedream", "refused", exc.code, started)
            return _error(exc.status, exc.reason)
        except Refusal as exc:
            metrics.record("pipedream", "refused", str(exc.status), started)
            retry = settings.retry_after_seconds if exc.status == 503 else None
            return _error(exc.status, exc.reason, retry)
        except ApiUnavailable:
            metrics.record("pipedream", "unavailable", "api", started)
            return _error(503, "temporarily unavailable; retry later", settings.retry_after_seconds)
        metrics.record("pipedream", "accepted", str(answer["outcome"]), started)
        return JSONResponse(answer, status_code=status)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics_text(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
