"""The run state machine, table-driven; backoff; the gate; outcome classification; the runner's
error classes and termination message."""

from __future__ import annotations

import json
import urllib.error
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docrelay.models.integration import IntegrationStatus, RetryPolicy
from docrelay.models.run import ErrorClass, IntegrationRunSpec, IntegrationRunStatus, RunPhase
from docrelay.reconcile.run import (
    JobView,
    RevisionView,
    RunObserved,
    RunRef,
    attempt_outcome,
    backoff_seconds,
    count_finished,
    decide,
    may_start,
)
from docrelay.runner import contract
from docrelay.runner.contract import Outcome, classify, parse_outcome
from docrelay.runner.main import Context, call_with_deadline, exit_code

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = IntegrationRunSpec.model_validate(
    {
        "integration": "orders",
        "documentIdentifier": "doc-1",
        "trigger": "DocumentParseCompleted",
        "eventId": "evt-1",
        "idempotencyKey": "idem-" + "0" * 48,
    }
)
REVISION = RevisionView("orders-abc", "orders-abc-code", "handler.py")


def observed(phase: RunPhase | None = None, attempt: int = 0, **kw: Any) -> RunObserved:
    status_fields = kw.pop("status", {})
    spec = kw.pop("spec", SPEC)
    status = IntegrationRunStatus(
        phase=phase,
        attempt=attempt,
        job_name=(f"run-{attempt}" if attempt else None),
        **status_fields,
    )
    defaults: dict[str, Any] = {
        "name": "run",
        "created": NOW - timedelta(minutes=1),
        "generation": 1,
        "spec": spec,
        "status": status,
        "now": NOW,
        "deployed_revision": "orders-abc",
        "revision": REVISION,
        "may_start": True,
        "max_attempts": 3,
        "retry": RetryPolicy(max_attempts=3, backoff_base_seconds=10, backoff_cap_seconds=60),
        "jitter": 0.0,
    }
    defaults.update(kw)
    return RunObserved(**defaults)


def message(status: str, error_class: str | None = None, **extra: str) -> str:
    return Outcome(status, error_class, extra.get("kind"), extra.get("msg")).to_json()


TERMINATED_OK = JobView(terminated=True, exit_code=0, message=message("Succeeded"), pod_name="p")


