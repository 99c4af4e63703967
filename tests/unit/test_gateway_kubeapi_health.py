"""Which API server answers tell readiness the gateway cannot take events: KubeApi against a
local HTTP server standing in for the API server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from kubernetes import client

from docrelay.gateway.health import ApiHealth
from docrelay.gateway.kubeapi import ApiUnavailable, KubeApi


class Answers(BaseHTTPRequestHandler):
    status: ClassVar[int] = 200
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Answers.paths.append(self.path)
        body = b'{"items": [], "metadata": {}}'
        self.send_response(Answers.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.do_GET()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    http = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http.server_address[1]}"
    http.shutdown()


def probe(host: str, namespace: str | None = "tenant-a") -> tuple[bool, str]:
    configuration = client.Configuration()
    configuration.host = host
    health = ApiHealth()
    health.watch_live()  # only the call decides here

    async def call() -> None:
        kube = KubeApi(configuration, timeout=2, health=health)
        try:
            await kube.probe(namespace)
        except ApiUnavailable:
            pass
        finally:
            await kube.aclose()

    asyncio.run(call())
    state = health.readiness(index_synced=True)
    return state.ready, state.reason


@pytest.mark.parametrize(
    ("status", "ready", "reason"),
    [
        (200, True, ""),
        (404, True, ""),  # an answer: the API server serves us (the CRD may be going away)
        (403, True, ""),  # one refused object is not an outage
        (401, False, "API server answered 401"),  # our credentials are no longer taken
        (429, False, "API server answered 429"),
        (500, False, "API server answered 500"),
        (503, False, "API server answered 503"),
    ],
)
def test_answers_and_readiness(server: str, status: int, ready: bool, reason: str) -> None:
    Answers.status = status
    assert probe(server) == (ready, reason)


def test_nothing_listening_is_unreachable() -> None:
    closed = "http://127.0.0.1:9"  # discard port: nothing listens there on a test machine
    ready, reason = probe(closed)
    assert not ready and reason.startswith("API server unreachable (")


def test_the_probe_is_a_one_item_list_of_the_watched_integrations(server: str) -> None:
    Answers.status, Answers.paths = 200, []
    probe(server, "tenant-a")
    probe(server, None)
    assert Answers.paths == [
        "/apis/docrelay.io/v1alpha1/namespaces/tenant-a/integrations?limit=1",
        "/apis/docrelay.io/v1alpha1/integrations?limit=1",
    ]


def json_patch(host: str) -> int | str:
    """What KubeApi.json_patch returns for the stand-in's answer, or the error it raises."""
    configuration = client.Configuration()
    configuration.host = host

    async def call() -> int | str:
        kube = KubeApi(configuration, timeout=2, health=ApiHealth())
        try:
            return await kube.json_patch("/api/v1/namespaces/t/configmaps/r-1-broker", [])
        except ApiUnavailable as exc:
            return str(exc)
        finally:
            await kube.aclose()

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (200, 200),
        (404, 404),  # no record yet: the caller creates it
        (422, 422),  # a `test` failed (the record was collected): told by the status itself
        (403, "API server answered 403"),
        (500, "API server answered 500"),
    ],
)
def test_json_patch_answers_by_status(server: str, status: int, result: int | str) -> None:
    Answers.status = status
    assert json_patch(server) == result
