"""A run's life as pure decisions: the concurrency gate, the outcome of an attempt, retries with
backoff, dead letters, and what the Integration's status counts. No I/O: handlers.runs
gathers what these functions read and carries out what they return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from docrelay.builders.run import RUN_LABEL
from docrelay.models.conditions import (
    READY,
    Condition,
    ConditionStatus,
    find_condition,
    set_condition,
)
from docrelay.models.integration import (
    DEFAULT_QUEUE_TIMEOUT,
    CountedRuns,
    Integration,
    IntegrationConditionType,
    IntegrationStatus,
    LastRun,
    RetryPolicy,
    RunCounts,
    RunRetention,
)
from docrelay.models.run import (
    MAX_ERROR_MESSAGE,
    ErrorClass,
    IntegrationRun,
    IntegrationRunSpec,
    IntegrationRunStatus,
    RunPhase,
)
from docrelay.naming import job_name
from docrelay.reconcile.integration import with_ready
from docrelay.runner import contract
from docrelay.runner.contract import Outcome, parse_outcome

ACTIVE_PHASES = frozenset({RunPhase.PENDING, RunPhase.RUNNING})
WAITING_PHASES = frozenset({None, RunPhase.QUEUED})
# How soon an unfinished run is looked at again without any event. Events do the work (a Job
# deleted wakes the oldest waiting runs; a change of the Integration or of one of its secrets
# wakes all of them; a Job's or pod's change drives its run): these are safety nets only.
POLL_SECONDS = 30.0  # waiting for a slot or a revision
# A new run the gate refuses is written Queued only if it still waits this long: a burst's runs
# mostly get a slot within moments, and the write would be one more status patch per run.
QUEUED_AFTER_SECONDS = 5.0
ACTIVE_POLL_SECONDS = 60.0  # Pending or Running: its Job's and pod's events drive it
PAUSED_POLL_SECONDS = 60.0  # suspended or paused: resuming is an event of the Integration
SECRET_POLL_SECONDS = 10.0  # how soon a run waiting for a secret looks again
RETRYABLE = frozenset(
    {
        ErrorClass.TRANSIENT_ERROR,
        ErrorClass.TIMEOUT,
        ErrorClass.OUT_OF_MEMORY,
        ErrorClass.INFRASTRUCTURE_ERROR,
    }
)
_EXIT_CLASSES = {code: cls for cls, code in contract.EXIT_CODES.items()}


# --- backoff --------------------------------------------------------------------------------


def backoff_seconds(policy: RetryPolicy, next_attempt: int, jitter: float) -> float:
    """The wait before `next_attempt` (2, 3, ...): base * 2^(n-2), at most the cap, with
    "equal jitter" (half fixed, half random; `jitter` in [0, 1]) so retries spread out."""
    delay = min(
        float(policy.backoff_cap_seconds),
        policy.backoff_base_seconds * 2.0 ** max(0, next_attempt - 2),
    )
    return delay / 2 + delay / 2 * min(1.0, max(0.0, jitter))


# --- the concurrency gate -------------------------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    """One run of an integration, as the gate sees it."""

    name: str
    created: datetime
    phase: RunPhase | None
    next_attempt_at: datetime | None = None


def may_start(
    name: str,
    runs: Iterable[RunRef],
    max_concurrency: int,
    now: datetime,
    busy: Iterable[str] = (),
) -> bool:
    """Whether run `name` may start its next attempt now: first in, first out among the runs
    that wait and are due, within `max_concurrency` active runs. `busy` names runs that own an
    unfinished Job whatever their status says (a crash between creating a Job and writing the
    status)."""
    runs = list(runs)
    active = {r.name for r in runs if r.phase in ACTIVE_PHASES} | set(busy)
    if name in active:
        return True
    free = max_concurrency - len(active)
    if free <= 0:
        return False
    due = sorted(
        (
            r
            for r in runs
            if r.phase in WAITING_PHASES and (r.next_attempt_at is None or r.next_attempt_at <= now)
        ),
        key=lambda r: (r.created, r.name),
    )
    return name in {r.name for r in due[:free]}


# --- what an attempt's Job and pod show -----------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """The Job of the current attempt and its pod, as far as the decisions need them."""

    exists: bool = True
    failed_reason: str | None = None  # the Job's Failed condition reason, e.g. DeadlineExceeded
    complete: bool = False
    pod_name: str | None = None
    pod_phase: str | None = None
    pod_reason: str | None = None  # e.g. DeadlineExceeded on the pod
    running: bool = False  # the container has started
    terminated: bool = False  # the container has ended
    exit_code: int | None = None
    reason: str | None = None  # the container's terminated reason, e.g. OOMKilled
    message: str | None = None  # the termination message

    @property
    def finished(self) -> bool:
        if self.terminated:
            return True
        if self.pod_phase in ("Succeeded", "Failed"):
            return True
        # The Job ended and its pod is gone (the Job controller deletes it on a deadline).
        return (self.failed_reason is not None or self.complete) and self.pod_name is None


def view_of(
    job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], container_name: str
) -> JobView:
    """What the attempt's Job (None: gone) and its pods show of the container's fate."""
    if job is None:
        return JobView(exists=False)
    conditions = {
        c["type"]: c
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    failed_reason = failed.get("reason") if failed else None
    complete = "Complete" in conditions or "SuccessCriteriaMet" in conditions
    if not pods:
        return JobView(exists=True, failed_reason=failed_reason, complete=complete)
    pod = pods[0]
    status = pod.get("status") or {}
    container: Mapping[str, Any] = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == container_name),
        {},
    )
    state = container.get("state") or {}
    terminated = state.get("terminated")
    return JobView(
        exists=True,
        failed_reason=failed_reason,
        complete=complete,
        pod_name=pod["metadata"]["name"],
        pod_phase=status.get("phase"),
        pod_reason=status.get("reason"),
        running="running" in state or terminated is not None,
        terminated=terminated is not None,
        exit_code=terminated.get("exitCode") if terminated else None,
        reason=terminated.get("reason") if terminated else None,
        message=terminated.get("message") if terminated else None,
    )


def run_finished(raw: Mapping[str, Any] | None) -> bool:
    """Whether the run (as the API or the cache has it) is in a final phase: nothing left to
    drive from its own events (a Job it still owns has events of its own)."""
    phase = ((raw or {}).get("status") or {}).get("phase")
    try:
        return bool(phase) and RunPhase(str(phase)).finished
    except ValueError:
        return False


def container_ended(pod: Mapping[str, Any], container_name: str) -> bool:
    """Whether the run's container in this pod has terminated: its run can finish now, before
    the Job controller (which batches) marks the Job Complete or Failed."""
    return any(
        c.get("name") == container_name and "terminated" in (c.get("state") or {})
        for c in (pod.get("status") or {}).get("containerStatuses") or []
    )


def waiting_may_change(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether a change of an Integration can change what its waiting runs wait for: its spec
    (suspend, maxConcurrency, secrets, ...), its deployed revision, or Paused. Its counters
    and the like do not: runs are not woken for those."""
    if old is None:
        return True

    def paused(obj: Mapping[str, Any]) -> object:
        conditions = (obj.get("status") or {}).get("conditions") or []
        return next((c.get("status") for c in conditions if c.get("type") == "Paused"), None)

    return (
        old.get("spec") != new.get("spec")
        or (old.get("status") or {}).get("deployedRevision")
        != (new.get("status") or {}).get("deployedRevision")
        or paused(old) != paused(new)
    )


