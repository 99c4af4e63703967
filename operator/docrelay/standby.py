"""What a standby operator process serves while another holds the Lease (docs/operator.md,
"High availability"): `/healthz` (it is alive), and the webhook port relayed, byte for byte,
to the active process's webhook address as the Lease names it.

The admission webhooks are served by the active process only (their sequences are issued by
one process), but every replica listens on the webhook port, so every replica is Ready and
the webhook Service may pick any of them: a standby passes the TLS connection through to the
active one unopened. No relay target (the active process not known yet or just killed): the
connection is closed, and the API server's call fails as it would with the active one down.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("docrelay.standby")

Target = tuple[str, int]


@contextlib.contextmanager
def serving(
    health: Target, webhook: Target | None, target: Callable[[], Target | None]
) -> Iterator[None]:
    """Serve `/healthz` on `health` and relay `webhook` to `target()` until the block ends."""
    stop = threading.Event()
    health_server = _health_server(health)
    listener: socket.socket | None = None
    relay: threading.Thread | None = None
    try:
        if webhook is not None:
            listener = socket.create_server(webhook)
            listener.settimeout(0.5)
            relay = threading.Thread(
                target=_relay, args=(listener, target, stop), name="webhook-relay", daemon=True
            )
            relay.start()
        yield
    finally:
        stop.set()
        health_server.shutdown()
        health_server.server_close()
        if relay is not None:
            relay.join(2)
        if listener is not None:
            listener.close()  # the active process's webhook server binds the port next


def _health_server(address: Target) -> ThreadingHTTPServer:
    class Alive(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"standby\n"
            self.send_response(200 if self.path.split("?")[0] == "/healthz" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(address, Alive)
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server


def _relay(
    listener: socket.socket, target: Callable[[], Target | None], stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            inbound, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(
            target=_pass_through, args=(inbound, target()), name="webhook-relay-conn", daemon=True
        ).start()


def _pass_through(inbound: socket.socket, where: Target | None) -> None:
    with contextlib.closing(inbound):
        if where is None:
            return
        try:
            outbound = socket.create_connection(where, timeout=3)
        except OSError as exc:
            log.warning("webhook relay: the active operator is not reachable (%s)", exc.strerror)
            return
        with contextlib.closing(outbound):
            outbound.settimeout(None)
            inbound.settimeout(None)
            back = threading.Thread(target=_copy, args=(outbound, inbound), daemon=True)
            back.start()
            _copy(inbound, outbound)
            back.join(30)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