@pytest.mark.parametrize(
    ("case", "given", "phase", "start", "finished"),
    [
        ("new run starts", observed(), RunPhase.PENDING, 1, None),
        ("gate closed: queued", observed(may_start=False), RunPhase.QUEUED, None, None),
        ("suspended: queued", observed(suspended=True), RunPhase.QUEUED, None, None),
        ("paused: queued", observed(paused=True), RunPhase.QUEUED, None, None),
        (
            "paused, but a test run goes",
            observed(paused=True, spec=SPEC.model_copy(update={"test": True})),
            RunPhase.PENDING,
            1,
            None,
        ),
        ("no deployed revision yet", observed(deployed_revision=None), RunPhase.QUEUED, None, None),
        (
            "a named revision that does not exist",
            observed(spec=SPEC.model_copy(update={"revision": "orders-zzz"}), revision=None),
            RunPhase.FAILED,
            None,
            RunPhase.FAILED,
        ),
        (
            "backoff not over",
            observed(RunPhase.QUEUED, 1, status={"next_attempt_at": NOW + timedelta(seconds=9)}),
            RunPhase.QUEUED,
            None,
            None,
        ),
        (
            "backoff over: attempt 2",
            observed(RunPhase.QUEUED, 1, status={"next_attempt_at": NOW}),
            RunPhase.PENDING,
            2,
            None,
        ),
        (
            "missing secret: waits, saying why (tests/unit/test_typos.py: the bound)",
            observed(config_problem="no usable IntegrationSecret for API_KEY"),
            RunPhase.QUEUED,
            None,
            None,
        ),
        (
            "pending, pod running",
            observed(RunPhase.PENDING, 1, job=JobView(running=True)),
            RunPhase.RUNNING,
            None,
            None,
        ),
        (
            "running, still running",
            observed(RunPhase.RUNNING, 1, job=JobView(running=True)),
            RunPhase.RUNNING,
            None,
            None,
        ),
        (
            "succeeded",
            observed(RunPhase.RUNNING, 1, job=TERMINATED_OK),
            RunPhase.SUCCEEDED,
            None,
            RunPhase.SUCCEEDED,
        ),
        (
            "code error: failed at once",
            observed(
                RunPhase.RUNNING,
                1,
                job=JobView(terminated=True, exit_code=1, message=message("Failed", "CodeError")),
            ),
            RunPhase.FAILED,
            None,
            RunPhase.FAILED,
        ),
        (
            "transient: retry scheduled",
            observed(
                RunPhase.RUNNING,
                1,
                job=JobView(
                    terminated=True, exit_code=3, message=message("Failed", "TransientError")
                ),
            ),
            RunPhase.QUEUED,
            None,
            None,
        ),
        (
            "transient on the last attempt: dead letter",
            observed(
                RunPhase.RUNNING,
                3,
                job=JobView(
                    terminated=True, exit_code=3, message=message("Failed", "TransientError")
                ),
            ),
            RunPhase.DEAD_LETTERED,
            None,
            RunPhase.DEAD_LETTERED,
        ),
        (
            "timeout on the last attempt",
            observed(
                RunPhase.RUNNING,
                3,
                job=JobView(terminated=True, exit_code=124, message=message("Failed", "Timeout")),
            ),
            RunPhase.TIMED_OUT,
            None,
            RunPhase.TIMED_OUT,
        ),
        (
            "test run: never retried",
            observed(
                RunPhase.RUNNING,
                1,
                spec=SPEC.model_copy(update={"test": True}),
                job=JobView(
                    terminated=True, exit_code=3, message=message("Failed", "TransientError")
                ),
            ),
            RunPhase.FAILED,
            None,
            RunPhase.FAILED,
        ),
        (
            "Job vanished",
            observed(RunPhase.RUNNING, 1, job=JobView(exists=False)),
            RunPhase.QUEUED,
            None,
            None,
        ),
        (
            "cancel while running",
            observed(
                RunPhase.RUNNING,
                1,
                spec=SPEC.model_copy(update={"cancel": True}),
                job=JobView(running=True),
            ),
            RunPhase.CANCELLED,
            None,
            RunPhase.CANCELLED,
        ),
        (
            "finished stays finished",
            observed(RunPhase.SUCCEEDED, 1),
            RunPhase.SUCCEEDED,
            None,
            None,
        ),
        (
            "integration deleted",
            observed(integration_found=False),
            RunPhase.FAILED,
            None,
            RunPhase.FAILED,
        ),
    ],
)
def test_state_machine(
    case: str, given: RunObserved, phase: RunPhase, start: int | None, finished: RunPhase | None
) -> None:
    decision = decide(given)
    assert decision.status.phase is phase, case
    assert decision.start_attempt == start, case
    assert decision.finished is finished, case
    assert decide(given) == decision  # deciding again changes nothing


def test_start_pins_revision_and_names_the_job() -> None:
    decision = decide(observed())
    assert decision.status.revision == "orders-abc"
    assert decision.status.job_name == "run-1"
    assert decision.status.start_time == NOW


def test_pinned_revision_wins_over_deployed() -> None:
    o = observed(
        RunPhase.QUEUED,
        1,
        status={"revision": "orders-abc", "next_attempt_at": NOW},
        deployed_revision="orders-new",
    )
    assert decide(o).status.revision == "orders-abc"


def test_retry_keeps_the_error_and_waits_the_backoff() -> None:
    o = observed(
        RunPhase.RUNNING,
        1,
        job=JobView(
            terminated=True,
            exit_code=3,
            pod_name="p",
            message=message("Failed", "TransientError", kind="X", msg="503 from downstream"),
        ),
    )
    decision = decide(o)
    assert decision.status.next_attempt_at == NOW + timedelta(seconds=5)  # 10 s, jitter 0
    assert decision.status.error_class is ErrorClass.TRANSIENT_ERROR
    assert decision.status.error_message == "503 from downstream"
    assert decision.collect and decision.delete_job == "run-1"
    assert decision.events[0][1] == "RetryScheduled"


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(2, 0.0, 5.0), (2, 1.0, 10.0), (3, 1.0, 20.0), (4, 1.0, 40.0), (5, 1.0, 60.0), (9, 0.5, 45.0)],
)
def test_backoff(attempt: int, jitter: float, expected: float) -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base_seconds=10, backoff_cap_seconds=60)
    assert backoff_seconds(policy, attempt, jitter) == expected


def ref(name: str, minute: int, phase: RunPhase | None = None, **kw: Any) -> RunRef:
    return RunRef(name, NOW + timedelta(minutes=minute), phase, **kw)


def test_gate_is_fifo_within_the_limit() -> None:
    runs = [ref("a", 0, RunPhase.RUNNING), ref("b", 1), ref("c", 2), ref("d", 3)]
    assert may_start("b", runs, 3, NOW) and may_start("c", runs, 3, NOW)
    assert not may_start("d", runs, 3, NOW)
    assert may_start("a", runs, 1, NOW)  # already active
    assert not may_start("b", runs, 3, NOW, busy={"x", "y"})  # Jobs without status count