def attempt_outcome(view: JobView) -> Outcome:
    """What ended the attempt: the runner's message first; then OOMKilled, the deadline, the
    exit code."""
    if view.reason == "OOMKilled":
        return Outcome(
            "Failed",
            ErrorClass.OUT_OF_MEMORY,
            "OOMKilled",
            "the run used more memory than its limit and was killed (OOMKilled); raise "
            "spec.resources.limits.memory or use less memory",
        )
    reported = parse_outcome(view.message)
    if reported is not None:
        return reported
    if view.failed_reason == "DeadlineExceeded" or view.pod_reason == "DeadlineExceeded":
        return Outcome(
            "Failed",
            ErrorClass.TIMEOUT,
            "DeadlineExceeded",
            "the run was stopped at its deadline (timeoutSeconds)",
        )
    if view.exit_code == 0 or (view.complete and view.exit_code is None):
        return Outcome("Succeeded")
    if view.exit_code is not None and view.exit_code in _EXIT_CLASSES:
        return Outcome(
            "Failed",
            _EXIT_CLASSES[view.exit_code],
            None,
            f"the runner exited with code {view.exit_code} and no message",
        )
    if view.exit_code is not None:
        return Outcome(
            "Failed",
            ErrorClass.INFRASTRUCTURE_ERROR,
            None,
            f"the run's container exited with code {view.exit_code} without a result",
        )
    return Outcome(
        "Failed",
        ErrorClass.INFRASTRUCTURE_ERROR,
        None,
        "the run's Job or pod disappeared before it reported a result",
    )


