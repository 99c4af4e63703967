"""The kubelet's container-log endpoint over TLS, so ``kubectl logs`` works through the API.

``GET /containerLogs/{namespace}/{pod}/{container}`` with ``follow``, ``tailLines``,
``limitBytes``, ``timestamps``, ``sinceSeconds``, ``sinceTime`` and ``previous``. Clients
must present a certificate signed by the cluster CA (the API server's kubelet client
certificate); nothing else is served.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from devkit.localnode import logs
from devkit.localnode.objects import parse_rfc3339

log = logging.getLogger(__name__)


class LogNotFound(Exception):
    """The pod or container is unknown here, or has no log yet (message says which)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LogHandle:
    path: Path
    still_writing: Callable[[], bool]


class LogSource(Protocol):
    def find_log(self, namespace: str, pod: str, container: str,
                 previous: bool) -> LogHandle: ...


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("true", "1")


def _int(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    return int(values[-1]) if values else None


def parse_options(query: dict[str, list[str]], now: float | None = None) -> logs.Options:
    since: str | None = None
    seconds = _int(query, "sinceSeconds")
    if seconds is not None:
        moment = (time.time() if now is None else now) - seconds
        since = logs.timestamp(int(moment * 1_000_000_000))
    elif query.get("sinceTime"):
        moment_dt = parse_rfc3339(query["sinceTime"][-1]).astimezone(dt.UTC)
        since = logs.timestamp(int(moment_dt.timestamp() * 1_000_000_000))
    return logs.Options(
        follow=_flag(query, "follow"),
        tail_lines=_int(query, "tailLines"),
        limit_bytes=_int(query, "limitBytes"),
        timestamps=_flag(query, "timestamps"),
        since=since,
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(30)
        self.request.do_handshake()  # here, in this connection's thread, not in accept()
        self.request.settimeout(None)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("logserver: " + format, *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._fail(404, "not found")
            return
        _, namespace, pod, container = parts
        query = parse_qs(url.query)
        try:
            options = parse_options(query)
            handle = self.server.source.find_log(namespace, pod, container,
                                                 _flag(query, "previous"))
        except LogNotFound as exc:
            self._fail(exc.status, str(exc))
            return
        except ValueError as exc:
            self._fail(400, f"bad query: {exc}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in logs.stream(handle.path, options, handle.still_writing,
                                     self.server.stopping.is_set):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, ssl.SSLError):
            self.close_connection = True  # the client went away

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], source: LogSource,
                 context: ssl.SSLContext) -> None:
        self.source = source
        self.context = context
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which stalls without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("log request from %s failed", client_address, exc_info=True)


class LogServer:
    def __init__(self, source: LogSource, context: ssl.SSLContext,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), source, context)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="logserver")

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        with contextlib.suppress(OSError):
            self._server.server_close()
