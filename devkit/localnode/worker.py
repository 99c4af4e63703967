"""One thread per pod: set up its volumes, run its containers, report status, tear it down.

The worker is a sequential story (setup -> init containers -> containers -> terminal status
-> wait for deletion -> delete with grace 0), interrupted by exceptions raised while it
waits for events: the pod was deleted (graceful stop), its activeDeadlineSeconds passed,
it vanished from the API (force delete), or the node is shutting down.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.localnode import env as envmod
from devkit.localnode import logs, network, podspec, status, volumes
from devkit.localnode.cgroups import Cgroups
from devkit.localnode.kube import STRATEGIC, Kube, KubeError
from devkit.localnode.logserver import LogHandle, LogNotFound
from devkit.localnode.network import PodNetwork
from devkit.localnode.objects import (
    DEFAULT_TERMINATION_MESSAGE_PATH,
    Obj,
    decode_data,
    parse_rfc3339,
    pod_key,
    utcnow,
)
from devkit.localnode.sandbox import Container, ContainerSpec
from devkit.toolchain import ToolchainError
from devkit.toolchain.node import ensure_node

log = logging.getLogger(__name__)

SETUP_RETRY_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 2.0
DEFAULT_GRACE_SECONDS = 30


class _Deleted(Exception):
    """deletionTimestamp is set: stop gracefully."""


class _DeadlineExceeded(Exception):
    """spec.activeDeadlineSeconds has passed since startTime."""


class _Gone(Exception):
    """The pod is no longer in the API (force-deleted): stop at once, write nothing."""


class _Shutdown(Exception):
    """The local node is stopping."""


@dataclass(frozen=True)
class NodeContext:
    kube: Kube
    node_name: str
    state_dir: Path
    cgroups: Cgroups | None
    allocatable: dict[str, str]
    service_env: dict[str, str]
    pids_limit: int | None = None  # per pod; None: unlimited
    # Ports no pod gets forwarded, whatever its env says: the API server's, the log server's.
    never_forwarded: set[int] = field(default_factory=set)
    hidden: tuple[str, ...] = ()  # host paths no container sees (sandbox.hidden_paths)
    # The directory holding bin/node of a Node.js major line (the pinned official build,
    # fetched once): what a runner-node:<major> image would hold.
    node_runtime: Callable[[str], Path] = field(default=ensure_node)


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Obj, on_done: Callable[[PodWorker], None]) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = pod_key(pod)
        self.dir = ctx.state_dir / "pods" / self.uid
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        spec = pod.get("spec") or {}
        self.view = status.PodView(
            restart_policy=spec.get("restartPolicy") or "Always",
            init=[status.ContainerRecord(c["name"], c.get("image", ""),
                                         waiting_reason="PodInitializing")
                  for c in spec.get("initContainers") or []],
            containers=[status.ContainerRecord(c["name"], c.get("image", ""),
                                               waiting_reason="ContainerCreating")
                        for c in spec.get("containers") or []],
            generation=meta.get("generation"),
        )
        if self.view.init:
            self.view.init[0].waiting_reason = "ContainerCreating"
            for record in self.view.containers:
                record.waiting_reason = "PodInitializing"
        self.running: dict[str, Container] = {}
        self.volumes: volumes.PodVolumes | None = None
        self.network: PodNetwork | None = None
        self.pod_cgroup: Path | None = None
        self.sources = envmod.Sources(self.namespace)
        self._token_due: dict[str, dt.datetime] = {}
        self._active = False  # deletion and deadline interrupt only while the pod is active
        self._pushed: Obj | None = None
        self._delete_sent = False
        self._on_done = on_done
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"pod-{self.key}")

    # -- inbox ------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Obj) -> None:
        self.events.put(("pod", pod))

    def gone(self) -> None:
        self.events.put(("gone", None))

    def shutdown(self) -> None:
        self.events.put(("shutdown", None))

    # -- the story ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            try:
                self._lifecycle()
            except _Gone:
                log.info("pod %s was removed from the API; stopping it", self.key)
                self._kill_all(0)
            except _Shutdown:
                self._kill_all(SHUTDOWN_GRACE_SECONDS)
                self._release()
                return
            except Exception:
                log.exception("pod %s: worker failed", self.key)
                self._kill_all(0)
            self._release()
            shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self._on_done(self)

    def _lifecycle(self) -> None:
        try:
            self._active = True
            phase = (self.pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                pass  # finished before this node (re)started: only deletion is left
            elif self._started_elsewhere():
                self._mark_lost()
            elif (reason := podspec.unsupported(self.pod)) is not None:
                self._fail_pod("Unsupported", reason)
            elif self._setup() and self._run_init_containers():
                self._run_containers()
                self._push_status()
            else:
                self._push_status()
        except _Deleted:
            log.info("pod %s deleted; stopping its containers", self.key)
            self._terminate(self._deletion_grace(), deadline=False)
        except _DeadlineExceeded:
            log.info("pod %s exceeded activeDeadlineSeconds", self.key)
            self._terminate(self._termination_grace(), deadline=True)
        except (_Gone, _Shutdown):
            raise
        except Exception:
            # A bug here must not leave the pod "Running" forever, nor be retried in a loop.
            log.exception("pod %s: the worker failed; failing the pod", self.key)
            self._active = False
            self._kill_all(0)
            self._fail_pod("LocalNodeError", "the local node failed to run this pod; "
                                             "see the local node's log")
        self._active = False
        self._release()
        self._await_removal()

    # -- waiting for events -------------------------------------------------------------------

    def _next(self, timeout: float | None) -> tuple[str, Any] | None:
        """The next event (or None after ``timeout``), raising the interrupts."""
        wake = [timeout] if timeout is not None else []
        if (left := self._deadline_left()) is not None:
            wake.append(max(left, 0))
        if self._token_due:
            soonest = min(self._token_due.values())
            wake.append(max((soonest - utcnow()).total_seconds(), 0))
        try:
            event = self.events.get(timeout=min(wake) if wake else None)
        except queue.Empty:
            event = None
        if event is not None:
            kind, payload = event
            if kind == "gone":
                raise _Gone
            if kind == "shutdown":
                raise _Shutdown
            if kind == "pod":
                self.pod = payload
            if kind == "exited":
                self._record_exit(payload)
        if self._active and self.pod["metadata"].get("deletionTimestamp"):
            raise _Deleted
        left = self._deadline_left()
        if left is not None and left <= 0:
            raise _DeadlineExceeded
        self._refresh_tokens()
        return event

    def _sleep(self, seconds: float) -> None:
        """Wait, handling events (so deletion and deadlines still interrupt)."""
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            self._next(left)

    def _deadline_left(self) -> float | None:
        seconds = (self.pod.get("spec") or {}).get("activeDeadlineSeconds")
        if not self._active or seconds is None or self.view.start_time is None:
            return None
        elapsed = (utcnow() - self.view.start_time).total_seconds()
        return float(seconds) - elapsed

    # -- setup --------------------------------------------------------------------------------

    def _setup(self) -> bool:
        """Volumes and status; False if the pod cannot run here (it is then Failed)."""
        self._next(0)  # deleted or past its deadline already?
        start = (self.pod.get("status") or {}).get("startTime")
        self.view.start_time = parse_rfc3339(start) if start else utcnow()
        self._push_status()
        pod_volumes = (self.pod.get("spec") or {}).get("volumes") or []
        try:
            planned = volumes.PodVolumes.plan(self.dir, pod_volumes)
        except volumes.UnsupportedVolume as exc:
            self._fail_pod(exc.reason, str(exc))
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._create_sandbox()
        except OSError as exc:
            self._fail_pod("SandboxCreationFailed",
                           f"the local node could not create the pod's sandbox: {exc}")
            return False
        while True:
            try:
                self._fetch_sources()
                if self.volumes is None:
                    planned.create(pod_volumes)
                    self.volumes = planned
                for volume in pod_volumes:
                    if volumes.volume_kind(volume) in volumes.PROJECTED_KINDS:
                        self._write_volume(volume)
                break
            except (envmod.ConfigError, KubeError, OSError) as exc:
                message = f"MountVolume.SetUp failed: {exc}"
                log.warning("pod %s: %s", self.key, message)
                for record in self.view.init[:1] + self.view.containers:
                    if record.waiting_reason == "ContainerCreating":
                        record.waiting_message = message
                self._push_status()
                self._sleep(SETUP_RETRY_SECONDS)
        for record in self.view.init[:1] + self.view.containers:
            record.waiting_message = ""
        self.view.sandbox_ready = True
        self._push_status()
        return True

    def _create_sandbox(self) -> None:
        """The pod's network namespace with its forwarded ports, and its PIDs cgroup."""
        ports = network.forwarded_ports(self.pod)
        refused = ports & self.ctx.never_forwarded
        if refused:
            log.warning("pod %s: not forwarding %s (the control plane's own ports)", self.key,
                        ", ".join(str(p) for p in sorted(refused)))
        self.network = PodNetwork.create(self.key, ports - refused)
        if self.ctx.cgroups is not None:
            self.pod_cgroup = self.ctx.cgroups.create_pod(self.uid, self.ctx.pids_limit)

    def _fetch_sources(self) -> None:
        env_secrets, env_maps = envmod.referenced_objects(self.pod)
        vol_secrets, vol_maps = volumes.referenced_objects(self.pod)
        base = f"/api/v1/namespaces/{self.namespace}"
        self.sources = envmod.Sources(
            self.namespace,
            secrets={n: decode_data(self.ctx.kube.get_or_none(f"{base}/secrets/{n}"))
                     for n in env_secrets | vol_secrets if n},
            config_maps={n: decode_data(self.ctx.kube.get_or_none(f"{base}/configmaps/{n}"))
                         for n in env_maps | vol_maps if n},
        )

    def _token(self, audience: str | None, expiration: int) -> volumes.Token:
        account = (self.pod.get("spec") or {}).get("serviceAccountName") or "default"
        return self.ctx.kube.token(self.namespace, account, self.name, self.uid, audience,
                                   expiration)

    def _write_volume(self, volume: Obj) -> None:
        assert self.volumes is not None
        issued_at = utcnow()
        files, tokens = volumes.render(
            volume, self.pod, self.sources, self._token, allocatable=self.ctx.allocatable,
            token_owner=volumes.token_owner(self.pod),
        )
        fs_group = ((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        volumes.write_atomic(self.volumes.dirs[volume["name"]], files, fs_group=fs_group)
        refresh = volumes.refresh_at(issued_at, tokens)
        if refresh is not None:
            self._token_due[volume["name"]] = refresh

    def _refresh_tokens(self) -> None:
        now = utcnow()
        for name, due in list(self._token_due.items()):
            if due > now:
                continue
            volume = next(v for v in self.pod["spec"].get("volumes") or [] if v["name"] == name)
            try:
                self._write_volume(volume)
                log.info("pod %s: refreshed the token(s) in volume %s", self.key, name)
            except Exception as exc:
                log.warning("pod %s: token refresh for %s failed: %s", self.key, name, exc)
                self._token_due[name] = now + dt.timedelta(seconds=10)

    # -- running containers ------------------------------------------------------------------

    def _container_spec(self, name: str) -> Obj:
        spec = self.pod.get("spec") or {}
        for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            if container["name"] == name:
                return dict(container)
        raise KeyError(name)

    def _record(self, name: str) -> status.ContainerRecord:
        return next(r for r in self.view.init + self.view.containers if r.name == name)

    def _start(self, name: str) -> None:
        """Start the container, retrying while its configuration cannot be resolved."""
        container = self._container_spec(name)
        record = self._record(name)
        while True:
            try:
                self._fetch_sources()
                who = podspec.identity(self.pod, container)
                kube_env = envmod.resolve_env(container, self.pod, self.sources,
                                              service=self.ctx.service_env,
                                              allocatable=self.ctx.allocatable)
                mounts = volumes.container_mounts(
                    container, self.volumes.dirs if self.volumes else {},
                    self.volumes.read_only if self.volumes else frozenset(), kube_env)
                break
            except envmod.ConfigError as exc:
                record.waiting_reason = exc.reason
                record.waiting_message = str(exc)
                self._push_status()
                self._sleep(SETUP_RETRY_SECONDS)
            except KubeError as exc:  # the API is briefly unavailable: try again
                log.warning("pod %s: cannot read %s's references: %s", self.key, name, exc)
                self._sleep(SETUP_RETRY_SECONDS)
        argv = envmod.command_line(container, kube_env)
        record.container_id = f"{status.RUNTIME_PREFIX}{uuid.uuid4().hex}"
        if not argv:
            # No image, so no entrypoint to fall back on.
            record.terminated = status.Terminated(
                exit_code=128, reason="StartError", finished_at=utcnow(),
                container_id=record.container_id,
                message=("the local node runs no images: the container needs a command "
                         "(an image's entrypoint cannot be used)"),
            )
            self._push_status()
            return
        image_runtime = []
        image = container.get("image") or ""
        if (major := podspec.node_major(image)) is not None:
            try:
                image_runtime.append(str(self.ctx.node_runtime(major)))
            except ToolchainError as exc:
                record.terminated = status.Terminated(
                    exit_code=128, reason="StartError", finished_at=utcnow(),
                    container_id=record.container_id,
                    message=f"the local node has no Node.js {major} for image {image}: {exc}",
                )
                self._push_status()
                return
        process_env = podspec.base_env(self.pod, who.uid, str(Path(sys.executable).parent),
                                       first=tuple(f"{d}/bin" for d in image_runtime))
        process_env.update(kube_env)
        attempt = record.restart_count
        spec = ContainerSpec(
            name=name,
            cgroup_name=f"{self.uid}_{name}_{attempt}",
            state_dir=self.dir / "containers" / f"{name}-{attempt}",
            log_path=self._log_path(name, attempt),
            pid_file=self.dir / "pids" / name,
            argv=argv,
            env=process_env,
            working_dir=container.get("workingDir") or None,
            uid=who.uid,
            gid=who.gid,
            groups=who.groups,
            mounts=mounts,
            read_only_root=who.read_only_root,
            termination_message_path=(container.get("terminationMessagePath")
                                      or DEFAULT_TERMINATION_MESSAGE_PATH),
            memory_limit=podspec.memory_limit(container),
            pod_cgroup=self.pod_cgroup,
            netns_fd=self.network.fd if self.network is not None else None,
            hidden=list(self.ctx.hidden),
            image_runtime=image_runtime,
        )
        process = Container(spec, self.ctx.cgroups,
                            on_exit=lambda done: self.events.put(("exited", done)))
        self.running[name] = process
        process.start()
        process.running.wait(30)
        if process.pid is not None:
            record.started_at = utcnow()
            record.waiting_reason = ""
            record.waiting_message = ""
            log.info("pod %s: container %s running (pid %d)", self.key, name, process.pid)
        self._push_status()

    def _log_path(self, name: str, attempt: int) -> Path:
        return self.dir / "logs" / name / f"{attempt}.log"

    def _record_exit(self, process: Container) -> None:
        name = process.spec.name
        if self.running.get(name) is not process or process.result is None:
            return  # already recorded
        del self.running[name]
        record = self._record(name)
        result = process.result
        now = utcnow()
        if result.start_error is not None:
            record.terminated = status.Terminated(
                exit_code=result.exit_code, reason="StartError", finished_at=now,
                message=result.start_error, container_id=record.container_id)
        else:
            container = self._container_spec(name)
            log_path = process.spec.log_path
            message = status.termination_message(
                process.termination_file,
                container.get("terminationMessagePolicy"),
                result.exit_code,
                lambda: status.fallback_log_tail(logs.content_lines(log_path)),
            )
            record.terminated = status.Terminated(
                exit_code=result.exit_code,
                reason=status.exit_reason(result.exit_code, result.oom_killed),
                finished_at=now,
                started_at=record.started_at,
                message=message,
                container_id=record.container_id,
                signal=result.signal,
            )
        log.info("pod %s: container %s exited with %d (%s)", self.key, name,
                 record.terminated.exit_code, record.terminated.reason)

    def _wait_exit(self, name: str) -> None:
        record = self._record(name)
        while record.terminated is None:
            self._next(None)

    def _run_init_containers(self) -> bool:
        """Run each init container to success, in order; False if the pod failed."""
        for index, record in enumerate(self.view.init):
            record.waiting_reason = "ContainerCreating"
            while True:
                self._start(record.name)
                self._wait_exit(record.name)
                self._push_status()
                assert record.terminated is not None
                if record.succeeded:
                    break
                if not podspec.should_restart(self.view.restart_policy,
                                              record.terminated.exit_code):
                    return False
                record.begin_restart()
                self._push_status()
                self._sleep(podspec.backoff(record.restart_count))
            if index + 1 < len(self.view.init):
                self.view.init[index + 1].waiting_reason = "ContainerCreating"
        for record in self.view.containers:
            record.waiting_reason = "ContainerCreating"
        return True

    def _run_containers(self) -> None:
        """Start every container; restart per restartPolicy; return once none will run."""
        for record in self.view.containers:
            self._start(record.name)
        restart_at: dict[str, float] = {}
        while True:
            for record in self.view.containers:
                if (record.terminated is not None and record.name not in restart_at
                        and podspec.should_restart(self.view.restart_policy,
                                                   record.terminated.exit_code)):
                    record.begin_restart()
                    restart_at[record.name] = time.monotonic() + podspec.backoff(
                        record.restart_count)
            self._push_status()
            now = time.monotonic()
            for name, when in list(restart_at.items()):
                if when <= now:
                    del restart_at[name]
                    self._start(name)
            if not restart_at and all(r.terminated is not None for r in self.view.containers):
                return
            wait = min(restart_at.values()) - now if restart_at else None
            self._next(max(wait, 0) if wait is not None else None)

    # -- ending -----------------------------------------------------------------------------

    def _deletion_grace(self) -> float:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        return float(self._termination_grace() if grace is None else grace)

    def _termination_grace(self) -> float:
        grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE_SECONDS if grace is None else grace)

    def _kill_all(self, grace: float) -> None:
        """Stop every running container at once (SIGTERM, ``grace``, SIGKILL)."""
        stoppers = [threading.Thread(target=c.stop, args=(grace,), daemon=True)
                    for c in self.running.values()]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(grace + 15)
        for process in list(self.running.values()):
            self._record_exit(process)

    def _terminate(self, grace: float, *, deadline: bool) -> None:
        self._active = False
        self._kill_all(grace)
        now = utcnow()
        for record in self.view.init + self.view.containers:
            if record.terminated is None and (record.started_at is not None
                                              or record.last_terminated is not None):
                # Should not happen (we just stopped it), but never report it as running.
                record.terminated = status.Terminated(137, "Error", now, record.started_at,
                                                      container_id=record.container_id)
            elif record.terminated is None:
                record.terminated = status.Terminated(
                    137, "ContainerStatusUnknown", now,
                    message="The container could not be located when the pod was terminated")
        if deadline:
            self.view.final_phase = "Failed"
            self.view.reason = status.DEADLINE_REASON
            self.view.message = status.DEADLINE_MESSAGE
        else:
            records = self.view.init + self.view.containers
            ok = all(r.succeeded for r in records)
            self.view.final_phase = "Succeeded" if ok else "Failed"
        self._push_status()

    def _fail_pod(self, reason: str, message: str) -> None:
        log.warning("pod %s: %s", self.key, message)
        self.view.final_phase = "Failed"
        self.view.reason = reason
        self.view.message = message
        if self.view.start_time is None:
            self.view.start_time = utcnow()
        self._push_status()

    def _started_elsewhere(self) -> bool:
        """The API shows containers started, but this node has no record: it restarted."""
        pod_status = self.pod.get("status") or {}
        for item in (pod_status.get("containerStatuses") or []) + (
                pod_status.get("initContainerStatuses") or []):
            state = item.get("state") or {}
            if "running" in state or "terminated" in state:
                return True
        return False

    def _mark_lost(self) -> None:
        start = (self.pod.get("status") or {}).get("startTime")
        self.view.start_time = parse_rfc3339(start) if start else utcnow()
        now = utcnow()
        for record in self.view.init + self.view.containers:
            record.terminated = status.Terminated(
                137, "ContainerStatusUnknown", now,
                message="The container could not be located when the pod was terminated")
        self._fail_pod("NodeRestarted",
                       "the local node restarted and lost this pod's processes")

    def _release(self) -> None:
        """Unmount the pod's volumes, stop its relays, drop its network namespace and PIDs
        cgroup (its logs stay until the pod is removed)."""
        self._token_due.clear()
        if self.volumes is not None:
            self.volumes.teardown()
            self.volumes = None
        if self.network is not None:
            self.network.close()
            self.network = None
        if self.pod_cgroup is not None and self.ctx.cgroups is not None:
            self.ctx.cgroups.remove(self.pod_cgroup)
            self.pod_cgroup = None

    def _await_removal(self) -> None:
        """The pod is finished: once deleted, remove it with grace 0; return when gone."""
        while True:
            meta = self.pod["metadata"]
            if meta.get("deletionTimestamp") and not self._delete_sent:
                self._delete_sent = True
                try:
                    self.ctx.kube.request(
                        "DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                        body={"apiVersion": "v1", "kind": "DeleteOptions",
                              "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
                except KubeError as exc:
                    if exc.status not in (404, 409):
                        log.warning("pod %s: delete failed: %s", self.key, exc)
                        self._delete_sent = False
                        self._sleep(1)
            self._next(None)

    # -- status -----------------------------------------------------------------------------

    def _push_status(self) -> None:
        previous = (self.pod.get("status") or {}).get("conditions") or []
        built = status.pod_status(self.view, previous, utcnow())
        if built == self._pushed:
            return
        try:
            updated = self.ctx.kube.request(
                "PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                body={"metadata": {"uid": self.uid}, "status": built},
                content_type=STRATEGIC)
        except KubeError as exc:
            if exc.status == 404:
                return  # gone; the watch will say so
            log.warning("pod %s: status update failed: %s", self.key, exc)
            return
        self._pushed = built
        with contextlib.suppress(KeyError, TypeError):
            self.pod["status"] = updated["status"]

    # -- logs -------------------------------------------------------------------------------

    def find_log(self, container: str, previous: bool) -> LogHandle:
        try:
            record = self._record(container)
        except StopIteration:
            raise LogNotFound(f'container "{container}" is not valid for pod '
                              f'"{self.name}"') from None
        attempt = record.restart_count - 1 if previous else record.restart_count
        if not previous and record.container_id == "" and record.last_terminated is not None:
            attempt = record.restart_count - 1  # waiting to restart: show the last run
        path = self._log_path(container, attempt)
        if attempt < 0 or not path.exists():
            if previous:
                raise LogNotFound(f'previous terminated container "{container}" in pod '
                                  f'"{self.name}" not found', 400)
            reason = record.waiting_reason or "ContainerCreating"
            raise LogNotFound(f'container "{container}" in pod "{self.name}" is waiting to '
                              f'start: {reason}', 400)
        process = self.running.get(container)

        def still_writing() -> bool:
            return (process is not None and process.spec.log_path == path
                    and process.log_open)

        return LogHandle(path, still_writing)