# --- the state machine ----------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionView:
    name: str
    config_map: str
    key: str


@dataclass(frozen=True)
class RunObserved:
    name: str
    created: datetime
    generation: int | None
    spec: IntegrationRunSpec
    status: IntegrationRunStatus
    now: datetime
    integration_found: bool = True
    suspended: bool = False
    paused: bool = False
    deployed_revision: str | None = None
    max_attempts: int = 3
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The revision to run, if it exists (None: not found or not known yet).
    revision: RevisionView | None = None
    may_start: bool = False
    job: JobView | None = None  # of status.attempt, when Pending or Running
    jitter: float = 0.5
    # Why the run cannot start at all (e.g. a secret it needs is missing); ours, no values.
    config_problem: str | None = None
    # How long it may wait for what it cannot start without (spec.queueTimeoutSeconds).
    queue_timeout_seconds: int = DEFAULT_QUEUE_TIMEOUT


@dataclass(frozen=True)
class RunDecision:
    status: IntegrationRunStatus
    start_attempt: int | None = None  # create the Secret and Job of this attempt
    collect: bool = False  # read, mask and store the current attempt's log
    delete_job: str | None = None  # after collecting
    finished: RunPhase | None = None  # the run reached this final phase now
    requeue_after: float | None = None
    events: tuple[tuple[str, str, str], ...] = ()  # (type, reason, message), ours only


def wanted_revision(observed: RunObserved) -> str | None:
    """The revision the next attempt runs: pinned at the first attempt, else the run's own
    choice, else the integration's deployed one."""
    return observed.status.revision or observed.spec.revision or observed.deployed_revision


def _ready(status: IntegrationRunStatus, phase: RunPhase, message: str, o: RunObserved) -> list:
    ok = phase is RunPhase.SUCCEEDED
    condition = Condition(
        type=READY,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        observed_generation=o.generation,
        last_transition_time=o.now,
        reason=phase.value,
        message=message,
    )
    return set_condition(status.conditions, condition, o.now)


def _with(o: RunObserved, phase: RunPhase, message: str, **changes: object) -> IntegrationRunStatus:
    status = o.status.model_copy(update=changes)
    return status.model_copy(
        update={
            "phase": phase,
            "observed_generation": o.generation,
            "conditions": tuple(_ready(status, phase, message, o)),
        }
    )


def decide(o: RunObserved) -> RunDecision:
    """The next step of one run. Idempotent: deciding twice on the same observation gives the
    same result, and every action it asks for is idempotent too."""
    status = o.status
    phase = status.phase
    now = o.now.replace(microsecond=0)

    if phase is not None and phase.finished:
        # Leftovers of a crash between the final status and the cleanup.
        if o.job is not None and o.job.exists and status.job_name:
            return RunDecision(status, delete_job=status.job_name)
        return RunDecision(status)

    if o.spec.cancel:
        return RunDecision(
            _with(o, RunPhase.CANCELLED, "cancelled", completion_time=now, next_attempt_at=None),
            delete_job=status.job_name if phase in ACTIVE_PHASES else None,
            finished=RunPhase.CANCELLED,
        )

    if not o.integration_found:
        return _final_failure(
            o,
            Outcome(
                "Failed",
                ErrorClass.CONFIGURATION_ERROR,
                None,
                f"the Integration {o.spec.integration} does not exist",
            ),
            now,
        )

    if phase in WAITING_PHASES:
        return _decide_waiting(o, now)
    return _decide_active(o, now)


