"""A downstream system stand-in (an accounting API, say): records every request it is sent.

Listens on 127.0.0.1 in a background thread, answers every POST or PUT `201 {"id": "bill-N"}`
and calls `on_request` (from the server's thread) with what arrived.

    with Sink.serving(on_request=print) as sink:
        ...                      # sink.url; sink.received
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Sink:
    def __init__(self, on_request: Callable[[Received], None] | None = None) -> None:
        self.received: list[Received] = []
        self.on_request = on_request
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                item = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                with sink._lock:
                    sink.received.append(item)
                    number = len(sink.received)
                self.send_response(201)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"id": f"bill-{number}"}).encode())
                if sink.on_request is not None:
                    sink.on_request(item)

            do_POST = do_PUT = _record

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Sink:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    @classmethod
    @contextlib.contextmanager
    def serving(cls, on_request: Callable[[Received], None] | None = None) -> Iterator[Sink]:
        sink = cls(on_request).start()
        try:
            yield sink
        finally:
            sink.stop()
