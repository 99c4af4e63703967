"""Plain-dict views of Kubernetes objects, and the few constants every module shares.

The local node handles API objects as the JSON dicts the API server sends (camelCase keys),
never as client models: what we read is exactly what the API holds.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

# Pods share the machine's loopback network, so every pod and the node have this address.
NODE_IP = "127.0.0.1"
POD_IP = NODE_IP

# Where the kubelet writes the termination message unless the container says otherwise.
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


def pod_key(pod: Mapping[str, Any]) -> str:
    """``namespace/name``, for log lines (never a secret)."""
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace')}/{meta.get('name')}"


def all_containers(pod: Mapping[str, Any]) -> list[Obj]:
    spec = pod.get("spec", {})
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def decode_data(obj: Mapping[str, Any] | None) -> dict[str, bytes] | None:
    """A Secret's or ConfigMap's contents as bytes per key; None if the object is missing.

    Secrets carry base64 in ``data``; ConfigMaps carry text in ``data`` and base64 in
    ``binaryData``.
    """
    if obj is None:
        return None
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret":
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = value.encode()
        return out
    for key, value in (obj.get("data") or {}).items():
        out[key] = value.encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    return out


def rfc3339(moment: dt.datetime) -> str:
    """The API's timestamp format (seconds, UTC, ``Z``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