def _wait(o: RunObserved, message: str, after: float = POLL_SECONDS) -> RunDecision:
    return RunDecision(_with(o, RunPhase.QUEUED, message), requeue_after=after)


def _decide_waiting(o: RunObserved, now: datetime) -> RunDecision:
    status = o.status
    if status.next_attempt_at is not None and status.next_attempt_at > now:
        seconds = (status.next_attempt_at - now).total_seconds()
        return _wait(
            o,
            f"attempt {status.attempt + 1} starts at {status.next_attempt_at:%H:%M:%S}",
            min(seconds, 30.0),
        )
    if o.suspended and not o.spec.test:
        return _wait(o, "waiting: the integration is suspended", PAUSED_POLL_SECONDS)
    if o.paused and not o.spec.test:
        return _wait(o, "waiting: the integration is paused (docrelay resume)", PAUSED_POLL_SECONDS)
    revision = wanted_revision(o)
    if revision is None:
        return _wait_bounded(o, now, "the integration has no deployed revision")
    if o.revision is None or o.revision.name != revision:
        if status.revision or o.spec.revision:
            return _final_failure(
                o,
                Outcome(
                    "Failed",
                    ErrorClass.CONFIGURATION_ERROR,
                    None,
                    f"the IntegrationRevision {revision} does not exist",
                ),
                now,
            )
        return _wait_bounded(o, now, f"the IntegrationRevision {revision} does not exist yet")
    if not o.may_start:
        waited = (now - o.created).total_seconds()
        if status.phase is None and waited < QUEUED_AFTER_SECONDS:
            return RunDecision(status, requeue_after=QUEUED_AFTER_SECONDS - waited)
        return _wait(o, "queued: the integration has maxConcurrency runs active")
    if o.config_problem is not None:
        if o.spec.test:  # someone is watching a test run: say it at once
            problem = Outcome("Failed", ErrorClass.CONFIGURATION_ERROR, None, o.config_problem)
            return _final_failure(o, problem, now)
        return _wait_bounded(o, now, o.config_problem, SECRET_POLL_SECONDS)
    attempt = status.attempt + 1
    started = _with(
        o,
        RunPhase.PENDING,
        f"attempt {attempt}: Job created",
        attempt=attempt,
        revision=revision,
        job_name=job_name(o.name, attempt),
        start_time=status.start_time or now,
        next_attempt_at=None,
        exit_code=None,
    )
    return RunDecision(started, start_attempt=attempt, requeue_after=ACTIVE_POLL_SECONDS)


def _wait_bounded(
    o: RunObserved, now: datetime, reason: str, after: float = POLL_SECONDS
) -> RunDecision:
    """Wait in Queued for something the run cannot start without, saying what; once
    spec.queueTimeoutSeconds have passed since the run became due (created, or its retry
    time), dead-letter it with that reason (a replay runs it again once it is fixed)."""
    since = o.status.next_attempt_at or o.created
    deadline = since + timedelta(seconds=o.queue_timeout_seconds)
    if now >= deadline:
        waited = format_duration((now - since).total_seconds())
        problem = Outcome(
            "Failed",
            ErrorClass.CONFIGURATION_ERROR,
            None,
            f"waited {waited} in Queued (queueTimeoutSeconds {o.queue_timeout_seconds}): {reason}",
        )
        return _final_failure(o, problem, now, phase=RunPhase.DEAD_LETTERED)
    remaining = (deadline - now).total_seconds()
    return _wait(
        o,
        f"waiting: {reason}; dead-lettered at {deadline:%H:%M:%S} unless resolved",
        min(after, max(remaining, 0.5)),
    )


