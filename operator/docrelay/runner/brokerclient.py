"""The run's HTTP client for the broker: standard library only (the runner starts fast), the
pod's projected token on every call, connect 5 s / read 30 s (the runtime contract). HTTP/1.0
on a socket of its own per call (the key fetch is one call before the handler)."""

from __future__ import annotations

import os

from docrelay.runner import contract

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: not imported at the run's start
    from pathlib import Path
    from typing import Any

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class BrokerError(Exception):
    """The broker refused or could not be reached. Never holds a token or a value.

    `status_code` lets the runner classify it like any HTTP error (429/5xx retryable)."""

    def __init__(
        self, message: str, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after
        if status_code is None:  # no answer at all: the network or the broker is away
            self.retryable = True


def token_file(environ: Any = os.environ) -> str:
    """Where the pod's projected broker token is mounted."""
    default = f"{contract.BROKER_TOKEN_DIR}/{contract.BROKER_TOKEN_FILE}"
    return str(environ.get(contract.ENV_BROKER_TOKEN_PATH) or default)


def token_path(environ: Any = os.environ) -> Path:
    from pathlib import Path

    return Path(token_file(environ))


def read_token(path: str | Path) -> str:
    """The token as mounted now (the kubelet rotates the file). OSError if it is not there."""
    with open(path, encoding="utf-8") as file:
        return file.read().strip()


class BrokerClient:
    def __init__(self, base_url: str, token_file: str | Path) -> None:
        from urllib.parse import urlsplit  # only when the run calls the broker

        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BrokerError("the broker URL is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._token_file = token_file

    @classmethod
    def from_env(cls, environ: Any = os.environ) -> BrokerClient:
        url = environ.get(contract.ENV_BROKER_URL)
        if not url:
            raise BrokerError("no broker configured for this run (DOCRELAY_BROKER_URL)")
        return cls(url, token_file(environ))

    def _token(self) -> str:
        # Read on every call: the kubelet rotates the projected token file.
        try:
            return read_token(self._token_file)
        except OSError:
            raise BrokerError("the broker token is not mounted") from None

    def request(
        self, method: str, path: str, body: Any = None, read_timeout: float = READ_TIMEOUT
    ) -> Any:
        """The JSON answer; BrokerError on a non-2xx answer or no answer. `read_timeout` is
        longer for calls the broker forwards (the Connect proxy waits up to 30 s upstream)."""
        payload = b""
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if body is not None:
            import json

            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            status, answer_headers, data = self._exchange(
                method, self._prefix + path, headers, payload, read_timeout
            )
        except OSError as exc:  # timeouts and TLS failures are OSErrors
            raise BrokerError(f"broker unreachable ({type(exc).__name__})") from None
        except ValueError:
            raise BrokerError("broker unreachable (MalformedResponse)") from None
        try:
            answer = contract.load_event(data.decode()) if data.strip() else None
        except (ValueError, UnicodeDecodeError):
            answer = None
        if 200 <= status < 300:
            return answer
        reason = answer.get("error") if isinstance(answer, dict) else None
        text = str(reason)[:200] if reason else "refused"
        retry_after = answer_headers.get("retry-after")
        try:
            wait = float(retry_after) if retry_after else None
        except ValueError:
            wait = None
        raise BrokerError(f"{method} {path.split('?')[0]} answered {status}: {text}", status, wait)

    def _exchange(
        self, method: str, target: str, headers: dict[str, str], payload: bytes, read_timeout: float
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP/1.0 exchange on a new connection (the answer ends where the connection
        does: no chunked framing to undo). On sockets, not http.client: importing http.client
        (and with it the email package) took longer than the key fetch itself. ValueError: an
        answer that is not HTTP."""
        import socket

        sock = socket.create_connection((self._host, self._port), timeout=CONNECT_TIMEOUT)
        try:
            if self._https:
                import ssl

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(read_timeout)  # connect 5 s, then 30 s per read
            host = f"[{self._host}]" if ":" in self._host else self._host
            lines = [f"{method} {target} HTTP/1.0", f"Host: {host}:{self._port}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            if payload or method not in ("GET", "HEAD"):
                lines.append(f"Content-Length: {len(payload)}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
            received = bytearray()
            while len(received) <= MAX_RESPONSE_BYTES + 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        finally:
            sock.close()
        head, separator, data = bytes(received).partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("no end of headers")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/") or not rest[:3].isdigit():
            raise ValueError("not an HTTP status line")
        answer_headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        length = answer_headers.get("content-length", "")
        if length.isdigit():
            data = data[: int(length)]
        return int(rest[:3]), answer_headers, data[:MAX_RESPONSE_BYTES]
