"""Pod status as the kubelet reports it, built from the node's own records. Pure.

The worker keeps one ``ContainerRecord`` per container and a ``PodView`` per pod; these
functions turn them into the ``status`` dict that is patched onto the pod. Phase rules follow
the kubelet's ``getPhase``; condition reasons and messages use the kubelet's words so tools
and controllers (the Job controller above all) see what they expect.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devkit.localnode.objects import NODE_IP, POD_IP, Obj, rfc3339

RUNTIME_PREFIX = "localnode://"

# kubelet: MaxContainerTerminationMessageLength, ...LogLines, ...LogLength
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str  # Completed, Error, OOMKilled, StartError, ...
    finished_at: dt.datetime
    started_at: dt.datetime | None = None
    message: str = ""
    container_id: str = ""
    signal: int | None = None


@dataclass
class ContainerRecord:
    """What the node knows about one container (its current and previous run)."""

    name: str
    image: str = ""
    container_id: str = ""
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    started_at: dt.datetime | None = None
    terminated: Terminated | None = None
    last_terminated: Terminated | None = None
    restart_count: int = 0

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.terminated is None

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated.exit_code == 0

    def begin_restart(self) -> None:
        """Move the finished run to ``lastState`` and wait for the next one."""
        self.last_terminated = self.terminated
        self.terminated = None
        self.started_at = None
        self.container_id = ""
        self.restart_count += 1
        self.waiting_reason = "CrashLoopBackOff"
        self.waiting_message = ""


@dataclass
class PodView:
    restart_policy: str
    init: list[ContainerRecord]
    containers: list[ContainerRecord]
    sandbox_ready: bool = False
    start_time: dt.datetime | None = None
    # Set when the node ends the pod itself (deadline, deletion): the phase it ends in.
    final_phase: str | None = None
    reason: str | None = None
    message: str | None = None
    generation: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _terminated_dict(t: Terminated) -> Obj:
    out: Obj = {
        "exitCode": t.exit_code,
        "reason": t.reason,
        "finishedAt": rfc3339(t.finished_at),
    }
    # Like the kubelet: a container that never started has no startedAt.
    if t.started_at is not None:
        out["startedAt"] = rfc3339(t.started_at)
    if t.message:
        out["message"] = t.message
    if t.container_id:
        out["containerID"] = t.container_id
    if t.signal:
        out["signal"] = t.signal
    return out


def container_status(record: ContainerRecord) -> Obj:
    state: Obj
    if record.terminated is not None:
        state = {"terminated": _terminated_dict(record.terminated)}
    elif record.started_at is not None:
        state = {"running": {"startedAt": rfc3339(record.started_at)}}
    else:
        waiting: Obj = {"reason": record.waiting_reason}
        if record.waiting_message:
            waiting["message"] = record.waiting_message
        state = {"waiting": waiting}
    created = bool(record.container_id) or record.last_terminated is not None
    out: Obj = {
        "name": record.name,
        "image": record.image,
        "imageID": f"{RUNTIME_PREFIX}{record.image}" if created else "",
        "ready": record.running,
        "started": record.running,
        "restartCount": record.restart_count,
        "state": state,
        "lastState": (
            {"terminated": _terminated_dict(record.last_terminated)}
            if record.last_terminated is not None
            else {}
        ),
    }
    if record.container_id:
        out["containerID"] = record.container_id
    return out


def pod_phase(
    restart_policy: str, init: Sequence[ContainerRecord], containers: Sequence[ContainerRecord]
) -> str:
    """The kubelet's ``getPhase`` for the states the local node produces."""
    pending_init = failed_init = 0
    for record in init:
        if record.succeeded:
            continue
        restarting_after_failure = (
            not record.running
            and record.last_terminated is not None
            and record.last_terminated.exit_code != 0
        )
        if record.terminated is not None or restarting_after_failure:
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Pending"

    running = waiting = stopped = succeeded = 0
    for record in containers:
        if record.running:
            running += 1
        elif record.terminated is not None:
            stopped += 1
            succeeded += record.succeeded
        elif record.last_terminated is not None:  # waiting to restart
            stopped += 1
            succeeded += record.last_terminated.exit_code == 0
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    kind: str,
    ok: bool,
    previous: Mapping[str, Obj],
    now: dt.datetime,
    generation: int | None,
    reason: str = "",
    message: str = "",
) -> Obj:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = rfc3339(now)
    if before is not None and before.get("status") == status:
        since = before.get("lastTransitionTime") or since
    out: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since,
        # Explicit nulls: the status patch merges conditions, so an omitted key would keep
        # an outdated reason or message.
        "reason": reason or None,
        "message": message or None,
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def pod_conditions(
    view: PodView, phase: str, previous: Sequence[Obj], now: dt.datetime
) -> list[Obj]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready.

    PodScheduled (the scheduler's) and DisruptionTarget (the controllers') are not ours:
    the status patch merges conditions by type, so they stay as they are.
    """
    prev = {c.get("type", ""): c for c in previous}
    gen = view.generation
    terminal = phase in ("Succeeded", "Failed")

    unfinished = [r.name for r in view.init if not r.succeeded]
    init_args: tuple[str, ...] = ()
    if unfinished:
        init_args = ("ContainersNotInitialized",
                     f"containers with incomplete status: [{' '.join(unfinished)}]")
    initialized = _condition("Initialized", not unfinished, prev, now, gen, *init_args)

    unready = [r.name for r in view.containers if not r.running]
    if not unready and not terminal:
        ready_args: tuple[str, ...] = ()
    elif terminal:
        ready_args = ("PodCompleted",)
    else:
        ready_args = ("ContainersNotReady",
                      f"containers with unready status: [{' '.join(unready)}]")
    ok = not unready and not terminal
    return [
        _condition("PodReadyToStartContainers", view.sandbox_ready and not terminal, prev, now,
                   gen),
        initialized,
        _condition("ContainersReady", ok, prev, now, gen, *ready_args),
        _condition("Ready", ok, prev, now, gen, *ready_args),
    ]


def pod_status(view: PodView, previous_conditions: Sequence[Obj], now: dt.datetime) -> Obj:
    phase = view.final_phase or pod_phase(view.restart_policy, view.init, view.containers)
    status: Obj = {
        "phase": phase,
        "conditions": pod_conditions(view, phase, previous_conditions, now),
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "containerStatuses": [container_status(r) for r in view.containers],
    }
    if view.init:
        status["initContainerStatuses"] = [container_status(r) for r in view.init]
    if view.sandbox_ready:
        status["podIP"] = POD_IP
        status["podIPs"] = [{"ip": POD_IP}]
    if view.start_time is not None:
        status["startTime"] = rfc3339(view.start_time)
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    if view.generation is not None:
        status["observedGeneration"] = view.generation
    status.update(view.extra)
    return status


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def termination_message(
    file_tail: bytes,
    policy: str | None,
    exit_code: int,
    log_tail: Callable[[], str],
) -> str:
    """The kubelet's rule: the file's last 4096 bytes if it has any; otherwise, with
    ``FallbackToLogsOnError`` and a failed container, the end of the log."""
    text = file_tail[-MAX_MESSAGE_BYTES:].decode("utf-8", errors="replace")
    if text:
        return text
    if policy == "FallbackToLogsOnError" and exit_code != 0:
        return log_tail()
    return ""


def fallback_log_tail(lines: Sequence[str]) -> str:
    """The last 80 lines, cut to their last 2048 bytes (the end holds the error)."""
    text = "".join(lines[-FALLBACK_LOG_LINES:])
    data = text.encode("utf-8", errors="replace")
    if len(data) > FALLBACK_LOG_BYTES:
        data = data[-FALLBACK_LOG_BYTES:]
    return data.decode("utf-8", errors="ignore")