def format_duration(seconds: float) -> str:
    """A duration to a sensible precision: 6 s, 59 s, 2 min, 1 h 5 min."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min" + (f" {rest} s" if rest and minutes < 10 else "")
    hours, rest = divmod(whole, 3600)
    return f"{hours} h" + (f" {round(rest / 60)} min" if round(rest / 60) else "")


def _decide_active(o: RunObserved, now: datetime) -> RunDecision:
    status = o.status
    view = o.job or JobView(exists=False)
    if view.exists and not view.finished:
        if view.running and status.phase is RunPhase.PENDING:
            return RunDecision(
                _with(o, RunPhase.RUNNING, f"attempt {status.attempt} running"),
                requeue_after=ACTIVE_POLL_SECONDS,
            )
        return RunDecision(status, requeue_after=ACTIVE_POLL_SECONDS)
    outcome = attempt_outcome(view)
    common = {
        "exit_code": view.exit_code
        if view.exit_code is not None and view.exit_code <= 255
        else None,
    }
    delete = status.job_name if view.exists else None
    if outcome.status == "Succeeded":
        done = _with(
            o,
            RunPhase.SUCCEEDED,
            f"succeeded on attempt {status.attempt}",
            completion_time=now,
            error_class=None,
            exception_type=None,
            error_message=None,
            retryable=None,
            result_summary=outcome.result_summary,
            **common,
        )
        return RunDecision(done, collect=True, delete_job=delete, finished=RunPhase.SUCCEEDED)
    error_class = ErrorClass(outcome.error_class or ErrorClass.CODE_ERROR)
    retryable = error_class in RETRYABLE
    errors: dict[str, object] = {
        "error_class": error_class,
        "exception_type": outcome.exception_type,
        "error_message": (outcome.message or "")[:MAX_ERROR_MESSAGE] or None,
        "retryable": retryable,
        "result_summary": None,
        **common,
    }
    if retryable and not o.spec.test and status.attempt < o.max_attempts:
        wait = backoff_seconds(o.retry, status.attempt + 1, o.jitter)
        at = now + timedelta(seconds=round(wait))
        retry = _with(
            o,
            RunPhase.QUEUED,
            f"attempt {status.attempt} failed ({error_class.value}); attempt "
            f"{status.attempt + 1} of {o.max_attempts} at {at:%H:%M:%S}",
            next_attempt_at=at,
            **errors,
        )
        event = (
            "Warning",
            "RetryScheduled",
            f"attempt {status.attempt} failed with {error_class.value}; retrying in "
            f"{round(wait)} s",
        )
        return RunDecision(
            retry, collect=True, delete_job=delete, requeue_after=wait, events=(event,)
        )
    return _final_failure(o, outcome, now, errors=errors, collect=True, delete=delete)


def _final_failure(
    o: RunObserved,
    outcome: Outcome,
    now: datetime,
    *,
    errors: dict[str, object] | None = None,
    collect: bool = False,
    delete: str | None = None,
    phase: RunPhase | None = None,
) -> RunDecision:
    error_class = ErrorClass(outcome.error_class or ErrorClass.CODE_ERROR)
    retryable = error_class in RETRYABLE
    if phase is None:
        if error_class is ErrorClass.TIMEOUT:
            phase = RunPhase.TIMED_OUT
        elif retryable and not o.spec.test:
            phase = RunPhase.DEAD_LETTERED
        else:
            phase = RunPhase.FAILED
    errors = errors or {
        "error_class": error_class,
        "exception_type": outcome.exception_type,
        "error_message": outcome.message,
        "retryable": retryable,
    }
    attempts = o.status.attempt
    message = f"{phase.value} after {attempts} attempt(s): {error_class.value}"
    if attempts == 0 and outcome.message:  # never started: the reason is the whole story
        message = f"{phase.value} before any attempt: {outcome.message}"
    status = _with(o, phase, message, completion_time=now, next_attempt_at=None, **errors)
    event_reason = "DeadLettered" if phase is RunPhase.DEAD_LETTERED else f"Run{phase.value}"
    event = ("Warning", event_reason, message)
    return RunDecision(
        status,
        collect=collect,
        delete_job=delete,
        finished=phase,
        events=(event,),
    )


# --- the Integration's counters -------------------------------------------------------------

_COUNT_FIELDS = {
    RunPhase.SUCCEEDED: "succeeded",
    RunPhase.FAILED: "failed",
    RunPhase.TIMED_OUT: "timed_out",
    RunPhase.DEAD_LETTERED: "dead_lettered",
    RunPhase.CANCELLED: "cancelled",
}


def count_finished(
    status: IntegrationStatus, run: str, phase: RunPhase, completion: datetime | None
) -> IntegrationStatus:
    """The Integration's status with one more finished (non-test) run."""
    counts = status.run_counts or RunCounts()
    name = _COUNT_FIELDS[phase]
    counts = counts.model_copy(update={name: getattr(counts, name) + 1})
    if phase is RunPhase.SUCCEEDED:
        failures = 0
    elif phase is RunPhase.CANCELLED:
        failures = status.consecutive_failures
    else:
        failures = status.consecutive_failures + 1
    return status.model_copy(
        update={
            "last_run": LastRun(name=run, phase=phase, completion_time=completion),
            "run_counts": counts,
            "consecutive_failures": failures,
        }
    )


