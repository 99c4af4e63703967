"""The local node reports pod status in the kubelet's shapes and words."""

from __future__ import annotations

import datetime as dt

import pytest

from devkit.localnode.status import (
    ContainerRecord,
    PodView,
    Terminated,
    container_status,
    exit_reason,
    fallback_log_tail,
    pod_phase,
    pod_status,
    termination_message,
)

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=7)


def waiting(name: str = "c") -> ContainerRecord:
    return ContainerRecord(name, "img")


def running(name: str = "c") -> ContainerRecord:
    return ContainerRecord(name, "img", container_id="localnode://1", started_at=T0)


def done(code: int, name: str = "c") -> ContainerRecord:
    return ContainerRecord(name, "img", container_id="localnode://1", started_at=T0,
                           terminated=Terminated(code, exit_reason(code, False), T1, T0))


def restarting(last_code: int, name: str = "c") -> ContainerRecord:
    record = done(last_code, name)
    record.begin_restart()
    return record


@pytest.mark.parametrize(
    ("policy", "init", "containers", "phase"),
    [
        ("Never", [], [waiting()], "Pending"),
        ("Never", [], [running()], "Running"),
        ("Never", [], [done(0)], "Succeeded"),
        ("Never", [], [done(1)], "Failed"),
        ("Never", [], [done(0, "a"), running("b")], "Running"),
        ("Never", [], [done(0, "a"), done(2, "b")], "Failed"),
        ("OnFailure", [], [done(0)], "Succeeded"),
        ("OnFailure", [], [restarting(1)], "Running"),
        ("Always", [], [done(0)], "Running"),
        ("Never", [running("i")], [waiting()], "Pending"),
        ("Never", [done(0, "i")], [running()], "Running"),
        ("Never", [done(1, "i")], [waiting()], "Failed"),
        ("OnFailure", [restarting(1, "i")], [waiting()], "Pending"),
    ],
)
def test_phase(policy: str, init: list[ContainerRecord], containers: list[ContainerRecord],
               phase: str) -> None:
    assert pod_phase(policy, init, containers) == phase


@pytest.mark.parametrize(
    ("record", "state"),
    [
        (waiting(), {"waiting": {"reason": "ContainerCreating"}}),
        (running(), {"running": {"startedAt": "2030-01-02T03:04:05Z"}}),
        (done(3), {"terminated": {"exitCode": 3, "reason": "Error",
                                  "startedAt": "2030-01-02T03:04:05Z",
                                  "finishedAt": "2030-01-02T03:04:12Z"}}),
    ],
)
def test_container_state(record: ContainerRecord, state: dict[str, object]) -> None:
    status = container_status(record)
    assert status["state"] == state
    assert status["ready"] is status["started"] is record.running


def test_container_status_fields_and_last_state() -> None:
    record = restarting(1)
    status = container_status(record)
    assert status["restartCount"] == 1
    assert status["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["imageID"] == "localnode://img"
    assert "containerID" not in status  # no current run


def test_pod_status_running() -> None:
    view = PodView("Never", [], [running()], sandbox_ready=True, start_time=T0, generation=1)
    status = pod_status(view, [], T1)
    assert status["phase"] == "Running"
    assert status["podIP"] == status["hostIP"] == "127.0.0.1"
    assert status["podIPs"] == [{"ip": "127.0.0.1"}]
    assert status["startTime"] == "2030-01-02T03:04:05Z"
    by_type = {c["type"]: c for c in status["conditions"]}
    assert {k: v["status"] for k, v in by_type.items()} == {
        "PodReadyToStartContainers": "True", "Initialized": "True",
        "ContainersReady": "True", "Ready": "True"}
    assert "PodScheduled" not in by_type  # the scheduler's, left alone


def test_pod_status_completed_and_transition_times_kept() -> None:
    before = pod_status(PodView("Never", [], [running()], sandbox_ready=True), [], T0)
    after = pod_status(PodView("Never", [], [done(0)], sandbox_ready=True),
                       before["conditions"], T1)
    conditions = {c["type"]: c for c in after["conditions"]}
    assert after["phase"] == "Succeeded"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "PodCompleted"
    assert conditions["Ready"]["message"] is None  # cleared, not merged from before
    assert conditions["Ready"]["lastTransitionTime"] == "2030-01-02T03:04:12Z"
    assert conditions["Initialized"]["lastTransitionTime"] == "2030-01-02T03:04:05Z"


def test_pending_conditions_name_the_containers() -> None:
    view = PodView("Never", [waiting("setup")], [waiting("main")])
    conditions = {c["type"]: c for c in pod_status(view, [], T0)["conditions"]}
    assert conditions["Initialized"]["reason"] == "ContainersNotInitialized"
    assert conditions["Initialized"]["message"] == "containers with incomplete status: [setup]"
    assert conditions["Ready"]["message"] == "containers with unready status: [main]"
    assert conditions["PodReadyToStartContainers"]["status"] == "False"


def test_deadline_status() -> None:
    view = PodView("Never", [], [done(143)], sandbox_ready=True, final_phase="Failed",
                   reason="DeadlineExceeded",
                   message="Pod was active on the node longer than the specified deadline")
    status = pod_status(view, [], T1)
    assert (status["phase"], status["reason"]) == ("Failed", "DeadlineExceeded")


@pytest.mark.parametrize(
    ("code", "oom", "reason"),
    [(0, False, "Completed"), (1, False, "Error"), (137, False, "Error"),
     (137, True, "OOMKilled")],
)
def test_exit_reason(code: int, oom: bool, reason: str) -> None:
    assert exit_reason(code, oom) == reason


LOG = ["line 1\n", "line 2\n", "Traceback: boom\n"]


@pytest.mark.parametrize(
    ("file", "policy", "code", "expected"),
    [
        (b"bye", "File", 1, "bye"),
        (b"bye", "FallbackToLogsOnError", 1, "bye"),  # the file wins when it has text
        (b"", "File", 1, ""),
        (b"", "FallbackToLogsOnError", 1, "line 1\nline 2\nTraceback: boom\n"),
        (b"", "FallbackToLogsOnError", 0, ""),  # only for a failed container
        (b"x" * 5000 + b"END", "File", 1, "x" * 4093 + "END"),  # the last 4096 bytes
        (b"", None, 2, ""),
    ],
)
def test_termination_message(file: bytes, policy: str | None, code: int,
                             expected: str) -> None:
    assert termination_message(file, policy, code, lambda: fallback_log_tail(LOG)) == expected


def test_fallback_keeps_the_last_80_lines_within_2048_bytes() -> None:
    lines = [f"{i:04d}\n" for i in range(200)]
    assert fallback_log_tail(lines) == "".join(lines[-80:])
    long_lines = [f"{i:04d}" + "x" * 95 + "\n" for i in range(80)]
    tail = fallback_log_tail(long_lines)
    assert len(tail.encode()) == 2048
    assert tail.endswith(long_lines[-1])
