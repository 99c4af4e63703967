"""The pod network: which ports a pod gets forwarded (pure), and the namespace and relays
on this machine's kernel (root only)."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from typing import Any

import pytest

from devkit.localnode import network
from devkit.localnode.network import PodNetwork, forwarded_ports, loopback_port


def pod(*env: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"spec": {"initContainers": [{"name": "i", "env": init or []}],
                     "containers": [{"name": "c", "env": list(env)}]}}


@pytest.mark.parametrize(("value", "port"), [
    ("http://127.0.0.1:8080", 8080),
    ("http://127.0.0.1:8080/broker/v1", 8080),
    ("https://localhost:9443", 9443),
    ("http://user:secret@127.0.0.1:3128", 3128),
    ("127.0.0.1:3128", 3128),
    ("https://127.0.0.1", 443),
    ("http://localhost", 80),
    ("http://127.0.0.2:8080", None),
    ("http://10.0.0.1:8080", None),
    ("http://api.example.com:8080", None),
    ("http://127.0.0.1:notaport", None),
    ("", None),
])
def test_loopback_port(value: str, port: int | None) -> None:
    assert loopback_port(value) == port


def test_forwarded_ports_come_from_literal_values_of_the_forwarded_variables_only() -> None:
    spec = pod(
        {"name": "DOCRELAY_BROKER_URL", "value": "http://127.0.0.1:8001"},
        {"name": "HTTPS_PROXY", "value": "http://127.0.0.1:8002"},
        {"name": "http_proxy", "value": "localhost:8003"},
        {"name": "OTHER_URL", "value": "http://127.0.0.1:8004"},
        {"name": "HTTP_PROXY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        {"name": "https_proxy", "value": "http://proxy.example.com:3128"},
        init=[{"name": "HTTP_PROXY", "value": "http://127.0.0.1:8005"}],
    )
    assert forwarded_ports(spec) == {8001, 8002, 8003, 8005}
    assert forwarded_ports({"spec": {}}) == set()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def _socket_in(net: PodNetwork) -> socket.socket:
    """A TCP socket created inside the pod's namespace (it stays there)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def make() -> socket.socket:
        assert libc.setns(net.fd, network.CLONE_NEWNET) == 0
        return socket.socket()

    return network._in_thread(make)


@needs_root
def test_a_pod_network_relays_its_ports_only_and_close_ends_every_relay() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    elsewhere = socket.create_server(("127.0.0.1", 0))
    port, other = upstream.getsockname()[1], elsewhere.getsockname()[1]
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        accepted.append(conn)
        conn.sendall(conn.recv(100).upper())

    threading.Thread(target=serve, daemon=True).start()
    net = PodNetwork.create("unit", [port])
    try:
        inside = _socket_in(net)
        inside.settimeout(10)
        inside.connect(("127.0.0.1", port))
        inside.sendall(b"hello")
        assert inside.recv(100) == b"HELLO"

        blocked = _socket_in(net)
        with pytest.raises(ConnectionRefusedError):
            blocked.connect(("127.0.0.1", other))
        blocked.close()
    finally:
        net.close()
    # The pod stopped: its open connection ends, on both sides.
    assert inside.recv(100) == b""
    accepted[0].settimeout(10)
    assert accepted[0].recv(100) == b""
    inside.close()
    assert net.fd == -1
    assert not [t for t in threading.enumerate() if t.name.startswith(("fwd-unit", "relay-unit"))]
    for server in (upstream, elsewhere, *accepted):
        server.close()