PAUSED = "Paused"


def pause_if_due(
    status: IntegrationStatus, threshold: int, now: datetime, generation: int | None
) -> tuple[IntegrationStatus, bool]:
    """Pause the integration once `threshold` runs in a row failed (0: never). Returns the
    status and whether it was paused just now. `spec.suspend` is never touched."""
    if threshold <= 0 or status.consecutive_failures < threshold:
        return status, False
    current = next((c for c in status.conditions if c.type == PAUSED), None)
    if current is not None and current.status is ConditionStatus.TRUE:
        return status, False
    condition = Condition(
        type=PAUSED,
        status=ConditionStatus.TRUE,
        observed_generation=generation,
        last_transition_time=now,
        reason="ConsecutiveFailures",
        message=f"{status.consecutive_failures} runs in a row failed; new runs wait in Queued "
        "until `docrelay resume`",
    )
    conditions = with_ready(
        set_condition(status.conditions, condition, now), generation, status.deployed_revision, now
    )
    return status.model_copy(update={"conditions": tuple(conditions)}), True


def paused_by_user(
    status: IntegrationStatus, now: datetime, generation: int | None, who: str
) -> IntegrationStatus:
    """What `docrelay pause` writes: Paused=True (reason PausedByUser); runs wait as after
    consecutive failures, until `docrelay resume`."""
    condition = Condition(
        type=PAUSED,
        status=ConditionStatus.TRUE,
        observed_generation=generation,
        last_transition_time=now,
        reason="PausedByUser",
        message=f"paused by {who} with `docrelay pause`; new runs wait in Queued until "
        "`docrelay resume`",
    )
    conditions = with_ready(
        set_condition(status.conditions, condition, now), generation, status.deployed_revision, now
    )
    return status.model_copy(update={"conditions": tuple(conditions)})


def resumed(status: IntegrationStatus, now: datetime, generation: int | None) -> IntegrationStatus:
    """What `docrelay resume` writes: Paused=False, and the failure streak starts again."""
    condition = Condition(
        type=PAUSED,
        status=ConditionStatus.FALSE,
        observed_generation=generation,
        last_transition_time=now,
        reason="Resumed",
        message="resumed by `docrelay resume`",
    )
    conditions = with_ready(
        set_condition(status.conditions, condition, now), generation, status.deployed_revision, now
    )
    return status.model_copy(update={"conditions": tuple(conditions), "consecutive_failures": 0})


