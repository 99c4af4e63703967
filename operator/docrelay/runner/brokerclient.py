"""The run's HTTP client for the broker: standard library only (the runner starts fast), the
pod's projected token on every call, connect 5 s / read 30 s (the runtime contract)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from docrelay.runner import contract

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


def token_path(environ: Any = os.environ) -> Path:
    default = f"{contract.BROKER_TOKEN_DIR}/{contract.BROKER_TOKEN_FILE}"
    return Path(environ.get(contract.ENV_BROKER_TOKEN_PATH) or default)


class BrokerClient:
    def __init__(self, base_url: str, token_file: Path) -> None:
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
        return cls(url, token_path(environ))

    def _token(self) -> str:
        # Read on every call: the kubelet rotates the projected token file.
        try:
            return self._token_file.read_text().strip()
        except OSError:
            raise BrokerError("the broker token is not mounted") from None

    def request(
        self, method: str, path: str, body: Any = None, read_timeout: float = READ_TIMEOUT
    ) -> Any:
        """The JSON answer; BrokerError on a non-2xx answer or no answer. `read_timeout` is
        longer for calls the broker forwards (the Connect proxy waits up to 30 s upstream)."""
        import http.client  # lazily: ~20 ms of start-up a run without broker calls skips

        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout)  # connect 5 s, then 30 s per read
            conn.request(method, self._prefix + path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_RESPONSE_BYTES)
            status = response.status
            retry_after = response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:  # timeouts are OSErrors
            raise BrokerError(f"broker unreachable ({type(exc).__name__})") from None
        finally:
            conn.close()
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            answer = None
        if 200 <= status < 300:
            return answer
        reason = answer.get("error") if isinstance(answer, dict) else None
        text = str(reason)[:200] if reason else "refused"
        try:
            wait = float(retry_after) if retry_after else None
        except ValueError:
            wait = None
        raise BrokerError(f"{method} {path.split('?')[0]} answered {status}: {text}", status, wait)
