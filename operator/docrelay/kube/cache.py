"""A watch-fed store of one kind (client-go's informer shape): one list, then a watch from the
list's resourceVersion; a broken watch resumes from the last version seen (bookmarks keep it
current), and an expired one (410 Gone, as an HTTP status or as the watch's ERROR event)
lists again. Readers get what the store holds and never call the API.

Kinds: any docrelay custom resource, and the run machinery's Jobs and pods (by label
selector), read as the API server's JSON (no typed objects built and converted back).
`managedFields` are dropped on the way in: nothing reads them, and they are a large share of
an object's size.

Listeners are called for every change, in resourceVersion order for what the watch delivers,
inside the store's lock (they must be quick: update an index, add a key to a work queue):
`listener(key, old, new, watched)` with `new` None for a deletion, and `watched` False for a
write-through (`observe`, `forget`) of this process's own writes. When the watch then delivers
the version written through, listeners get it once more with `old` and `new` of the same
resourceVersion (a confirmation, not a change).

Read-your-writes: `wait_for(version)` blocks until the watch has delivered that
resourceVersion (or later). resourceVersions are compared as integers (etcd revisions, as the
API server gives them); a version that is not an integer is never waited for.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from urllib3.exceptions import HTTPError

from docrelay.kube import INTEGRATIONS, Kube, KubeError
from docrelay.models.common import GROUP, VERSION

log = logging.getLogger("docrelay.cache")

WATCH_SECONDS = 300  # one watch request's length; the next resumes where it ended
RETRY_SECONDS = 1.0
JOBS, PODS = "jobs", "pods"  # the built-in kinds a store can hold

Key = tuple[str, str]
Listener = Callable[[Key, dict[str, Any] | None, dict[str, Any] | None, bool], None]


def _version(obj: Mapping[str, Any] | None) -> int | None:
    text = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(text)) if text is not None else None
    except (TypeError, ValueError):
        return None


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


class Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class Store:
    """Objects of one kind, by (namespace, name), kept current by a watch thread."""

    def __init__(
        self,
        kube: Kube,
        plural: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> None:
        # A client of its own: the watch holds one connection for minutes.
        api_client = client.ApiClient(kube.api_client.configuration)
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.plural = plural
        self.namespace = namespace
        self.label_selector = label_selector
        self.items: dict[Key, dict[str, Any]] = {}
        self.seen = 0  # the newest resourceVersion the list or the watch delivered
        self.lists = 0  # list calls made (a relist after 410 Gone counts)
        self.watches = 0  # watch requests opened
        self.synced = False
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.listeners: list[Listener] = []
        self.on_synced: list[Callable[[], None]] = []  # called once, after the first list
        # Deleted by this process: later events of the old object are ignored until the
        # watch delivers the deletion (names here are never reused while that is pending).
        self._tombstones: set[Key] = set()
        self._through: set[Key] = set()  # held as written through, the watch not yet seen
        self._resp: Any = None
        self._resume: str | None = None

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

    def wait_synced(self, timeout: float | None = None) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.synced or self.stop_event.is_set(), timeout)

    def add_listener(self, listener: Listener) -> None:
        with self.cond:
            self.listeners.append(listener)

    # --- write-through -----------------------------------------------------------------------

    def observe(self, obj: dict[str, Any] | None) -> None:
        """Write-through of an object this process has just written (the API's answer), so
        the next reader sees it before the watch delivers it; an older version never wins.
        The store keeps `obj` itself (no deep copy of each Job and run written): callers hand
        over an answer they no longer change."""
        if not obj or "metadata" not in obj:
            return
        with self.cond:
            self._put(_key(obj), _slim(obj), watched=False)

    def forget(self, namespace: str, name: str) -> None:
        """Write-through of a deletion this process has just made."""
        key = (namespace, name)
        with self.cond:
            old = self.items.pop(key, None)
            if old is not None:
                self._tombstones.add(key)
                self._notify(key, old, None, False)

    # --- the watch thread --------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(
            target=self._run, name=f"docrelay-cache-{self.plural}", daemon=True
        ).start()

    def stop(self) -> None:
        self.stop_event.set()
        with self.cond:
            self.cond.notify_all()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # a socket another thread reads: best effort
                resp.close()

    def _call(self, **kwargs: Any) -> Any:
        kwargs["_preload_content"] = False
        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        ns = self.namespace
        if self.plural == JOBS:
            if ns is None:
                return self.batch.list_job_for_all_namespaces(**kwargs)
            return self.batch.list_namespaced_job(ns, **kwargs)
        if self.plural == PODS:
            if ns is None:
                return self.core.list_pod_for_all_namespaces(**kwargs)
            return self.core.list_namespaced_pod(ns, **kwargs)
        if ns is None:
            return self.custom.list_cluster_custom_object(GROUP, VERSION, self.plural, **kwargs)
        return self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, self.plural, **kwargs)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self._resume is None:
                    self._resume = self._relist()
                self._follow()
            except Gone:
                self._resume = None
            except ApiException as exc:
                if exc.status == 410:  # too old to resume from: list again
                    self._resume = None
                    continue
                log.warning("cache %s: watch failed (%s); will retry", self.plural, exc.status)
                self.stop_event.wait(RETRY_SECONDS)
            except (HTTPError, OSError) as exc:  # the connection broke: resume where it ended
                if not self.stop_event.is_set():
                    log.info(
                        "cache %s: watch ended (%s); resuming", self.plural, type(exc).__name__
                    )
                    self.stop_event.wait(RETRY_SECONDS)
            except KubeError as exc:
                log.warning("cache %s: %s; will retry", self.plural, exc)
                self.stop_event.wait(RETRY_SECONDS)
            except Exception:  # never let the store die; details stay in our log
                if not self.stop_event.is_set():
                    log.exception("cache %s: unexpected error; will retry", self.plural)
                    self.stop_event.wait(RETRY_SECONDS)

    def _relist(self) -> str:
        try:
            resp = self._call()
        except ApiException as exc:
            where = self.namespace or "every namespace"
            raise KubeError(
                f"Kubernetes API {exc.status} while listing {self.plural} in {where}"
            ) from None
        result = json.loads(resp.data)
        self.lists += 1
        version = str((result.get("metadata") or {}).get("resourceVersion", ""))
        fresh = {_key(o): _slim(o) for o in result.get("items") or []}
        with self.cond:
            old = self.items
            self.items = {}
            self._tombstones.clear()
            for key, obj in fresh.items():
                self.items[key] = obj
                self._notify(key, old.get(key), obj, True)
            for key, gone in old.items():
                if key not in fresh:
                    self._notify(key, gone, None, True)
            listed = _version({"metadata": {"resourceVersion": version}})
            self.seen = max(self.seen, listed or 0)
            if not self.synced:
                self.synced = True
                for callback in self.on_synced:
                    callback()
            self.cond.notify_all()
        return version

    def _follow(self) -> None:
        resp = self._call(
            watch=True,
            resource_version=self._resume,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
        )
        self.watches += 1
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if self.stop_event.is_set():
                    return
                if not line or line.isspace():
                    continue
                self._apply(json.loads(line))
        finally:
            self._resp = None
            resp.release_conn()

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code") or 500, reason=str(obj.get("reason")))
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resume = str(version)
        key = _key(obj)
        with self.cond:
            if kind == "DELETED":
                self._tombstones.discard(key)
                old = self.items.pop(key, None)
                if old is not None:
                    self._notify(key, old, None, True)
            elif kind in ("ADDED", "MODIFIED") and key not in self._tombstones:
                self._put(key, _slim(obj), watched=True)
            seen = _version(obj)
            if seen is not None:
                self.seen = max(self.seen, seen)
            self.cond.notify_all()

    def _put(self, key: Key, obj: dict[str, Any], watched: bool) -> None:
        old = self.items.get(key)
        new_version, old_version = _version(obj), _version(old)
        if old_version is not None and new_version is not None:
            if new_version < old_version:
                return
            if new_version == old_version:  # the watch's copy of a write seen through
                self.items[key] = obj
                if watched and key in self._through:
                    self._through.discard(key)
                    self._notify(key, old, obj, True)  # old and new alike: a confirmation
                return
        self.items[key] = obj
        if watched:
            self._through.discard(key)
        else:
            self._through.add(key)
        self._notify(key, old, obj, watched)

    def _notify(
        self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None, watched: bool
    ) -> None:
        for listener in self.listeners:
            try:
                listener(key, old, new, watched)
            except Exception:  # a listener's bug must not stop the watch
                log.exception("cache %s: a listener failed", self.plural)


def resource_version(raw: Mapping[str, Any] | None) -> int | None:
    """An object's resourceVersion as a number (None when absent)."""
    return _version(raw)


def integration_or_get(
    cache: Store | None, kube: Kube, namespace: str, name: str
) -> dict[str, Any] | None:
    """The Integration from the cache (a copy), or from the API if the cache does not hold it:
    a missing Integration is only ever concluded from the API. The statuses this operator
    writes go through to the cache; other writers' changes arrive by the watch, as kopf's
    own events do."""
    cached = cache.get(namespace, name) if cache is not None and cache.synced else None
    if cached is not None:
        return copy.deepcopy(cached)
    return kube.get(INTEGRATIONS, namespace, name)
