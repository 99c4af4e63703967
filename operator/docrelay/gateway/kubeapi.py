"""The gateway's Kubernetes API access: async creates and reads, and the Integration watch.

Requests go through one aiohttp session built from the kubeconfig (or in-cluster
credentials): a pool of kept-alive connections (one TLS handshake per connection, not per
call), asyncio's own TLS transport and a C HTTP parser, because a delivery's one create is
most of the gateway's work and the API server shares the machine's cores with it
(docs/gateway.md, throughput). Timeouts are short: a slow or unavailable API server must turn
into a 503 for the sender within seconds, not a hung delivery. The watch runs the official
client in a background thread (its streaming and 410 handling are well trodden).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from docrelay.gateway.health import ApiHealth
from docrelay.gateway.index import IntegrationIndex
from docrelay.models.common import GROUP, VERSION

log = logging.getLogger(__name__)

RUNS = "integrationruns"
INTEGRATIONS = "integrations"


class ApiUnavailable(Exception):
    """The API server did not answer usefully in time: the sender should retry later."""


@dataclass(frozen=True)
class Answer:
    """An API server's answer, read whole (objects the gateway reads are small)."""

    status_code: int
    body: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class CreateResult:
    name: str
    created: bool  # False: it already existed (a redelivery), which is success too


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


