"""A network namespace per pod, and the only ways out of it: relays to chosen loopback ports.

Each pod gets its own network namespace with nothing in it but ``lo`` (up), so its
containers share a loopback among themselves (as a pod's containers do) and reach nothing
of the machine: not the API server, not etcd, not the operator's webhook, not any other
loopback port. This stands in for the chart's NetworkPolicy (DNS, the broker and the egress
proxy only): for each loopback endpoint the pod's containers name in a forwarded variable
(``DOCRELAY_BROKER_URL``, ``HTTPS_PROXY``, ``HTTP_PROXY`` and the lowercase forms, set as
literal values in the pod spec: the operator writes them), the node listens on the same
``127.0.0.1:PORT`` inside the pod's namespace and relays each connection to the machine's
``127.0.0.1:PORT``.

How, without a helper process: namespaces are per thread. A short-lived thread enters the
namespace (``unshare`` to create it, ``setns`` to return to it), opens what must live there
(the namespace's own fd, a listening socket) and ends; a socket stays in the namespace it
was created in whatever thread uses it later. Accepting, connecting out (from threads in
the machine's namespace) and relaying happen in ordinary threads. The node keeps the
namespace's fd open (which keeps the namespace alive) and passes it to each container's
init, which ``setns``-es into it. ``close()`` stops the listeners and every relayed
connection and drops the fd; the namespace goes with the last process in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1

FORWARDED_VARIABLES = ("DOCRELAY_BROKER_URL", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy",
                       "http_proxy")
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
_DEFAULT_PORTS = {"http": 80, "https": 443}
RELAY_CHUNK = 65536

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

T = TypeVar("T")


def forwarded_ports(pod: Mapping[str, Any]) -> set[int]:
    """Loopback ports the pod's containers name in a forwarded variable's literal value.

    Values from Secrets or ConfigMaps (``valueFrom``, ``envFrom``) never count: only what
    the pod's author (the operator) wrote into the spec opens a way out.
    """
    spec = pod.get("spec") or {}
    ports: set[int] = set()
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        for item in container.get("env") or []:
            if item.get("name") in FORWARDED_VARIABLES and isinstance(item.get("value"), str):
                port = loopback_port(item["value"])
                if port is not None:
                    ports.add(port)
    return ports


def loopback_port(value: str) -> int | None:
    """The port of a URL (or ``host:port``, as proxies are often written) on 127.0.0.1 or
    localhost; None for anything else."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname not in LOOPBACK_NAMES:
        return None
    if port is None:
        port = _DEFAULT_PORTS.get(parts.scheme)
    return port if port else None


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _in_thread(action: Callable[[], T]) -> T:
    """Run ``action`` in a new thread that ends afterwards (it may have changed namespace)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = action()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def _new_namespace() -> int:
    _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _loopback_up()
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class PodNetwork:
    """One pod's network namespace and its relays; ``close()`` ends them all."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.ports: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @classmethod
    def create(cls, name: str, ports: Iterable[int] = ()) -> PodNetwork:
        network = cls(name, _in_thread(_new_namespace))
        try:
            for port in sorted(set(ports)):
                network.forward(port)
        except BaseException:
            network.close()
            raise
        return network

    def _listen(self, port: int) -> socket.socket:
        _check(_libc.setns(self.fd, CLONE_NEWNET), "setns into the pod's network namespace")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(128)
        except BaseException:
            listener.close()
            raise
        return listener

    def forward(self, port: int) -> None:
        """Listen on 127.0.0.1:``port`` in the pod's namespace, relaying to the machine's."""
        if port in self.ports:
            return
        listener = _in_thread(lambda: self._listen(port))
        listener.settimeout(0.5)  # the accept loop notices close() within that
        with self._lock:
            self._sockets.add(listener)
        self.ports.add(port)
        self._spawn(self._accept, listener, port, name=f"fwd-{self.name}-{port}")

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket, port: int) -> None:
        while not self._stop.is_set():
            try:
                inner, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            inner.settimeout(None)
            self._spawn(self._relay, inner, port, name=f"relay-{self.name}-{port}")
        self._discard(listener)

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stop.is_set():
                return False
            self._sockets.add(sock)
            return True

    def _discard(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _relay(self, inner: socket.socket, port: int) -> None:
        if not self._track(inner):
            self._discard(inner)
            return
        try:
            # This thread never left the machine's namespace: the connect goes out there.
            outer = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as exc:
            log.info("pod network %s: relay to 127.0.0.1:%d failed: %s", self.name, port, exc)
            self._discard(inner)
            return
        outer.settimeout(None)
        if not self._track(outer):
            self._discard(inner, outer)
            return
        try:
            _pump(inner, outer, self._stop)
        finally:
            self._discard(inner, outer)

    def close(self) -> None:
        """Stop every listener and relayed connection; release the namespace."""
        self._stop.set()
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=2)
        self._discard(*sockets)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    """Copy both ways until both sides have closed (half-closes passed on) or ``stop``."""
    peers = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            selector.register(sock, selectors.EVENT_READ)
        reading = set(peers)
        while reading and not stop.is_set():
            for key, _events in selector.select(timeout=0.5):
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = source.recv(RELAY_CHUNK)
                except OSError:
                    return
                if data:
                    try:
                        peers[source].sendall(data)
                    except OSError:
                        return
                    continue
                selector.unregister(source)
                reading.discard(source)
                with contextlib.suppress(OSError):
                    peers[source].shutdown(socket.SHUT_WR)
