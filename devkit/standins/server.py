"""Serve an ASGI app on 127.0.0.1 in a background thread, for tests and the demo."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


class Switch:
    """An ASGI app whose target can change: one server for a test module, each test plugging
    in its own app (starting a server per test costs more than the tests). The Switch answers
    the server's lifespan events itself, so a plugged app never starts up or shuts down: serve
    an app that needs them (the Pipedream stand-in's upstream client) on its own instead."""

    def __init__(self) -> None:
        self.app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self.app(scope, receive, send)


@dataclass
class RunningServer:
    base_url: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(app: Any, port: int = 0, ready_timeout: float = 10) -> RunningServer:
    """Start ``app`` (any ASGI application) and return once it accepts connections."""
    port = port or _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False)
    # uvicorn installs signal handlers only in the main thread, so a thread is safe.
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"standin-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"stand-in server on port {port} did not start")
        time.sleep(0.02)
    return RunningServer(f"http://127.0.0.1:{port}", port, server, thread)


@contextlib.contextmanager
def serving(app: Any, port: int = 0) -> Iterator[RunningServer]:
    running = start(app, port)
    try:
        yield running
    finally:
        running.stop()