def test_gate_skips_runs_waiting_for_backoff() -> None:
    runs = [ref("a", 0, RunPhase.QUEUED, next_attempt_at=NOW + timedelta(seconds=5)), ref("b", 1)]
    assert may_start("b", runs, 1, NOW)


@pytest.mark.parametrize(
    ("view", "error_class", "status"),
    [
        (JobView(terminated=True, exit_code=137, reason="OOMKilled"), "OutOfMemory", "Failed"),
        (JobView(failed_reason="DeadlineExceeded"), "Timeout", "Failed"),
        (JobView(terminated=True, exit_code=0), None, "Succeeded"),
        (JobView(terminated=True, exit_code=124), "Timeout", "Failed"),
        (JobView(terminated=True, exit_code=3), "TransientError", "Failed"),
        (JobView(terminated=True, exit_code=139), "InfrastructureError", "Failed"),
        (JobView(exists=False), "InfrastructureError", "Failed"),
        (JobView(terminated=True, exit_code=1, message="not json"), "CodeError", "Failed"),
    ],
)
def test_attempt_outcome(view: JobView, error_class: str | None, status: str) -> None:
    outcome = attempt_outcome(view)
    assert (outcome.status, outcome.error_class) == (status, error_class)


class Downstream(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code


class FakeResponse:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class HTTPStatusError(Exception):  # the shape of httpx's and requests' errors
    def __init__(self, status_code: int) -> None:
        super().__init__("bad status")
        self.response = FakeResponse(status_code)


class ConnectError(Exception):  # named like httpx.ConnectError
    pass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KeyError("total"), "CodeError"),
        (ValueError("bad"), "CodeError"),
        (Downstream(503), "TransientError"),
        (Downstream(429), "TransientError"),
        (Downstream(404), "CodeError"),
        (HTTPStatusError(502), "TransientError"),
        (HTTPStatusError(400), "CodeError"),
        (urllib.error.HTTPError("u", 500, "x", None, None), "TransientError"),  # type: ignore[arg-type]
        (urllib.error.HTTPError("u", 401, "x", None, None), "CodeError"),  # type: ignore[arg-type]
        (urllib.error.URLError("refused"), "TransientError"),
        (ConnectionResetError(), "TransientError"),
        (TimeoutError(), "TransientError"),
        (ConnectError("x"), "TransientError"),
        (MemoryError(), "OutOfMemory"),
        (FileNotFoundError("x"), "CodeError"),
    ],
)
def test_classify(exc: BaseException, expected: str) -> None:
    assert classify(exc) == expected


def test_termination_message_is_small_and_round_trips() -> None:
    outcome = Outcome("Failed", "TransientError", "httpx.ReadTimeout", "é" * 10000, "s" * 5000)
    text = outcome.to_json()
    assert len(text.encode()) <= contract.MAX_TERMINATION_BYTES
    parsed = parse_outcome(text)
    assert parsed is not None and parsed.error_class == "TransientError" and parsed.retryable
    assert json.loads(text)["v"] == 1


def test_unknown_error_class_is_not_trusted() -> None:
    parsed = parse_outcome('{"status":"Failed","errorClass":"PleaseRetryForever"}')
    assert parsed is not None and parsed.error_class == "CodeError"


def test_runner_deadline_and_exit_codes() -> None:
    def slow(event: Any, context: Any) -> None:
        import time

        time.sleep(5)

    outcome = call_with_deadline(slow, {}, Context("r", 1, 0.0), 0.2)
    assert outcome.error_class == "Timeout" and exit_code(outcome) == 124
    ok = call_with_deadline(lambda e, c: {"summary": "done"}, {}, Context("r", 1, 0.0), 1)
    assert ok.result_summary == "done" and exit_code(ok) == 0

    def broken(event: Any, context: Any) -> None:
        raise Downstream(503)

    failed = call_with_deadline(broken, {}, Context("r", 1, 0.0), 1)
    assert failed.error_class == "TransientError" and exit_code(failed) == 3


def test_counts_exclude_nothing_but_are_per_outcome() -> None:
    status = count_finished(IntegrationStatus(), "r1", RunPhase.DEAD_LETTERED, NOW)
    status = count_finished(status, "r2", RunPhase.FAILED, NOW)
    assert status.consecutive_failures == 2
    assert status.run_counts is not None and status.run_counts.dead_lettered == 1
    status = count_finished(status, "r3", RunPhase.SUCCEEDED, NOW)
    assert status.consecutive_failures == 0 and status.last_run is not None
    assert status.last_run.name == "r3"