class KubeApi:
    """The few calls a request needs; every failure but 404/409 becomes ApiUnavailable.
    Every call's outcome is reported to `health` (readiness, docrelay.gateway.health)."""

    def __init__(
        self,
        configuration: client.Configuration,
        timeout: float,
        health: ApiHealth | None = None,
    ) -> None:
        self._configuration = configuration
        self.health = health or ApiHealth()
        self._base = configuration.host.rstrip("/")
        self._ssl = _ssl_context(configuration)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 3.0))
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (the session belongs to it).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64, ssl=self._ssl, keepalive_timeout=60),
                timeout=self._timeout,
                json_serialize=json.dumps,
            )
        return self._session

    def _headers(self) -> dict[str, str]:
        # auth_settings() runs the refresh hook: in-cluster tokens rotate.
        token = self._configuration.auth_settings().get("BearerToken")
        return {"authorization": token["value"]} if token and token.get("value") else {}

    async def _request(
        self,
        method: str,
        path: str,
        extra_headers: Mapping[str, str] | None = None,
        *,
        json: Any = None,
        content: bytes | None = None,
        answered: Collection[int] = (404, 409),
    ) -> Answer:
        """The API server's answer: a success or one of the `answered` statuses; any other
        raises ApiUnavailable."""
        headers = {**self._headers(), **(extra_headers or {})}
        if json is not None:
            content = _json_bytes(json)
            headers.setdefault("content-type", "application/json")
        try:
            async with self._client().request(
                method, self._base + path, headers=headers, data=content
            ) as response:
                answer = Answer(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"API server unreachable ({type(exc).__name__})"
            self.health.failed(reason)
            raise ApiUnavailable(reason) from None
        status = answer.status_code
        # Down, overloaded or no longer taking our credentials: no delivery can succeed. Any
        # other answer (a 403 for one object included) shows the API server serving us.
        if status >= 500 or status in (401, 429):
            self.health.failed(f"API server answered {status}")
        else:
            self.health.succeeded()
        if status in answered or answer.is_success:
            return answer
        raise ApiUnavailable(f"API server answered {status}")

    async def probe(self, namespace: str | None) -> None:
        """The cheapest call that shows the API server serving us: a one-item list of the
        Integrations this gateway watches (a permission it has). Raises ApiUnavailable."""
        where = "" if namespace is None else f"/namespaces/{namespace}"
        await self._request("GET", f"/apis/{GROUP}/{VERSION}{where}/{INTEGRATIONS}?limit=1")

    async def create_run(self, namespace: str, body: Mapping[str, Any]) -> CreateResult:
        name = body["metadata"]["name"]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{RUNS}"
        response = await self._request("POST", path, json=body)
        if response.status_code == 409:
            return CreateResult(name, created=False)
        if response.status_code == 404:  # the namespace or the CRD is going away
            raise ApiUnavailable("API server answered 404 creating a run")
        return CreateResult(name, created=True)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        response = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if response.status_code == 404:
            return None
        return dict(response.json().get("data") or {})

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        response = await self._request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
        if response.status_code == 404:
            return None
        return dict(response.json().get("data") or {})

    async def get_json(self, path: str) -> dict[str, Any] | None:
        """Any object by its API path; None if it does not exist."""
        response = await self._request("GET", path)
        if response.status_code in (404, 409):
            return None
        return dict(response.json())

    async def create_json(self, path: str, body: Mapping[str, Any]) -> bool:
        """Create-only (a compare-and-set): False if it exists already."""
        response = await self._request("POST", path, json=body)
        if response.status_code == 404:
            raise ApiUnavailable("API server answered 404 creating an object")
        return response.status_code != 409

    async def post_event(
        self, about: Mapping[str, Any], reason: str, message: str, component: str
    ) -> None:
        """A Warning Event about one docrelay object (`kubectl describe` shows it); `about`
        is the object as read (its kind, name, namespace and uid are used)."""
        meta = about["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": about["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning",
            "source": {"component": component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.create_json(f"/api/v1/namespaces/{meta['namespace']}/events", event)

    async def patch_json(self, path: str, body: Mapping[str, Any]) -> bool:
        """A JSON merge patch; False if the object does not exist."""
        response = await self._request(
            "PATCH",
            path,
            content=json.dumps(body).encode(),
            extra_headers={"content-type": "application/merge-patch+json"},
        )
        return response.status_code != 404

    async def json_patch(self, path: str, operations: list[Mapping[str, Any]]) -> int:
        """A JSON patch (RFC 6902): 200, 404 if the object does not exist, or 422 if one of
        its `test` operations failed (nothing is changed then)."""
        response = await self._request(
            "PATCH",
            path,
            content=json.dumps(operations).encode(),
            extra_headers={"content-type": "application/json-patch+json"},
            answered=(404, 409, 422),
        )
        return response.status_code

    async def review_token(self, token: str, audience: str) -> dict[str, Any]:
        """A TokenReview's status (authenticated, user, audiences)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        }
        response = await self._request(
            "POST", "/apis/authentication.k8s.io/v1/tokenreviews", json=body
        )
        if not response.is_success:
            raise ApiUnavailable(f"TokenReview answered {response.status_code}")
        return dict(response.json().get("status") or {})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class IndexWatcher:
    """Lists Integrations, then watches from that resourceVersion; relists on 410 Gone or any
    broken stream. The index stays usable (last known state) while the API server is away;
    `health` hears whether the watch is live (readiness)."""

    def __init__(
        self,
        configuration: client.Configuration,
        index: IntegrationIndex,
        namespace: str | None,
        retry_seconds: float = 1.0,
        health: ApiHealth | None = None,
    ) -> None:
        self._health = health or ApiHealth()
        self._api = client.CustomObjectsApi(client.ApiClient(configuration))
        self._index = index
        self._namespace = namespace  # None: every namespace
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None
        self._thread = threading.Thread(target=self._loop, name="integration-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _list_call(self) -> tuple[Any, tuple[Any, ...]]:
        if self._namespace is None:
            return self._api.list_cluster_custom_object, (GROUP, VERSION, INTEGRATIONS)
        return self._api.list_namespaced_custom_object, (
            GROUP,
            VERSION,
            self._namespace,
            INTEGRATIONS,
        )

    def _loop(self) -> None:
        call, args = self._list_call()
        while not self._stop.is_set():
            try:
                listed = call(*args, _request_timeout=(5, 30))
                self._index.replace(listed.get("items", []))
                self._health.watch_live()
                version = listed["metadata"]["resourceVersion"]
                self._stream(call, args, version)
            except Exception as exc:  # the watch must outlive any one failure
                log.warning("integration watch interrupted (%s); relisting", type(exc).__name__)
                self._health.watch_broken(f"integration watch interrupted ({type(exc).__name__})")
                self._stop.wait(self._retry)

    def _stream(self, call: Any, args: tuple[Any, ...], version: str) -> None:
        while not self._stop.is_set():
            self._watch = watch.Watch()
            try:
                for event in self._watch.stream(
                    call,
                    *args,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=240,
                    _request_timeout=(5, 300),
                ):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        if obj.get("code") == 410:
                            return  # expired: relist
                        raise RuntimeError("watch error event")
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    self._index.apply(event["type"], obj)
                    if self._stop.is_set():
                        return
            except ApiException as exc:
                if exc.status == 410:
                    return
                raise
            finally:
                self._watch = None
            time.sleep(0)  # the server ended the watch (timeout_seconds): watch on from there
