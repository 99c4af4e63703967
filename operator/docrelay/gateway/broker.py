"""The run broker: the only door from a run's pod to what needs credentials (docs/broker.md).

Every call: the pod's projected token -> TokenReview (audience docrelay-broker) -> the pod
(name and UID from the review's extra) -> its Job -> its IntegrationRun, which must be active
and on the pod's attempt. Then: the one-run key (once per pod; a create-only ConfigMap named
after the pod UID is the compare-and-set, so two replicas cannot both release it), or the
run's document (or its Integration's document type's JSON schema) from the platform with the
tenant's credentials, which no pod ever sees.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from docrelay.builders.sealing import default_keys_namespace
from docrelay.gateway import files
from docrelay.gateway.accounts import Accounts, Refused, check_action, parse_proxy_call
from docrelay.gateway.dryrun import (
    BrokerAction,
    simulated_action,
    simulated_request,
    simulated_upload,
    writes,
)
from docrelay.gateway.kubeapi import ApiUnavailable, KubeApi
from docrelay.gateway.settings import GatewaySettings
from docrelay.masking import Masker
from docrelay.models.common import GROUP, VERSION
from docrelay.platform.client import AsyncPlatformClient
from docrelay.platform.errors import NotFound, PlatformError, Unauthorized
from docrelay.runner.contract import BROKER_AUDIENCE
from docrelay.sealing import KeyRing

log = logging.getLogger(__name__)
audit = logging.getLogger("docrelay.broker.audit")

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
RUN_SERVICE_ACCOUNT = "docrelay-run"
RUN_LABEL = "docrelay.io/run"
ATTEMPT_LABEL = "docrelay.io/attempt"
ACTIVE_PHASES = frozenset({"Pending", "Running"})
# How long a run's pod may wait for the operator to record its attempt (written right after
# the Job is created) before the broker refuses it.
STATUS_CATCH_UP_SECONDS = 5.0
KEY_RELEASE_PREFIX = "docrelay-key-"
MAX_TOKEN_CHARS = 8192


class Refusal(Exception):
    """An answer other than 2xx; `reason` is ours and never echoes the request."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Caller:
    """A live pod of an active run, as proven by its token."""

    namespace: str
    pod: str
    pod_uid: str
    job: str
    run: str
    run_uid: str
    attempt: int
    integration: str
    document: str
    test: bool
    dry_run: bool = False  # a dry test run: writes are simulated (gateway/dryrun.py)


# --- pure checks (table-tested) ---------------------------------------------------------------


def identity_from_review(status: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, pod name, pod uid) of an authenticated run pod's token, or Refusal 401."""
    if not status.get("authenticated"):
        raise Refusal(401, "token not accepted")
    if BROKER_AUDIENCE not in (status.get("audiences") or []):
        raise Refusal(401, "token not for this audience")
    user = status.get("user") or {}
    parts = str(user.get("username", "")).split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise Refusal(401, "not a service-account token")
    if parts[3] != RUN_SERVICE_ACCOUNT:
        raise Refusal(403, "not a run's service account")
    extra = user.get("extra") or {}
    names, uids = extra.get(POD_NAME_EXTRA) or [], extra.get(POD_UID_EXTRA) or []
    if len(names) != 1 or len(uids) != 1:
        raise Refusal(401, "token not bound to a pod")
    return parts[2], str(names[0]), str(uids[0])


def _owner(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return dict(ref)
    return None


def check_pod(pod: Mapping[str, Any] | None, pod_uid: str) -> tuple[str, str, int]:
    """(job name, run name, attempt) of a live run pod."""
    meta = (pod or {}).get("metadata") or {}
    if pod is None or meta.get("uid") != pod_uid:
        raise Refusal(401, "the token's pod is gone")
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") in (
        "Succeeded",
        "Failed",
    ):
        raise Refusal(403, "the pod has finished")
    labels = meta.get("labels") or {}
    job = _owner(pod, "Job")
    run = labels.get(RUN_LABEL)
    try:
        attempt = int(labels.get(ATTEMPT_LABEL, ""))
    except ValueError:
        attempt = 0
    if job is None or not run or attempt < 1:
        raise Refusal(403, "not a run's pod")
    return str(job["name"]), str(run), attempt


