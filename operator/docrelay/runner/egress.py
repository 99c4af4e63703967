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
    from collections.abc import Mapping, MutableMapping

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


def proxy_address(environ: Mapping[str, str]) -> tuple[str, int] | None:
    from urllib.parse import urlsplit

    for name in contract.PROXY_VARIABLES:
        value = environ.get(name)
        if value:
            parts = urlsplit(value if "://" in value else "http://" + value)
            try:
                port = parts.port or 80
            except ValueError:
                return None
            return (parts.hostname, port) if parts.hostname else None
    return None


def proxy_unreachable(environ: Mapping[str, str], timeout: float = 2.0) -> str | None:
    """`host:port` of the configured egress proxy if it does not answer now. An answer is
    needed, not just a connection: a relay in front of it (a sidecar, the local node's pod
    network) may accept and then close."""
    address = proxy_address(environ)
    if address is None:
        return None
    import socket

    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET http://docrelay-probe.invalid/ HTTP/1.1\r\n\r\n")
            answered = sock.recv(16).startswith(b"HTTP/1.")  # 407: no token, as expected
    except OSError:
        answered = False
    return None if answered else f"{address[0]}:{address[1]}"
