"""The agent's IntegrationRevisions, read from a watch-fed store (kube/cache.py): no list call
per look once it has synced (docs/agent.md, "The worker").

One store per process: the runs machinery's, should it keep one (`shared`), else one of its
own, started at the first read. What the agent writes to a revision is written through
(`observe`), so its next look sees it even before the watch delivers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from docrelay.kube import REVISIONS, Kube
from docrelay.kube.cache import Store


class RevisionCache:
    def __init__(self, kube: Kube, namespace: str | None, shared: Callable[[], Any]) -> None:
        self.kube, self.namespace, self.shared = kube, namespace or None, shared
        self.own: Store | None = None

    def store(self) -> Store | None:
        shared = self.shared()
        return shared if isinstance(shared, Store) else self.own

    def list(self) -> list[dict[str, Any]]:
        """Every revision (the stored objects: callers copy what they keep); a list call only
        until the store has synced."""
        store = self.store()
        if store is None:
            store = self.own = Store(self.kube, REVISIONS, self.namespace)
            store.start()
        if store.synced:
            return store.list_shallow()
        return self.kube.list_objects(REVISIONS, self.namespace)

    def observe(self, obj: dict[str, Any] | None) -> None:
        """Write-through of a revision just written (the API server's answer)."""
        store = self.store()
        if obj is not None and store is not None:
            store.observe(obj)

    def stop(self) -> None:
        if self.own is not None:
            self.own.stop()
