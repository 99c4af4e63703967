"""A watch-fed store of one docrelay kind (client-go's informer shape): one list, then a watch
from the list's resourceVersion; a broken watch resumes from the last version seen, and an
expired one (410 Gone) lists again. Readers get copies of what the store holds and never call
the API.

Read-your-writes: `wait_for(version)` blocks until the watch has delivered that resourceVersion
(or later), so a caller that has just read or written an object sees every change made before
it. resourceVersions are compared as integers (etcd revisions, as the API server gives them);
a version that is not an integer is never waited for: the caller lists instead.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Mapping
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from docrelay.kube import INTEGRATIONS, Kube, KubeError
from docrelay.models.common import GROUP, VERSION

log = logging.getLogger("docrelay.cache")

WATCH_SECONDS = 300  # one watch request's length; the next resumes where it ended
RETRY_SECONDS = 1.0


def _version(obj: dict[str, Any]) -> int | None:
    text = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(text)) if text is not None else None
    except (TypeError, ValueError):
        return None


class Store:
    """Objects of one plural, by (namespace, name), kept current by a watch thread."""

    def __init__(self, kube: Kube, plural: str, namespace: str | None) -> None:
        # A client of its own: the watch holds one connection for minutes.
        self.api = client.CustomObjectsApi(client.ApiClient(kube.api_client.configuration))
        self.plural = plural
        self.namespace = namespace
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.seen = 0  # the newest resourceVersion the list or the watch delivered
        self.lists = 0  # list calls made (a relist after 410 Gone counts)
        self.synced = False
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self._watch: watch.Watch | None = None

    # --- readers (no API call) ---------------------------------------------------------------

    def list_shallow(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The stored objects themselves: callers only read them."""
        with self.cond:
            return [o for (ns, _), o in self.items.items() if namespace is None or ns == namespace]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object (callers only read it), or None if the store does not hold it."""
        with self.cond:
            return self.items.get((namespace, name))

    def wait_for(self, version: int | None, timeout: float = 2.0) -> bool:
        """True once the store holds everything up to `version` (and it has synced)."""
        if version is None:
            return False
        with self.cond:
            return self.cond.wait_for(lambda: self.synced and self.seen >= version, timeout)

    def observe(self, obj: dict[str, Any] | None) -> None:
        """Write-through of an object this process has just written (the API's answer), so
        the next reader sees it before the watch delivers it; an older version never wins."""
        if not obj or "metadata" not in obj:
            return
        key = (obj["metadata"].get("namespace", ""), obj["metadata"].get("name", ""))
        with self.cond:
            self._put(key, obj)

    # --- the watch thread --------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(
            target=self._run, name=f"docrelay-cache-{self.plural}", daemon=True
        ).start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._watch is not None:
            self._watch.stop()

    def _call(self) -> tuple[Any, tuple[Any, ...]]:
        if self.namespace is None:
            return self.api.list_cluster_custom_object, (GROUP, VERSION, self.plural)
        return self.api.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, self.plural)

    def _run(self) -> None:
        self._resume: str | None = None  # where the next watch starts; None: list first
        while not self.stop_event.is_set():
            try:
                if self._resume is None:
                    self._resume = self._relist()
                self._follow()
            except ApiException as exc:
                if exc.status == 410:  # too old to resume from: list again
                    self._resume = None
                    continue
                log.warning("cache %s: watch failed (%s); will retry", self.plural, exc.status)
                self.stop_event.wait(RETRY_SECONDS)
            except HTTPError as exc:  # the connection broke: resume where it ended
                if not self.stop_event.is_set():
                    log.info(
                        "cache %s: watch ended (%s); resuming", self.plural, type(exc).__name__
                    )
                    self.stop_event.wait(RETRY_SECONDS)
            except KubeError as exc:
                log.warning("cache %s: %s; will retry", self.plural, exc)
                self.stop_event.wait(RETRY_SECONDS)
            except Exception:  # never let the store die; details stay in our log
                log.exception("cache %s: unexpected error; will retry", self.plural)
                self.stop_event.wait(RETRY_SECONDS)

    def _relist(self) -> str:
        func, args = self._call()
        try:
            result = func(*args)
        except ApiException as exc:
            where = self.namespace or "every namespace"
            raise KubeError(
                f"Kubernetes API {exc.status} while listing {self.plural} in {where}"
            ) from None
        self.lists += 1
        version = str(result.get("metadata", {}).get("resourceVersion", ""))
        with self.cond:
            self.items = {
                (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                for o in result.get("items", [])
            }
            listed = _version({"metadata": {"resourceVersion": version}})
            self.seen = max(self.seen, listed or 0)
            self.synced = True
            self.cond.notify_all()
        return version

    def _follow(self) -> None:
        func, args = self._call()
        self._watch = watch.Watch()
        for event in self._watch.stream(
            func,
            *args,
            resource_version=self._resume,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            deserialize=False,
        ):
            if self.stop_event.is_set():
                break
            kind, obj = event.get("type"), event.get("object") or {}
            self._resume = str((obj.get("metadata") or {}).get("resourceVersion") or self._resume)
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
            with self.cond:
                if kind == "DELETED":
                    self.items.pop(key, None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._put(key, obj)
                seen = _version(obj)
                if seen is not None:
                    self.seen = max(self.seen, seen)
                self.cond.notify_all()

    def _put(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        old = self.items.get(key)
        new_version, old_version = _version(obj), _version(old) if old else None
        if old_version is not None and new_version is not None and new_version < old_version:
            return
        self.items[key] = obj


def resource_version(raw: Mapping[str, Any] | None) -> int | None:
    """An object's resourceVersion as a number (None when absent)."""
    return _version(dict(raw)) if raw else None


def runs_or_list(
    cache: Store | None, kube: Kube, namespace: str, version: int | None = None
) -> list[dict[str, Any]]:
    """The namespace's runs, read from the cache once it holds every change up to `version`
    (a run just read or written); listed from the API when the cache cannot promise that.
    Callers only read what they get."""
    if cache is not None and cache.wait_for(version if version is not None else cache.seen):
        return cache.list_shallow(namespace)
    return kube.list_objects("integrationruns", namespace)


def integration_or_get(
    cache: Store | None, kube: Kube, namespace: str, name: str
) -> dict[str, Any] | None:
    """The Integration from the cache (a copy), or from the API if the cache does not hold it:
    a missing Integration is only ever concluded from the API. The statuses this operator
    writes go through to the cache (Paused is seen by the very next decision); other writers'
    changes arrive by the watch, as kopf's own events do."""
    cached = cache.get(namespace, name) if cache is not None and cache.synced else None
    if cached is not None:
        return copy.deepcopy(cached)
    return kube.get(INTEGRATIONS, namespace, name)