def check_job(job: Mapping[str, Any] | None, run: str) -> str:
    """The uid of the run owning the Job."""
    if job is None:
        raise Refusal(403, "the run's Job is gone")
    owner = _owner(job, "IntegrationRun")
    if owner is None or owner.get("name") != run:
        raise Refusal(403, "the Job belongs to no run")
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            raise Refusal(403, "the run's Job has finished")
    return str(owner.get("uid", ""))


class KeysMissing(ApiUnavailable):
    """No sealing keys to load (the Secret is not there yet, or no namespace is configured for
    it): runs wait (503); nothing signed with those keys can exist."""


def status_behind(run: Mapping[str, Any] | None, attempt: int) -> bool:
    """The operator created this attempt's Job but has not written the run's status for it
    yet (it writes right after): a pod that starts fast can ask the broker in between."""
    if run is None:
        return False
    status = run.get("status") or {}
    return status.get("phase") in (None, "Queued") or (status.get("attempt") or 0) < attempt


def check_run(
    run: Mapping[str, Any] | None, run_uid: str, job: str, attempt: int
) -> tuple[str, str, bool]:
    """(integration, document, test) of an active run on this attempt."""
    if run is None or (run.get("metadata") or {}).get("uid") != run_uid:
        raise Refusal(403, "the run is gone")
    status = run.get("status") or {}
    if status.get("phase") not in ACTIVE_PHASES:
        raise Refusal(403, "the run is not active")
    if status.get("attempt") != attempt or status.get("jobName") not in (None, job):
        raise Refusal(403, "the pod is not the run's current attempt")
    spec = run.get("spec") or {}
    return (
        str(spec.get("integration", "")),
        str(spec.get("documentIdentifier", "")),
        bool(spec.get("test")),
    )


