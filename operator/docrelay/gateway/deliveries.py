"""A bounded record of the deliveries the gateway received, per namespace it serves: when,
which format and event, the document's identifier, workspace and document type, the outcome,
the reason (why it was refused, ignored or unmatched) and the runs it created. Never a body,
a header or a signature. `docrelay events` shows it.

Kept in memory and written in batches to the ConfigMap `docrelay-deliveries` of the namespace;
every gateway process writes its own key (`<host>-<start>-<pid>.json`) with a merge patch, so
replicas never overwrite each other, and readers merge the keys. Refusals are kept apart and
fewer, so a flood of badly signed requests cannot push the real deliveries out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from docrelay.gateway.kubeapi import ApiUnavailable, KubeApi

log = logging.getLogger(__name__)

CONFIG_MAP = "docrelay-deliveries"
KEEP_DELIVERIES = 200  # verified deliveries per namespace and gateway process
KEEP_REFUSALS = 50  # refused ones, apart
FLUSH_SECONDS = 1.0

# Reasons, as the gateway's metrics label them, in words for `docrelay events`.
REASONS = {
    "created": "runs created",
    "duplicate": "a redelivery: its runs existed already",
    "no_integration": "unmatched: no Integration for this workspace, document type and trigger",
    "event_type": "ignored: not an event docrelay acts on",
    "signature": "signature missing or wrong (another key, or not signed by the platform)",
    "stale": "timestamp outside the tolerance (a replay, or a clock far off)",
    "too_large": "body too large",
    "media_type": "not JSON",
    "malformed_json": "body is not valid JSON",
    "schema": "body does not match the event schema",
    "api_server": "API server unavailable: answered 503, the sender retries",
}


@dataclass(frozen=True)
class Delivery:
    """One delivery, as `docrelay events` shows it; identifiers only."""

    time: str
    format: str
    outcome: str  # accepted, unmatched, ignored, refused, unavailable
    reason: str  # a REASONS key
    event: str = ""
    document: str = ""
    workspace: str = ""
    document_type: str = ""
    event_id: str = ""
    runs: tuple[str, ...] = ()  # created by this delivery
    existing: int = 0  # runs that existed already (a redelivery)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs"] = list(self.runs)
        return {k: v for k, v in data.items() if v not in ("", 0, [])}


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Namespace:
    deliveries: deque[Delivery] = field(default_factory=lambda: deque(maxlen=KEEP_DELIVERIES))
    refusals: deque[Delivery] = field(default_factory=lambda: deque(maxlen=KEEP_REFUSALS))
    dirty: bool = False


class DeliveryLog:
    def __init__(self, kube: KubeApi | None, replica: str | None = None) -> None:
        self.kube = kube
        self.replica = replica or f"{socket.gethostname()}-{int(time.time())}-{os.getpid()}"
        self.namespaces: dict[str, _Namespace] = {}

    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in self.replica)
        return f"{safe[:200]}.json"

    def add(self, namespace: str, delivery: Delivery) -> None:
        held = self.namespaces.setdefault(namespace, _Namespace())
        target = held.refusals if delivery.outcome == "refused" else held.deliveries
        target.append(delivery)
        held.dirty = True

    def entries(self, namespace: str) -> list[Delivery]:
        held = self.namespaces.get(namespace)
        if held is None:
            return []
        return sorted([*held.deliveries, *held.refusals], key=lambda d: d.time)

    async def flush(self) -> None:
        """Write every namespace whose record changed; a failure leaves it for the next."""
        if self.kube is None:
            return
        for namespace, held in list(self.namespaces.items()):
            if not held.dirty:
                continue
            held.dirty = False
            data = {
                self.key(): json.dumps(
                    [d.to_json() for d in self.entries(namespace)], separators=(",", ":")
                )
            }
            path = f"/api/v1/namespaces/{namespace}/configmaps"
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": CONFIG_MAP,
                    "namespace": namespace,
                    "labels": {
                        "app.kubernetes.io/managed-by": "docrelay",
                        "app.kubernetes.io/component": "delivery-history",
                    },
                },
                "data": data,
            }
            try:
                exists = await self.kube.patch_json(f"{path}/{CONFIG_MAP}", {"data": data})
                if not exists and not await self.kube.create_json(path, body):
                    await self.kube.patch_json(f"{path}/{CONFIG_MAP}", {"data": data})
            except ApiUnavailable as exc:
                held.dirty = True
                log.warning("delivery history of %s not written yet: %s", namespace, exc)

    async def run(self, stop: asyncio.Event, every: float = FLUSH_SECONDS) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            try:
                await self.flush()
            except Exception as exc:  # the history must never stop the gateway
                log.warning("delivery history flush failed (%s)", type(exc).__name__)


def merged(data: dict[str, str]) -> list[dict[str, Any]]:
    """Every replica's entries from the ConfigMap's data, oldest first (what the CLI reads)."""
    entries: list[dict[str, Any]] = []
    for text in data.values():
        try:
            loaded = json.loads(text)
        except ValueError:
            continue
        if isinstance(loaded, list):
            entries.extend(e for e in loaded if isinstance(e, dict))
    return sorted(entries, key=lambda e: str(e.get("time", "")))
