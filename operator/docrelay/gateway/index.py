"""Which Integrations an event runs: an in-memory index kept current by a watch.

`IntegrationIndex` is pure (fed objects by `replace` after a list and `apply` per watch
event), so matching costs no API call per request. Suspended Integrations stay in the
index: their events still become runs, which wait until the integration is resumed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str, str, str]  # namespace, workspace, document type, trigger


@dataclass(frozen=True)
class Entry:
    namespace: str
    name: str
    key: Key


def entry_of(obj: Mapping[str, Any]) -> Entry | None:
    """The index entry of an Integration object; None if it runs nothing (being deleted, or a
    spec without the fields, which the API server's schema should prevent)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    fields = (spec.get("workspace"), spec.get("documentType"), spec.get("trigger"))
    if metadata.get("deletionTimestamp") or not (namespace and name) or not all(fields):
        return None
    return Entry(namespace, name, (namespace, *fields))  # type: ignore[arg-type]


class IntegrationIndex:
    """Thread-safe: the watch thread writes, request handlers read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[tuple[str, str], Key] = {}
        self._by_key: dict[Key, set[str]] = {}
        self._synced = False

    @property
    def synced(self) -> bool:
        """True once a full list has been loaded: before that, matching would miss runs."""
        return self._synced

    def replace(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Start over from a full list (start-up, or after the watch expired with 410)."""
        with self._lock:
            self._by_name.clear()
            self._by_key.clear()
            for obj in objects:
                self._put(obj)
            self._synced = True

    def apply(self, event_type: str, obj: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED (BOOKMARK and others change nothing)."""
        with self._lock:
            if event_type in ("ADDED", "MODIFIED"):
                self._put(obj)
            elif event_type == "DELETED":
                metadata = obj.get("metadata") or {}
                self._remove((metadata.get("namespace", ""), metadata.get("name", "")))

    def match(self, namespace: str, workspace: str, document_type: str, trigger: str) -> list[str]:
        """The names of the matching Integrations, sorted (a stable order for the response)."""
        with self._lock:
            return sorted(self._by_key.get((namespace, workspace, document_type, trigger), ()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name)

    def _put(self, obj: Mapping[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        ref = (metadata.get("namespace", ""), metadata.get("name", ""))
        self._remove(ref)
        entry = entry_of(obj)
        if entry is None:
            return
        self._by_name[ref] = entry.key
        self._by_key.setdefault(entry.key, set()).add(entry.name)

    def _remove(self, ref: tuple[str, str]) -> None:
        key = self._by_name.pop(ref, None)
        if key is None:
            return
        names = self._by_key.get(key)
        if names is not None:
            names.discard(ref[1])
            if not names:
                del self._by_key[key]
