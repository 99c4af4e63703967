"""The egress proxy's overhead (docs/egress.md): HTTPS through the proxy against the same
HTTPS straight to the server, on this machine, in one run. Prints figures; asserts nothing.

Three processes on loopback: a TLS server (a self-signed certificate made here with
cryptography), the proxy (`docrelay.gateway.proxy.EgressProxy`, the gateway's own code, with
the identity check stubbed: in the gateway a token is reviewed once per
`egress_auth_cache_seconds`, not per connection), and this client.

- per request: `--requests` sequential HTTPS GETs of 1 KiB, each on a new connection (TCP, TLS
  handshake, request, answer): median and p90 in milliseconds, direct and proxied, and the ratio;
- per MB: `--megabytes` downloaded over one connection: MB/s direct and proxied, and the
  ratio of seconds per MB.

    .venv/bin/python bench/bench_egress.py [--requests 300] [--megabytes 256]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import http.client
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

HOST = "sink.bench.test"
CHUNK = b"x" * (1024 * 1024)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "bench.crt", directory / "bench.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- the server and the proxy, each in its own process --------------------------------------


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.startswith("/mb/"):
            megabytes = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", str(megabytes * len(CHUNK)))
            self.end_headers()
            for _ in range(megabytes):
                self.wfile.write(CHUNK)
            return
        body = b"y" * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def serve_sink(port: int, cert: str, key: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def serve_proxy(port: int, sink_port: int) -> None:
    from docrelay.gateway.broker import Caller
    from docrelay.gateway.proxy import EgressProxy, Recorder
    from docrelay.gateway.settings import GatewaySettings

    caller = Caller("bench", "pod", "pod-uid", "job", "run", "run-uid", 1, "bench", "d", False)

    class Broker:  # the identity check stubbed (see the module docstring)
        async def identify(self, token: str) -> Caller:
            return caller

        async def integration_spec(self, _: Caller) -> dict[str, Any]:
            return {"egress": {"hosts": [f"{HOST}:{sink_port}"], "cidrs": ["127.0.0.1/32"]}}

    settings = GatewaySettings(
        namespace="bench", proxy_port=port, egress_resolve={HOST: "127.0.0.1"}
    )
    proxy = EgressProxy(settings, Broker(), Recorder(None, 200))  # type: ignore[arg-type]

    async def main() -> None:
        await proxy.start()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the client ---------------------------------------------------------------------------


class Direct(http.client.HTTPSConnection):
    """Straight to the server's port, with the name the certificate carries."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=HOST)  # type: ignore[attr-defined]


def connection(
    context: ssl.SSLContext, sink: int, proxy: int | None
) -> http.client.HTTPSConnection:
    if proxy is None:
        return Direct("127.0.0.1", sink, context=context, timeout=30)
    conn = http.client.HTTPSConnection("127.0.0.1", proxy, context=context, timeout=30)
    auth = base64.b64encode(b"run:bench-token").decode()
    conn.set_tunnel(HOST, sink, headers={"Proxy-Authorization": f"Basic {auth}"})
    return conn


def one_request(context: ssl.SSLContext, sink: int, proxy: int | None) -> float:
    started = time.perf_counter()
    conn = connection(context, sink, proxy)
    conn.request("GET", "/small", headers={"Host": HOST})
    answer = conn.getresponse()
    assert answer.status == 200 and len(answer.read()) == 1024
    conn.close()
    return (time.perf_counter() - started) * 1000


def download(context: ssl.SSLContext, sink: int, proxy: int | None, megabytes: int) -> float:
    conn = connection(context, sink, proxy)
    started = time.perf_counter()
    conn.request("GET", f"/mb/{megabytes}", headers={"Host": HOST})
    answer = conn.getresponse()
    total = 0
    while chunk := answer.read(256 * 1024):
        total += len(chunk)
    seconds = time.perf_counter() - started
    conn.close()
    assert total == megabytes * len(CHUNK), total
    return seconds


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=256)
    parser.add_argument("--serve-sink", nargs=3, metavar=("PORT", "CERT", "KEY"))
    parser.add_argument("--serve-proxy", nargs=2, type=int, metavar=("PORT", "SINK_PORT"))
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(int(args.serve_sink[0]), args.serve_sink[1], args.serve_sink[2])
        return
    if args.serve_proxy:
        serve_proxy(*args.serve_proxy)
        return
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_certificate(Path(tmp))
        sink, proxy = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'operator'}{os.pathsep}{REPO}"}
        me = [sys.executable, __file__]
        children = [
            subprocess.Popen([*me, "--serve-sink", str(sink), str(cert), str(key)], env=env),
            subprocess.Popen([*me, "--serve-proxy", str(proxy), str(sink)], env=env),
        ]
        try:
            wait_port(sink)
            wait_port(proxy)
            context = ssl.create_default_context(cafile=str(cert))
            for way in (None, proxy):  # warm both paths
                for _ in range(10):
                    one_request(context, sink, way)
            direct, proxied = [], []
            for _ in range(args.requests):  # interleaved: both see the same machine load
                direct.append(one_request(context, sink, None))
                proxied.append(one_request(context, sink, proxy))
            mb = args.megabytes
            direct_s = min(download(context, sink, None, mb) for _ in range(3))
            proxied_s = min(download(context, sink, proxy, mb) for _ in range(3))
        finally:
            for child in children:
                child.terminate()
                child.wait(10)

    def q(values: list[float], p: float) -> float:
        return statistics.quantiles(values, n=100)[int(p) - 1]

    print(f"egress proxy overhead, {args.requests} HTTPS requests each way (new connection each)")
    print(f"  direct   median {statistics.median(direct):6.2f} ms   p90 {q(direct, 90):6.2f} ms")
    print(f"  proxied  median {statistics.median(proxied):6.2f} ms   p90 {q(proxied, 90):6.2f} ms")
    extra = statistics.median(proxied) - statistics.median(direct)
    ratio = statistics.median(proxied) / statistics.median(direct)
    print(f"  per request: +{extra:.2f} ms, ratio {ratio:.2f}")
    print(f"throughput, {mb} MB over one connection (best of 3)")
    print(f"  direct   {mb / direct_s:7.1f} MB/s   {direct_s / mb * 1000:6.2f} ms/MB")
    print(f"  proxied  {mb / proxied_s:7.1f} MB/s   {proxied_s / mb * 1000:6.2f} ms/MB")
    print(f"  per MB: ratio {proxied_s / direct_s:.2f}")


if __name__ == "__main__":
    main()