def test_runner_loads_code_and_checks_its_hash(tmp_path: Any) -> None:
    import hashlib

    from docrelay.runner.main import run

    code = (
        "def lambda_handler(event, context):\n"
        "    return {'summary': event['document_identifier']}\n"
    )
    path = tmp_path / "handler.py"
    path.write_text(code)
    env = {
        contract.ENV_CODE_PATH: str(path),
        contract.ENV_EVENT: json.dumps({"document_identifier": "doc-9"}),
        contract.ENV_CODE_HASH: "sha256:" + hashlib.sha256(code.encode()).hexdigest(),
    }
    assert run(env) == Outcome("Succeeded", result_summary="doc-9")
    wrong = run({**env, contract.ENV_CODE_HASH: "sha256:" + "0" * 64})
    assert wrong.error_class == "ConfigurationError" and "codeHash" in (wrong.message or "")
    path.write_text("def handler(event, context):\n    pass\n")
    missing = run({**env, contract.ENV_CODE_HASH: ""})
    assert missing.error_class == "ConfigurationError"


def test_runner_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, docrelay.runner.main, docrelay.runner.envcrypt; "
        "print(sorted(m for m in ('kopf', 'kubernetes', 'pydantic', 'httpx', 'cryptography') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_pause_after_consecutive_failures_and_resume() -> None:
    from docrelay.reconcile.run import pause_if_due, resumed

    status = IntegrationStatus()
    for name in ("r1", "r2"):
        status = count_finished(status, name, RunPhase.FAILED, NOW)
    assert pause_if_due(status, 3, NOW, 1) == (status, False)
    assert pause_if_due(status, 0, NOW, 1) == (status, False)  # 0: never
    status = count_finished(status, "r3", RunPhase.DEAD_LETTERED, NOW)
    paused, now_paused = pause_if_due(status, 3, NOW, 1)
    assert now_paused
    (condition,) = [c for c in paused.conditions if c.type == "Paused"]
    assert condition.status.value == "True" and condition.reason == "ConsecutiveFailures"
    assert pause_if_due(count_finished(paused, "r4", RunPhase.FAILED, NOW), 3, NOW, 1)[1] is False
    again = resumed(paused, NOW, 1)
    assert again.consecutive_failures == 0
    assert [c.status.value for c in again.conditions if c.type == "Paused"] == ["False"]


def test_replay_selection_and_manifest() -> None:
    from docrelay.cli.replay import replay_manifest, select

    def item(name: str, phase: str, minutes_ago: int, **spec: Any) -> dict[str, Any]:
        created = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {**SPEC.model_dump(mode="json", by_alias=True, exclude_none=True), **spec},
            "status": {"phase": phase, "revision": "orders-abc"},
        }

    runs = [
        item("a", "DeadLettered", 90),
        item("b", "DeadLettered", 10),
        item("c", "Failed", 5),
        item("d", "Succeeded", 5),
        item("e", "DeadLettered", 5, test=True),
        item("f", "DeadLettered", 5, integration="other"),
    ]
    chosen = select(runs, "orders", ("DeadLettered",), timedelta(hours=1), None, NOW)
    assert [r["metadata"]["name"] for r in chosen] == ["b"]
    chosen = select(runs, "orders", ("DeadLettered", "Failed"), None, timedelta(minutes=8), NOW)
    assert [r["metadata"]["name"] for r in chosen] == ["a", "b"]
    pinned = replay_manifest(runs[1], "pinned")
    assert pinned["spec"]["replayOf"] == "b" and pinned["spec"]["revision"] == "orders-abc"
    assert pinned["spec"]["idempotencyKey"] == SPEC.idempotency_key
    assert pinned["metadata"]["name"] != "b"
    assert "revision" not in replay_manifest(runs[1], "current")["spec"]


def test_retention() -> None:
    from docrelay.models.integration import RunRetention
    from docrelay.reconcile.run import FinishedRun, runs_to_delete

    def finished(name: str, phase: RunPhase, minutes_ago: int) -> FinishedRun:
        return FinishedRun(name, phase, NOW - timedelta(minutes=minutes_ago))

    runs = [
        finished("s1", RunPhase.SUCCEEDED, 1),
        finished("s2", RunPhase.SUCCEEDED, 2),
        finished("s3", RunPhase.SUCCEEDED, 3),
        finished("f1", RunPhase.DEAD_LETTERED, 1),
        finished("f2", RunPhase.FAILED, 2),
        finished("old", RunPhase.FAILED, 60 * 24 * 3),
    ]
    policy = RunRetention(successful_runs=2, failed_runs=5, max_age_days=2)
    assert runs_to_delete(runs, policy, NOW) == ["old", "s3"]
    assert runs_to_delete(runs, RunRetention(), NOW) == []
