"""The run's side of the egress proxy (docs/egress.md): the pod's broker token becomes the
proxy password in this process's environment, so standard clients (urllib, requests, httpx,
subprocesses such as curl) authenticate to the proxy without the code doing anything."""

from __future__ import annotations

import socket
import sys
from collections.abc import Mapping, MutableMapping
from urllib.parse import quote, urlsplit, urlunsplit

from docrelay.runner import contract
from docrelay.runner.brokerclient import token_path


def proxy_url_with_token(url: str, token: str) -> str | None:
    """`http://host:port` -> `http://run:<token>@host:port`; None if it is not a URL we can
    add credentials to (or it has some already)."""
    parts = urlsplit(url.strip() if "://" in url else "http://" + url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    netloc = f"{contract.PROXY_USER}:{quote(token, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def install_proxy_credentials(
    environ: Mapping[str, str], target: MutableMapping[str, str]
) -> str | None:
    """Put the broker token into every proxy variable the operator set; the token (to mask),
    or None when no proxy is configured or the token cannot be read (a notice on stderr)."""
    names = [name for name in contract.PROXY_VARIABLES if environ.get(name)]
    if not names:
        return None
    try:
        token = token_path(environ).read_text().strip()
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
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET http://docrelay-probe.invalid/ HTTP/1.1\r\n\r\n")
            answered = sock.recv(16).startswith(b"HTTP/1.")  # 407: no token, as expected
    except OSError:
        answered = False
    return None if answered else f"{address[0]}:{address[1]}"
