"""The document platform as a person reaches it: with the tenant's platform credentials
(Secret `docrelay-platform`: `token`, `url`), read with the person's own Kubernetes
credentials, so whoever may read that Secret may list documents and nobody else can. No
token is ever put into a message."""

from __future__ import annotations

import base64
import binascii

from docrelay.actions import Refused
from docrelay.kube import Kube
from docrelay.platform.client import PlatformClient

PLATFORM_SECRET = "docrelay-platform"


def secret_entries(kube: Kube, namespace: str, name: str) -> dict[str, bytes]:
    """A Secret's entries, decoded; Refused if it does not exist."""
    data = kube.read_secret_data(namespace, name)
    if data is None:
        raise Refused(f"Secret {namespace}/{name} not found")
    decoded = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
    return decoded


def platform_client(kube: Kube, namespace: str, secret: str = PLATFORM_SECRET) -> PlatformClient:
    data = secret_entries(kube, namespace, secret)
    token = data.get("token", b"").decode(errors="replace").strip()
    url = data.get("url", b"").decode(errors="replace").strip()
    if not token or not url:
        raise Refused(f"Secret {namespace}/{secret} needs a token and a url")
    return PlatformClient(url, token)
