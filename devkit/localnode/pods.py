"""Watch the pods bound to this node and hand each to its worker (one thread per pod).

List, then watch from the list's resourceVersion; on 410 Gone (or any broken stream) list
again. Dispatch is idempotent: a pod uid has at most one worker, so a pod is never started
twice; later events only update the worker's copy.
"""

from __future__ import annotations

import logging
import threading
import time

from devkit.localnode.kube import KubeError
from devkit.localnode.logserver import LogHandle, LogNotFound
from devkit.localnode.objects import Obj
from devkit.localnode.worker import NodeContext, PodWorker

log = logging.getLogger(__name__)

WATCH_SECONDS = 290


class _Expired(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class PodManager:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch_loop, daemon=True, name="pod-watch")
        self._selector = f"spec.nodeName={ctx.node_name}"

    def start(self) -> None:
        self._thread.start()

    # -- watch ------------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                version = self._relist()
                while not self._stopping.is_set():
                    version = self._watch(version)
            except _Expired:
                log.info("pod watch expired; listing again")
            except Exception as exc:
                if not self._stopping.is_set():
                    log.warning("pod watch failed (%s); listing again in 1s", exc)
                    time.sleep(1)

    def _relist(self) -> str:
        listing = self.ctx.kube.get("/api/v1/pods", fieldSelector=self._selector)
        seen = set()
        for pod in listing.get("items") or []:
            seen.add(pod["metadata"]["uid"])
            self._dispatch("ADDED", pod)
        with self._lock:
            vanished = [w for uid, w in self._workers.items() if uid not in seen]
        for worker in vanished:
            worker.gone()
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        query = {"fieldSelector": self._selector, "resourceVersion": version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": WATCH_SECONDS}
        for event in self.ctx.kube.watch("/api/v1/pods", query, timeout=WATCH_SECONDS + 30):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise _Expired
                raise KubeError(int(obj.get("code") or 0), str(obj.get("reason")),
                                str(obj.get("message")))
            version = str(obj.get("metadata", {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._dispatch(kind, obj)
            if self._stopping.is_set():
                break
        return version

    def _dispatch(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if worker is not None:
                worker.update(pod)
                return
            if self._stopping.is_set():
                return
            worker = PodWorker(self.ctx, pod, self._forget)
            self._workers[uid] = worker
        log.info("pod %s/%s (%s) bound here", pod["metadata"]["namespace"],
                 pod["metadata"]["name"], uid)
        worker.start()

    def _forget(self, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]

    # -- logs -------------------------------------------------------------------------------

    def find_log(self, namespace: str, pod: str, container: str, previous: bool) -> LogHandle:
        with self._lock:
            matches = [w for w in self._workers.values()
                       if w.namespace == namespace and w.name == pod]
        if not matches:
            raise LogNotFound(f'pod "{pod}" in namespace "{namespace}" is not on this node')
        return matches[-1].find_log(container, previous)

    # -- shutdown ---------------------------------------------------------------------------

    def shutdown(self, timeout: float = 6.0) -> None:
        """Stop every pod's processes and unmount its volumes (statuses stay as they are).

        Workers get ``timeout / 2`` to stop their pods; a worker still busy (in a long
        graceful termination, say) then has its containers killed under it.
        """
        self._stopping.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.shutdown()
        self._join(workers, timeout / 2)
        busy = [w for w in workers if w.thread.is_alive()]
        killers = [threading.Thread(target=c.kill, daemon=True)
                   for w in busy for c in list(w.running.values())]
        for killer in killers:
            killer.start()
        self._join(busy, timeout / 2)

    @staticmethod
    def _join(workers: list[PodWorker], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.thread.join(max(deadline - time.monotonic(), 0.01))