def bearer_token(header: str | None) -> str:
    if not header:
        raise Refusal(401, "no token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
        raise Refusal(401, "no bearer token")
    return token


def document_workspace(document: Mapping[str, Any]) -> str | None:
    workspace = (document.get("meta") or {}).get("workspace")
    if isinstance(workspace, Mapping):
        workspace = workspace.get("identifier")
    return str(workspace) if workspace else None


def check_document_type(integration_spec: Mapping[str, Any], identifier: str) -> None:
    """A run may read the schema of its Integration's `documentType` only."""
    allowed = integration_spec.get("documentType")
    if not allowed or identifier != str(allowed):
        raise Refusal(403, "not the integration's document type")


@dataclass
class RateLimiter:
    """A token bucket per run: `rate` calls per second, `burst` at once."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: tuple[str, str]) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if len(self._buckets) > 10000:  # finished runs must not grow it forever
            self._buckets.clear()
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


def key_release_record(caller: Caller, now: datetime) -> dict[str, Any]:
    """The create-only ConfigMap that says "this pod got its key"; owned by the run, so it
    goes with it. It holds names and a time, never the key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{KEY_RELEASE_PREFIX}{caller.pod_uid}",
            "namespace": caller.namespace,
            "labels": {
                RUN_LABEL: caller.run,
                ATTEMPT_LABEL: str(caller.attempt),
                "app.kubernetes.io/managed-by": "docrelay",
                "app.kubernetes.io/component": "key-release",
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "IntegrationRun",
                    "name": caller.run,
                    "uid": caller.run_uid,
                }
            ],
        },
        "data": {"pod": caller.pod, "releasedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }


# --- the broker -------------------------------------------------------------------------------


@dataclass
class _Cached:
    value: Any
    until: float


def keys_namespace(settings: GatewaySettings) -> str | None:
    """Where the operator keeps the key Secret (docs/secrets.md): the setting, else
    `<operator namespace>-docrelay-keys`; None when neither is known (cluster mode unset)."""
    if settings.keys_namespace:
        return settings.keys_namespace
    operator = settings.operator_namespace or settings.namespace
    if operator is None:
        return None
    try:
        return default_keys_namespace(operator)
    except ValueError:
        return None


class Broker:
    def __init__(
        self,
        settings: GatewaySettings,
        kube: KubeApi,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.clock = clock
        self.limiter = RateLimiter(settings.broker_rate_per_second, settings.broker_burst, clock)
        self.released: set[str] = set()  # pod UIDs; the ConfigMap is the record that counts
        self._rings: dict[str, _Cached] = {}
        self.accounts = Accounts(settings, kube)
        # Where each account action is recorded for its run (`<job>-broker`); the gateway's
        # app sets it (docrelay.gateway.proxy.Recorder), tests may leave it None.
        self.actions: Callable[[Caller, BrokerAction], None] | None = None
        # Writes the run attempt's record before an action is answered (Recorder.write_now).
        self.write_record: Callable[[Caller], Awaitable[None]] | None = None

    def record(self, caller: Caller, entry: BrokerAction) -> None:
        if self.actions is not None:
            self.actions(caller, entry)

    def served(self, namespace: str) -> bool:
        return self.settings.all_namespaces or namespace == self.settings.namespace

    async def authenticate(self, request: Request) -> Caller:
        caller = await self.identify(bearer_token(request.headers.get("authorization")))
        if not self.limiter.allow((caller.namespace, caller.run)):
            raise Refusal(429, "too many broker calls for this run", retry_after=1)
        return caller

    async def identify(self, token: str) -> Caller:
        """The live pod of an active run the token belongs to (the egress proxy uses it too),
        or Refusal."""
        namespace, pod_name, pod_uid = identity_from_review(
            await self.kube.review_token(token, BROKER_AUDIENCE)
        )
        if not self.served(namespace):
            raise Refusal(403, "this broker serves no runs in that namespace")
        pod = await self.kube.get_json(f"/api/v1/namespaces/{namespace}/pods/{pod_name}")
        job_name, run_name, attempt = check_pod(pod, pod_uid)
        job = await self.kube.get_json(f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")
        run_uid = check_job(job, run_name)
        run_path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/integrationruns/{run_name}"
        run = await self.kube.get_json(run_path)
        deadline = time.monotonic() + STATUS_CATCH_UP_SECONDS
        while status_behind(run, attempt) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            run = await self.kube.get_json(run_path)
        integration, document, test = check_run(run, run_uid, job_name, attempt)
        dry_run = test and bool(((run or {}).get("spec") or {}).get("dryRun"))
        return Caller(
            namespace, pod_name, pod_uid, job_name, run_name, run_uid, attempt,
            integration, document, test, dry_run,
        )  # fmt: skip

    async def _ring(self) -> KeyRing:
        where = keys_namespace(self.settings)
        if where is None:
            raise KeysMissing("no namespace configured for the sealing keys (keys_namespace)")
        now = self.clock()
        cached = self._rings.get(where)
        if cached is not None and cached.until > now:
            return cached.value
        data = await self.kube.read_secret(where, self.settings.sealing_keys_secret)
        if not data:
            raise KeysMissing("the sealing keys are not there yet")
        try:
            ring = KeyRing.from_secret_data({k: base64.b64decode(v) for k, v in data.items()})
        except (ValueError, binascii.Error):
            raise ApiUnavailable("the sealing keys Secret cannot be read") from None
        self._rings[where] = _Cached(ring, now + max(self.settings.keys_cache_seconds, 1.0))
        return ring

    async def store_file(self, caller: Caller, upload: files.Upload) -> str:
        """Store the file (a ConfigMap owned by the run) and answer its signed URL."""
        if not self.settings.public_url:
            raise Refusal(503, "no public_url configured for file URLs", 30)
        name = files.file_object_name(caller.run, upload)
        body = files.file_config_map(caller.namespace, name, caller.run, caller.run_uid, upload)
        await self.kube.create_json(f"/api/v1/namespaces/{caller.namespace}/configmaps", body)
        key = (await self._ring()).run_key(files.SIGNING_INFO, 0)
        expires = int(time.time()) + self.settings.file_url_seconds
        return files.signed_url(
            self.settings.public_url, key, caller.namespace, name, upload.file_name, expires
        )

    async def release_key(self, caller: Caller, now: datetime | None = None) -> dict[str, Any]:
        if caller.pod_uid in self.released:
            raise Refusal(403, "the key was released to this pod already")
        ring = await self._ring()
        record = key_release_record(caller, now or datetime.now(UTC))
        created = await self.kube.create_json(
            f"/api/v1/namespaces/{caller.namespace}/configmaps", record
        )
        self.released.add(caller.pod_uid)
        if not created:  # another request (or replica) got there first
            raise Refusal(403, "the key was released to this pod already")
        key = ring.run_key(caller.run_uid, caller.attempt)
        return {
            "key": base64.urlsafe_b64encode(key).decode(),
            "runUid": caller.run_uid,
            "attempt": caller.attempt,
        }

    async def _platform(self, namespace: str) -> AsyncPlatformClient:
        data = await self.kube.read_secret(namespace, self.settings.platform_secret) or {}
        token = base64.b64decode(data["token"]).decode().strip() if "token" in data else None
        url = base64.b64decode(data["url"]).decode().strip() if "url" in data else None
        if token is None and self.settings.platform_token is not None:
            token = self.settings.platform_token.get_secret_value()
        url = url or self.settings.platform_url
        if not token or not url:
            raise Refusal(503, "no platform credentials configured for this tenant", 30)
        return AsyncPlatformClient(url, token)

    async def integration_spec(self, caller: Caller) -> dict[str, Any]:
        obj = await self.kube.get_json(
            f"/apis/{GROUP}/{VERSION}/namespaces/{caller.namespace}/integrations/"
            f"{caller.integration}"
        )
        return dict((obj or {}).get("spec") or {})

    async def _integration_workspace(self, caller: Caller) -> str | None:
        return str((await self.integration_spec(caller)).get("workspace") or "") or None

    async def document_type_schema(self, caller: Caller, identifier: str) -> dict[str, Any]:
        """The JSON schema of the run's Integration's document type (and no other)."""
        check_document_type(await self.integration_spec(caller), identifier)
        async with await self._platform(caller.namespace) as platform:
            try:
                return await platform.get_document_type_schema(identifier)
            except NotFound:
                raise Refusal(404, "no such document type") from None
            except Unauthorized:
                raise Refusal(502, "the platform refused the tenant's credentials") from None
            except PlatformError as exc:
                raise Refusal(503 if exc.retryable else 502, "the platform failed", 5) from None

    async def document(self, caller: Caller, identifier: str) -> dict[str, Any]:
        """The run's own document; a test run may read any document of its workspace."""
        if identifier != caller.document and not caller.test:
            raise Refusal(403, "not this run's document")
        async with await self._platform(caller.namespace) as platform:
            try:
                document = await platform.get_document(identifier)
            except NotFound:
                raise Refusal(404, "no such document") from None
            except Unauthorized:
                raise Refusal(502, "the platform refused the tenant's credentials") from None
            except PlatformError as exc:
                raise Refusal(503 if exc.retryable else 502, "the platform failed", 5) from None
        if identifier != caller.document:
            workspace = await self._integration_workspace(caller)
            if workspace is None or document_workspace(document) != workspace:
                raise Refusal(403, "not a document of the integration's workspace")
        return document

    async def validation_results(self, caller: Caller, identifier: str) -> list[Any]:
        await self.document(caller, identifier)  # the same authorization
        async with await self._platform(caller.namespace) as platform:
            try:
                return await platform.get_validation_results(identifier)
            except PlatformError as exc:
                raise Refusal(503 if exc.retryable else 502, "the platform failed", 5) from None


def register(app: FastAPI, settings: GatewaySettings, kube: KubeApi, broker: Broker) -> None:
    """The broker's routes on the gateway's app."""

    def refused(exc: Refusal | Refused) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    @contextlib.asynccontextmanager
    async def recorded(
        caller: Caller, entry: BrokerAction, request: Request
    ) -> AsyncIterator[dict[str, Any]]:
        """Record the action for its run however it ends: `outcome` is filled in by the
        caller; a refusal records its status. What the code named freely is recorded with the
        run's broker token masked (the one value the gateway knows; the operator masks the
        run's secret values when it collects the record)."""
        token = bearer_token(request.headers.get("authorization"))  # the caller's, checked
        entry = entry.masked(Masker([token]).mask)
        outcome: dict[str, Any] = {}
        try:
            yield outcome
        except (Refusal, Refused, files.FileRefused) as exc:
            outcome.update(outcome=f"refused:{exc.status}", status=exc.status)
            raise
        except ApiUnavailable:
            outcome.update(outcome="unavailable")
            raise
        finally:
            status = outcome.get("status")
            broker.record(
                caller,
                dataclasses.replace(
                    entry,
                    outcome=str(outcome.get("outcome") or "failed"),
                    status=status if isinstance(status, int) else None,
                ),
            )
            if broker.write_record is not None:  # before the answer: before the pod can exit
                try:
                    await broker.write_record(caller)
                except Exception as exc:  # the next batch writes it; the answer goes out
                    log.warning("broker record not written yet (%s)", type(exc).__name__)

    async def handle(
        request: Request,
        action: str,
        work: Callable[[Caller], Any],
        max_body: int | None = None,
    ) -> Response:
        caller: Caller | None = None
        try:
            length = request.headers.get("content-length")
            limit = settings.broker_max_body_bytes if max_body is None else max_body
            if length is not None and (not length.isdigit() or int(length) > limit):
                raise Refusal(413, "request body too large")
            caller = await broker.authenticate(request)
            body = await work(caller)
        except files.FileRefused as exc:
            _audit(action, caller, f"refused:{exc.status}", exc.reason)
            return refused(Refusal(exc.status, exc.reason))
        except (Refusal, Refused) as exc:
            _audit(action, caller, f"refused:{exc.status}", exc.reason)
            return refused(exc)
        except ApiUnavailable as exc:
            log.warning("broker answering 503: %s", exc)
            _audit(action, caller, "unavailable", "api server")
            return JSONResponse(
                {"error": "temporarily unavailable; retry later"},
                status_code=503,
                headers={"Retry-After": str(settings.retry_after_seconds)},
            )
        _audit(action, caller, "ok", "")
        return JSONResponse(body)

    @app.post("/v1/broker/key", summary="Release the run's one-run key (once per pod)")
    async def key(request: Request, run: str | None = None) -> Response:
        async def work(caller: Caller) -> Any:
            if run is not None and run != caller.run:
                raise Refusal(403, "a pod may only ask for its own run's key")
            return await broker.release_key(caller)

        return await handle(request, "key.release", work)

    @app.get("/v1/broker/documents/{identifier}", summary="The run's document")
    async def document(identifier: str, request: Request) -> Response:
        return await handle(
            request, "document.get", lambda caller: broker.document(caller, identifier)
        )

    @app.get(
        "/v1/broker/documents/{identifier}/validation-results",
        summary="The run's document's validation results",
    )
    async def validation(identifier: str, request: Request) -> Response:
        async def work(caller: Caller) -> Any:
            return {"results": await broker.validation_results(caller, identifier)}

        return await handle(request, "document.validation_results", work)

    @app.get("/v1/broker/documents/{identifier}/portal-url", summary="The document's portal URL")
    async def portal(identifier: str, request: Request) -> Response:
        async def work(caller: Caller) -> Any:
            document = await broker.document(caller, identifier)
            return {"url": (document.get("meta") or {}).get("reviewUrl")}

        return await handle(request, "document.portal_url", work)

    @app.post(
        "/v1/broker/accounts/{account}/request",
        summary="api_request: an HTTP call through the Pipedream Connect proxy as the account",
    )
    async def account_request(account: str, request: Request) -> Response:
        async def work(caller: Caller) -> Any:
            call = parse_proxy_call(await broker.accounts.read_body(request))
            entry = BrokerAction.request(
                time.time(), account, call.method, call.url, caller.dry_run
            )
            async with recorded(caller, entry, request) as outcome:
                spec = await broker.integration_spec(caller)
                if caller.dry_run and writes(call.method):
                    await broker.accounts.account(caller.namespace, spec, account)  # listed
                    outcome.update(outcome="simulated", status=200)
                    return simulated_request(call.method, call.url)
                answer = await broker.accounts.request(caller.namespace, spec, account, call)
                outcome.update(outcome="sent", status=answer.get("status_code"))
                return answer

        return await handle(request, "account.request", work, settings.broker_max_request_bytes)

    @app.post(
        "/v1/broker/accounts/{account}/actions",
        summary="execute_action: run a Pipedream action as the account",
    )
    async def account_action(account: str, request: Request) -> Response:
        async def work(caller: Caller) -> Any:
            payload = await broker.accounts.read_body(request)
            tool = str(payload.get("toolName") or "")[:128] if isinstance(payload, dict) else ""
            params = payload.get("toolParams") if isinstance(payload, dict) else None
            entry = BrokerAction(
                time.time(), "execute_action", account, "", caller.dry_run, tool=tool or None,
                props=tuple(str(k)[:64] for k in params) if isinstance(params, dict) else (),
            )  # fmt: skip
            async with recorded(caller, entry, request) as outcome:
                spec = await broker.integration_spec(caller)
                if caller.dry_run:
                    check_action(payload)
                    await broker.accounts.account(caller.namespace, spec, account)  # listed
                    outcome.update(outcome="simulated")
                    return simulated_action(tool)
                answer = await broker.accounts.action(caller.namespace, spec, account, payload)
                outcome.update(outcome="sent")
                return answer

        return await handle(request, "account.action", work, settings.broker_max_request_bytes)

    @app.post(
        "/v1/broker/accounts/{account}/files",
        summary="upload_file: store a file for the run, answer a signed, expiring URL",
    )
    async def account_file(account: str, request: Request) -> Response:
        async def work(caller: Caller) -> Any:
            payload = await broker.accounts.read_body(request)
            upload = files.parse_upload(payload, settings.broker_max_file_bytes)
            entry = BrokerAction(
                time.time(), "upload_file", account, "", caller.dry_run,
                file_name=upload.file_name[:200],
            )  # fmt: skip
            async with recorded(caller, entry, request) as outcome:
                spec = await broker.integration_spec(caller)
                await broker.accounts.account(caller.namespace, spec, account)  # listed, exists
                if caller.dry_run:
                    outcome.update(outcome="simulated")
                    return simulated_upload(upload.file_name)
                url = await broker.store_file(caller, upload)
                outcome.update(outcome="sent")
                return {"url": url}

        return await handle(request, "account.upload", work, settings.broker_max_request_bytes)

    @app.get(
        "/v1/files/{namespace}/{name}/{file_name}",
        summary="A file upload_file stored, by its signed URL (no other authentication)",
    )
    async def get_file(
        namespace: str, name: str, file_name: str, expires: str = "", signature: str = ""
    ) -> Response:
        try:
            if not broker.served(namespace):
                raise files.FileRefused(404, "no such file")
            try:
                key = (await broker._ring()).run_key(files.SIGNING_INFO, 0)
            except KeysMissing:  # no key: no URL was ever signed with it
                raise files.FileRefused(404, "no such file") from None
            files.check_signature(key, namespace, name, expires, signature, time.time())
            stored = files.stored_file(
                await kube.get_json(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
            )
        except files.FileRefused as exc:
            audit.info(
                "file action=file.get namespace=%s outcome=refused:%d", namespace, exc.status
            )
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        except ApiUnavailable:
            return JSONResponse(
                {"error": "temporarily unavailable; retry later"},
                status_code=503,
                headers={"Retry-After": str(settings.retry_after_seconds)},
            )
        audit.info("file action=file.get namespace=%s name=%s outcome=ok", namespace, name)
        return Response(
            stored.content,
            media_type=stored.content_type,
            headers={
                "Content-Disposition": "attachment; filename*=UTF-8''"
                + quote(stored.file_name, safe=""),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, no-store",
            },
        )

    @app.get(
        "/v1/broker/document-types/{identifier}/schema",
        summary="The JSON schema of the run's Integration's document type",
    )
    async def document_type_schema(identifier: str, request: Request) -> Response:
        return await handle(
            request,
            "document_type.schema",
            lambda caller: broker.document_type_schema(caller, identifier),
        )


def _audit(action: str, caller: Caller | None, outcome: str, reason: str) -> None:
    """One line per call: who (namespace, run, attempt, pod), what, how it ended. No values,
    no tokens, no document data."""
    if caller is None:
        audit.info("broker action=%s outcome=%s reason=%r", action, outcome, reason)
        return
    audit.info(
        "broker action=%s namespace=%s run=%s attempt=%d pod=%s outcome=%s reason=%r",
        action,
        caller.namespace,
        caller.run,
        caller.attempt,
        caller.pod,
        outcome,
        reason,
    )
