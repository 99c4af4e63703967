"""The only module that talks to the API server.

Requests go through the official client's ``ApiClient`` (its auth, TLS and connection pool)
but carry and return plain JSON dicts, so the node sees objects exactly as the API serves
them. Tokens come from the TokenRequest API through the client's typed
``create_namespaced_service_account_token``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from kubernetes import client

from devkit.localnode.objects import Obj
from devkit.localnode.volumes import Token

log = logging.getLogger(__name__)

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)

    @property
    def server(self) -> tuple[str, int]:
        url = urlparse(self.api.configuration.host)
        return url.hostname or "127.0.0.1", url.port or 443

    def _send(self, method: str, path: str, query: Mapping[str, Any] | None, body: Any,
              content_type: str, timeout: float | tuple[float, float]) -> Any:
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api.call_api(*params, _request_timeout=timeout)

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                timeout: float = 30) -> Obj:
        response = self._send(method, path, query, body, content_type, timeout)
        data = response.read()
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        return json.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> Obj:
        return self.request("GET", path, query=query)

    def get_or_none(self, path: str) -> Obj | None:
        try:
            return self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def watch(self, path: str, query: Mapping[str, Any], timeout: float) -> Iterator[Obj]:
        """Watch events as dicts; ends when the server closes the stream."""
        response = self._send("GET", path, {**query, "watch": "true"}, None,
                              "application/json", (10, timeout))
        if not 200 <= response.status < 300:
            raise _error(response.status, response.read())
        raw = response.response  # urllib3's response, not read yet
        try:
            pending = b""
            for chunk in raw.stream(64 * 1024, decode_content=True):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()

    def token(self, namespace: str, service_account: str, pod_name: str, pod_uid: str,
              audience: str | None, expiration_seconds: int) -> Token:
        """A service-account token bound to the pod (TokenRequest API)."""
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=expiration_seconds,
                bound_object_ref=client.V1BoundObjectReference(
                    api_version="v1", kind="Pod", name=pod_name, uid=pod_uid,
                ),
            )
        )
        try:
            issued = self.core.create_namespaced_service_account_token(
                service_account, namespace, request, _request_timeout=30
            )
        except client.ApiException as exc:
            raise KubeError(exc.status or 0, exc.reason or "", "TokenRequest failed") from None
        status = issued.status
        if status is None or not status.token or status.expiration_timestamp is None:
            raise KubeError(500, "InvalidTokenRequest", "TokenRequest returned no token")
        return Token(status.token, status.expiration_timestamp)


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data)
        return KubeError(status, str(body.get("reason", "")), str(body.get("message", "")))
    except ValueError:
        return KubeError(status, "", data[:200].decode(errors="replace"))
