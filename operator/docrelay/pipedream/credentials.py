"""A tenant's Pipedream project credentials, from its Secret, and one cached client per project.

The Secret (default ``docrelay-pipedream``, in the tenant's namespace) holds ``client_id``,
``client_secret``, ``project_id`` and optionally ``environment`` (``development`` or
``production``, default ``production``) and ``url`` (default ``https://api.pipedream.com``).
Who reads it: the gateway's broker (proxy and actions) and the operator (account health):
docs/pipedream.md, "Who holds the credentials". Never a run pod.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from docrelay.pipedream.client import ConnectClient
from docrelay.pipedream.ratelimit import ProjectBuckets

DEFAULT_SECRET = "docrelay-pipedream"
DEFAULT_URL = "https://api.pipedream.com"
DEFAULT_ENVIRONMENT = "production"
_PROJECT = re.compile(r"^proj_[A-Za-z0-9]+$")


class CredentialsError(ValueError):
    """The Secret is missing or incomplete; the message names keys, never values."""


@dataclass(frozen=True)
class ConnectCredentials:
    client_id: str
    client_secret: str = field(repr=False)
    project_id: str
    environment: str = DEFAULT_ENVIRONMENT
    url: str = DEFAULT_URL

    @property
    def fingerprint(self) -> str:
        """Tells two credential sets apart (cache key) without revealing either."""
        text = "\0".join((self.url, self.project_id, self.client_id, self.client_secret))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def credentials_from_secret(
    data: Mapping[str, str] | None, secret: str = DEFAULT_SECRET, default_url: str = DEFAULT_URL
) -> ConnectCredentials:
    """From a Secret's ``data`` (base64 values, as the API returns them)."""
    if data is None:
        raise CredentialsError(f"no Secret {secret} with the Pipedream project's credentials")
    values: dict[str, str] = {}
    for key, encoded in data.items():
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode().strip()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise CredentialsError(f"Secret {secret}: entry {key} is not base64 text") from None
    missing = [k for k in ("client_id", "client_secret", "project_id") if not values.get(k)]
    if missing:
        raise CredentialsError(f"Secret {secret} lacks " + ", ".join(missing))
    if not _PROJECT.match(values["project_id"]):
        raise CredentialsError(f"Secret {secret}: project_id is not a Pipedream project id")
    environment = values.get("environment") or DEFAULT_ENVIRONMENT
    if environment not in ("development", "production"):
        raise CredentialsError(f"Secret {secret}: environment must be development or production")
    url = values.get("url") or default_url
    if not url.startswith(("https://", "http://")):
        raise CredentialsError(f"Secret {secret}: url is not an http(s) URL")
    return ConnectCredentials(
        values["client_id"], values["client_secret"], values["project_id"], environment, url
    )


class ClientCache:
    """One ConnectClient per credentials and environment, so the server token is fetched once
    and reused by every call; one token bucket per project, shared by all of them."""

    def __init__(self, buckets: ProjectBuckets | None = None, **client_options: object) -> None:
        self.buckets = buckets or ProjectBuckets()
        self._options = client_options
        self._clients: dict[tuple[str, str], ConnectClient] = {}
        self._lock = threading.Lock()

    def get(self, credentials: ConnectCredentials, environment: str | None = None) -> ConnectClient:
        env = environment or credentials.environment
        key = (credentials.fingerprint, env)
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                if len(self._clients) >= 256:  # rotated credentials must not grow it forever
                    for old in self._clients.values():
                        old.close()
                    self._clients.clear()
                found = ConnectClient(
                    credentials.url,
                    credentials.project_id,
                    env,
                    credentials.client_id,
                    credentials.client_secret,
                    proxy_bucket=self.buckets.get(credentials.project_id),
                    **self._options,  # type: ignore[arg-type]
                )
                self._clients[key] = found
            return found

    def close(self) -> None:
        with self._lock:
            for found in self._clients.values():
                found.close()
            self._clients.clear()
