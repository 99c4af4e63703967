"""A counting proxy to the API server: tests point the operator's kubeconfig at it and assert
what the API server saw (every request, kopf's included, by method and path)."""

from __future__ import annotations

import http.client
import re
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.cluster.harness import Tenant, api_request_kind

RUNS_MACHINERY = re.compile(r"/(integrationruns|jobs|pods|integrations)(/|$)")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


class CountingProxy:
    """A plain-HTTP reverse proxy to the API server on 127.0.0.1 that records each request
    as (method, path, query); responses (watches included) are streamed through as they come."""

    def __init__(self, upstream: str, ca_file: str) -> None:
        target = urlsplit(upstream)
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        context = ssl.create_default_context(cafile=ca_file)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            # One request per connection; a body of unknown length (a watch) is passed on in
            # chunks as it comes, so the client sees each event when the API server sends it.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                parts = urlsplit(self.path)
                with proxy.lock:
                    proxy.requests.append((self.command, parts.path, parts.query))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                upstream = http.client.HTTPSConnection(
                    target.hostname or "127.0.0.1", target.port, context=context, timeout=600
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                known = answer.getheader("Content-Length")
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                if known is not None:
                    self.send_header("Content-Length", known)
                else:
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    while chunk := answer.read1(65536):
                        if known is None:
                            chunk = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    if known is None:
                        self.wfile.write(b"0\r\n\r\n")
                except (OSError, ValueError, http.client.HTTPException):
                    pass  # the client went away (a watch it stopped), or the server did
                finally:
                    upstream.close()
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return list(self.requests)

    def quiet(
        self, seconds: float = 5.0, limit: float = 180.0, paths: re.Pattern[str] = RUNS_MACHINERY
    ) -> None:
        """Wait until no request on `paths` (by default runs, Jobs, pods or Integrations) has
        come for `seconds` (other work has clocks of its own: the sealing key check, the
        conversation worker)."""
        deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
        while time.monotonic() < deadline:
            count = sum(1 for _, p, _ in self.snapshot() if paths.search(p))
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
            time.sleep(0.5)
        recent = [r for r in self.snapshot() if paths.search(r[1])][-20:]
        raise AssertionError(f"the operator never went quiet: {recent}")

    def stop(self) -> None:
        self.server.shutdown()


def through_proxy(tenant: Tenant, proxy: CountingProxy) -> None:
    """Point the tenant's kubeconfig (its ServiceAccount token) at the proxy."""
    config = yaml.safe_load(tenant.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = proxy.url
    cluster.pop("certificate-authority-data", None)
    tenant.kubeconfig.write_text(yaml.safe_dump(config))


def by_kind(requests: list[tuple[str, str, str]]) -> Counter[str]:
    """Requests as 'verb resource' (a watch is 'watch', a collection GET is 'list')."""
    return Counter(api_request_kind(method, f"{path}?{query}") for method, path, query in requests)