def integration_run_patch(
    status: IntegrationStatus, active_runs: int, with_conditions: bool = False
) -> dict[str, object]:
    """The fields of the Integration's status that runs own, as a merge patch (conditions only
    when a Paused condition changed: the list is replaced whole)."""
    full = status.model_copy(update={"active_runs": active_runs}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    fields = ["lastRun", "runCounts", "countedRuns", "consecutiveFailures", "activeRuns"]
    if with_conditions:
        fields.append("conditions")
    return {k: full.get(k) for k in fields}


RECENT_SECONDS = 5  # CountedRuns.recent: runs counted this close to the newest one


@dataclass(frozen=True)
class FinishedView:
    """A finished non-test run waiting to be counted, as the runs cache has it."""

    name: str
    phase: RunPhase
    completion: datetime | None
    version: int | None  # its resourceVersion
    listed: bool  # from the cache's first list (a restart), not seen finishing since


@dataclass(frozen=True)
class Tally:
    status: IntegrationStatus
    patch: dict[str, object] | None  # None: nothing to write
    paused_now: bool = False
    counted: tuple[str, ...] = ()


def already_counted(run: FinishedView, through: CountedRuns | None) -> bool:
    """Whether the stored counts include a run the cache listed at the operator's start: it
    finished before the counts' resourceVersion (its own is not newer), or it is among the
    recent ones counted, or it finished well before the newest counted (and was changed
    since: a replay's replayedBy, a fix). Without a record (counts written before this
    bookkeeping existed) everything listed at a start counts as counted, as it was then."""
    if not run.listed:
        return False  # seen finishing by this process, after its first list
    if through is None:
        return True
    try:
        if run.version is not None and run.version <= int(through.resource_version):
            return True
    except ValueError:
        return True
    if run.name in through.recent:
        return True
    if through.newest is not None and run.completion is not None:
        return run.completion < through.newest - timedelta(seconds=RECENT_SECONDS)
    return False


def tally(
    status: IntegrationStatus,
    finished: Iterable[FinishedView],
    active_runs: int,
    watched_through: int,
    pause_after_failures: int,
    now: datetime,
    generation: int | None,
    completed: Mapping[str, datetime | None] | None = None,
) -> Tally:
    """The Integration's run fields after counting `finished` (each counted once, in
    completion order) with `active_runs` Pending or Running: counters, lastRun, the failure
    streak and Paused, and CountedRuns advanced to `watched_through` (the runs cache's watch
    position when `finished` was taken from it). `completed` gives the completionTime of the
    runs CountedRuns.recent names (those no longer recent are dropped from it). `patch` is
    None when nothing changed."""
    completed = completed or {}
    new = [r for r in finished if not already_counted(r, status.counted_runs)]
    new.sort(key=lambda r: (r.completion or datetime(1970, 1, 1, tzinfo=UTC), r.name))
    result = status
    for run in new:
        result = count_finished(result, run.name, run.phase, run.completion)
    result, paused_now = pause_if_due(result, pause_after_failures, now, generation)
    through = status.counted_runs
    if new:
        completions = [r.completion for r in new if r.completion is not None]
        if through is not None and through.newest is not None:
            completions.append(through.newest)
        newest = max(completions, default=None)
        horizon = newest - timedelta(seconds=RECENT_SECONDS) if newest is not None else None
        known = dict(completed)
        known.update({r.name: r.completion for r in new})
        earlier = through.recent if through is not None else ()
        recent = [
            name
            for name in dict.fromkeys([*earlier, *(r.name for r in new)])
            if horizon is None or ((at := known.get(name)) is not None and at >= horizon)
        ]
        result = result.model_copy(
            update={
                "counted_runs": CountedRuns(
                    resource_version=str(watched_through),
                    newest=newest,
                    recent=tuple(recent[-1000:]),
                )
            }
        )
    changed = bool(new) or paused_now or result.active_runs != active_runs
    if not changed:
        return Tally(status, None)
    patch = integration_run_patch(result, active_runs, with_conditions=paused_now)
    return Tally(
        result.model_copy(update={"active_runs": active_runs}),
        patch,
        paused_now,
        tuple(r.name for r in new),
    )


# --- retention ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedRun:
    name: str
    phase: RunPhase
    finished: datetime  # completionTime, else creationTimestamp


def parse_time(text: str | None) -> datetime:
    """An RFC 3339 timestamp of the API server; the epoch when absent."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def finished_by_integration(
    runs: Iterable[Mapping[str, Any]],
) -> dict[tuple[str, str], list[FinishedRun]]:
    """The finished runs among `runs` (IntegrationRun objects), by (namespace, integration)."""
    groups: dict[tuple[str, str], list[FinishedRun]] = {}
    for run in runs:
        status = run.get("status") or {}
        phase = status.get("phase")
        if not phase or not RunPhase(phase).finished:
            continue
        key = (run["metadata"]["namespace"], str((run.get("spec") or {}).get("integration", "")))
        finished = status.get("completionTime") or run["metadata"].get("creationTimestamp")
        groups.setdefault(key, []).append(
            FinishedRun(run["metadata"]["name"], RunPhase(phase), parse_time(finished))
        )
    return groups


def runs_to_delete(
    runs: Iterable[FinishedRun], retention: RunRetention, now: datetime
) -> list[str]:
    """The finished runs of one integration the retention policy no longer keeps: beyond the
    newest `successfulRuns` succeeded ones, beyond the newest `failedRuns` others, and any older
    than `maxAgeDays`. Deleting a run deletes its stored logs (owner references)."""
    oldest = now - timedelta(days=retention.max_age_days)
    doomed: set[str] = set()
    newest_first = sorted(runs, key=lambda r: (r.finished, r.name), reverse=True)
    succeeded = [r for r in newest_first if r.phase is RunPhase.SUCCEEDED]
    others = [r for r in newest_first if r.phase is not RunPhase.SUCCEEDED]
    doomed.update(r.name for r in succeeded[retention.successful_runs :])
    doomed.update(r.name for r in others[retention.failed_runs :])
    doomed.update(r.name for r in newest_first if r.finished < oldest)
    return sorted(doomed)


def run_refs(runs: Iterable[Mapping[str, Any]], integration: str, exclude: str) -> list[RunRef]:
    """What the concurrency gate needs of an integration's runs (IntegrationRun objects), but
    `exclude` and cancelled ones."""
    refs = []
    for r in runs:
        spec, status = r.get("spec") or {}, r.get("status") or {}
        if spec.get("integration") != integration or spec.get("cancel"):
            continue
        if r["metadata"]["name"] == exclude:
            continue
        phase, next_at = status.get("phase"), status.get("nextAttemptAt")
        refs.append(
            RunRef(
                name=r["metadata"]["name"],
                created=parse_time(r["metadata"].get("creationTimestamp")),
                phase=RunPhase(phase) if phase else None,
                next_attempt_at=parse_time(next_at) if next_at else None,
            )
        )
    return refs


def job_done(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def busy_runs(jobs: Iterable[Mapping[str, Any]], finished: set[str]) -> set[str]:
    """The runs (by the run label) holding a slot: every Job counts until it is deleted (the
    operator deletes a Job right after storing its log, under the same lock), so never more
    than maxConcurrency Jobs exist; a done Job of a finished run is a leftover, deleted on its
    next event."""
    busy = set()
    for job in jobs:
        metadata = job.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(RUN_LABEL, "")
        if metadata.get("deletionTimestamp") or (job_done(job) and owner in finished):
            continue
        busy.add(owner)
    return busy


# --- what a decision reads -------------------------------------------------------------------


def observe_run(
    raw: Mapping[str, Any],
    run: IntegrationRun,
    integration: Integration | None,
    now: datetime,
    jitter: float,
) -> RunObserved:
    """What the decisions read of a run and its Integration (no I/O)."""
    status = run.status or IntegrationRunStatus()
    istatus = (integration.status if integration else None) or IntegrationStatus()
    paused = find_condition(istatus.conditions, IntegrationConditionType.PAUSED)
    return RunObserved(
        name=run.metadata.name or "",
        created=parse_time(raw["metadata"].get("creationTimestamp")),
        generation=raw["metadata"].get("generation"),
        spec=run.spec,
        status=status,
        now=now,
        integration_found=integration is not None,
        suspended=bool(integration and integration.spec.suspend),
        paused=paused is not None and paused.status is ConditionStatus.TRUE,
        deployed_revision=istatus.deployed_revision,
        max_attempts=integration.spec.retry.max_attempts if integration else 1,
        retry=integration.spec.retry if integration else RetryPolicy(),
        jitter=jitter,
        queue_timeout_seconds=integration.spec.queue_timeout_seconds
        if integration
        else DEFAULT_QUEUE_TIMEOUT,
    )


def status_patch(current: Mapping[str, Any] | None, new: IntegrationRunStatus) -> dict[str, Any]:
    """The merge patch from the run's stored status to `new`: the fields that changed, and
    None for those `new` drops."""
    if not current and new == IntegrationRunStatus():
        return {}  # nothing decided yet (a new run waiting moments for a slot): no write
    wanted = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    stored = dict(current or {})
    patch: dict[str, Any] = {k: v for k, v in wanted.items() if stored.get(k) != v}
    patch.update({k: None for k in stored if k not in wanted})
    return patch
