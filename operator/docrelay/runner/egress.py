"""The run's side of the egress proxy (docs/egress.md): the pod's broker token becomes the
proxy password in this process's environment, so standard clients (urllib, requests, httpx,
subprocesses such as curl) authenticate to the proxy without the code doing anything."""

from __future__ import annotations

import sys

from docrelay.runner import contract
from docrelay.runner.brokerclient import read_token, token_file

# Every run with the egress proxy does this before its handler: string work only here (no
# urllib.parse, re, ipaddress or socket at start; bench/bench_runner.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str) -> str:
    """urllib.parse.quote(text, safe="")."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def proxy_url_with_token(url: str, token: str) -> str | None:
    """`http://host:port` -> `http://run:<token>@host:port`; None if it is not a URL we can
    add credentials to (or it has some already)."""
    text = url.strip() if "://" in url else "http://" + url.strip()
    scheme, _, rest = text.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    path = tail.split("?", 1)[0].split("#", 1)[0]
    host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    if scheme.lower() not in ("http", "https") or not host.strip("[]") or "@" in netloc:
        return None
    return f"{scheme.lower()}://{contract.PROXY_USER}:{_quote(token)}@{netloc}{path}"


def install_proxy_credentials(
    environ: Mapping[str, str], target: MutableMapping[str, str]
) -> str | None:
    """Put the broker token into every proxy variable the operator set; the token (to mask),
    or None when no proxy is configured or the token cannot be read (a notice on stderr)."""
    names = [name for name in contract.PROXY_VARIABLES if environ.get(name)]
    if not names:
        return None
    try:
        token = read_token(token_file(environ))
    except OSError:
        token = ""
    if not token:
        print(
            "docrelay runner: no broker token mounted; the egress proxy will refuse calls",
            file=sys.stderr,
        )
        return None
    for name in names:
        url = proxy_url_with_token(environ[name], token)
        if url is not None:
            target[name] = url
    return token


PROBE = b"GET http://docrelay-probe.invalid/ HTTP/1.1\r\n\r\n"  # no token: 407 at once
WAIT_INTERVAL = 0.1  # between probes while the egress proxy does not answer


def proxy_address(environ: Mapping[str, str]) -> tuple[str, int] | None:
    """(host, port) of the first proxy variable set (credentials left out), by string work
    only: it runs before every handler."""
    for name in contract.PROXY_VARIABLES:
        value = (environ.get(name) or "").strip()
        if not value:
            continue
        rest = value.partition("://")[2] if "://" in value else value
        end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
        netloc = rest[:end].rpartition("@")[2]
        if netloc.startswith("["):
            host, _, after = netloc[1:].partition("]")
            port_text = after[1:] if after.startswith(":") else ""
        else:
            host, _, port_text = netloc.partition(":")
        if not port_text:
            port = 80
        elif port_text.isdigit() and 0 < int(port_text) < 65536:
            port = int(port_text)
        else:
            return None
        return (host, port) if host else None
    return None


def proxy_answers(host: str, port: int, timeout: float) -> bool:
    """True if an HTTP server answers at host:port (the proxy's 407: no token is sent). An
    answer is needed, not just a connection: a relay in front of it (a sidecar, the local
    node's pod network) may accept and then close. On ``_socket``, not ``socket`` (whose
    import, with ``enum`` and ``selectors``, would cost every run's start more than this)."""
    import _socket

    try:
        # An ASCII name as bytes: a str goes through the idna codec, which imports re.
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        addresses = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in addresses:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(PROBE)
            if sock.recv(16).startswith(b"HTTP/1."):
                return True
        except OSError:
            continue
        finally:
            sock.close()
    return False


def proxy_unreachable(environ: Mapping[str, str], timeout: float = 2.0) -> str | None:
    """`host:port` of the configured egress proxy if it does not answer now."""
    address = proxy_address(environ)
    if address is None or proxy_answers(*address, timeout):
        return None
    return where(address)


def where(address: tuple[str, int]) -> str:
    """`host:port` as the run's log names the proxy; an IPv6 host in brackets, as in a URL."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_for_proxy(
    environ: Mapping[str, str],
    bound: float,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    answers: Callable[[str, int, float], bool] = proxy_answers,
) -> tuple[float, int, str | None]:
    """Before the code: probe the egress proxy until it answers, at most `bound` seconds.

    A new pod's network can lag its container: a NetworkPolicy controller that programs a pod
    once its address is published (kube-router, and k3s, which embeds it) lets the gateway
    refuse the pod until then, and code that calls out in its first second would fail, on
    every attempt. Returns (seconds waited, probes made, `host:port` if it never answered)."""
    import time

    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    address = proxy_address(environ)
    if address is None or bound <= 0:
        return 0.0, 0, None
    started = clock()
    probes = 0
    while True:
        left = bound - (clock() - started)
        probes += 1
        if answers(*address, max(0.05, min(1.0, left))):
            return clock() - started, probes, None
        if clock() - started + WAIT_INTERVAL >= bound:
            return clock() - started, probes, where(address)
        sleep(WAIT_INTERVAL)
