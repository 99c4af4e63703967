"""The agent's decisions: when to generate, when to fix, what to test, what may be deployed.

Pure: the agent worker (handlers/agent.py) gathers, asks these functions, then acts (calls
the model, creates revisions and test runs, writes statuses). Requests (`docrelay generate`,
`docrelay fix`) are annotations holding a JSON request with an id; each id is served once.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from docrelay.models.agent import (
    MAX_AGENT_MESSAGE,
    MAX_FIX_HISTORY,
    AgentState,
    AgentTask,
    FixAttempt,
    IntegrationAgentStatus,
    RunFixStatus,
)
from docrelay.models.conditions import Condition, ConditionStatus, set_condition
from docrelay.models.integration import DeployPolicy, IntegrationConditionType, IntegrationSpec
from docrelay.models.revision import RevisionConditionType, RevisionTestRun, SourceType
from docrelay.models.run import IntegrationRunStatus, RunPhase
from docrelay.reconcile.deploy import DeployAction, DeployRequest

AGENT_ACTOR = "docrelay-agent"
GENERATE_REQUEST_ANNOTATION = "agent.docrelay.io/generate"
FIX_REQUEST_ANNOTATION = "agent.docrelay.io/fix"
TEST_DOCUMENTS_ANNOTATION = "agent.docrelay.io/test-documents"

_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_MODEL_NAME = re.compile(r"[^A-Za-z0-9._:/@-]")
_DOCUMENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class AgentReason:
    """Reasons of the AgentAvailable condition and of the agent's Events."""

    AVAILABLE = "Available"
    NOT_CONFIGURED = "NotConfigured"
    UNREACHABLE = "Unreachable"
    REJECTED = "ProviderRejected"
    # Events
    REVISION_PROPOSED = "AgentRevision"
    CODE_REFUSED = "AgentCodeRefused"
    TEST_PASSED = "AgentTestPassed"
    TEST_FAILED = "AgentTestFailed"
    FIX_REFUSED = "FixRefused"


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentRequest:
    """A `docrelay generate` or `docrelay fix` request, read from its annotation."""

    id: str
    requested_by: str
    requested_at: datetime

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "requestedBy": self.requested_by,
                "requestedAt": self.requested_at.isoformat(),
            },
            sort_keys=True,
        )


def parse_agent_request(raw: str | None) -> AgentRequest | None:
    """The request, or None if absent or unreadable (an unreadable one is ignored)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        request = AgentRequest(
            id=str(data["id"]),
            requested_by=str(data.get("requestedBy") or "unknown")[:256],
            requested_at=datetime.fromisoformat(str(data["requestedAt"])),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return request if _REQUEST_ID.match(request.id) else None


# --- generation -------------------------------------------------------------------------------


def input_hash(spec: IntegrationSpec) -> str:
    """sha256 of what a generation is made from; a change asks for a new generation."""
    canonical = json.dumps(
        {
            "instructions": spec.instructions,
            "workspace": spec.workspace,
            "documentType": spec.document_type,
            "trigger": spec.trigger.value,
            "secrets": list(spec.secrets),
            "connectedAccounts": list(spec.connected_accounts),
            "runtime": spec.runtime.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class GenerationDue:
    input_hash: str
    request_id: str | None  # a `docrelay generate` request being served


def generation_due(
    spec: IntegrationSpec,
    agent: IntegrationAgentStatus,
    request: AgentRequest | None,
    now: datetime,
) -> GenerationDue | None:
    """Whether to ask the model for code now.

    Only an Integration with instructions and without inline code is generated for. A new
    instructions hash, or a new `docrelay generate` request, starts a generation; a generation
    waiting for the provider is tried again once its time has come. A failed generation is not
    retried by itself (the same prompt would likely fail the same way): change the
    instructions or run `docrelay generate`.
    """
    if spec.instructions is None or spec.code is not None:
        return None
    digest = input_hash(spec)
    if request is not None and request.id != agent.handled_generate_request:
        return GenerationDue(digest, request.id)
    task = agent.generation
    if task is None or task.input_hash != digest:
        return GenerationDue(digest, None)
    if task.state is AgentState.WAITING and (
        task.next_attempt_at is None or now >= task.next_attempt_at
    ):
        return GenerationDue(digest, task.request_id)
    return None


def waiting_until(now: datetime, retry_after: float | None, retry_seconds: float) -> datetime:
    """When to ask an unavailable provider again: its Retry-After, at least our own wait."""
    return (now + timedelta(seconds=max(retry_seconds, retry_after or 0.0))).replace(microsecond=0)


def waiting_task(
    task: AgentTask, said: str, retry_after: float | None, retry_seconds: float, now: datetime
) -> tuple[AgentTask, str]:
    """The task waiting for an unavailable provider (`said`: its error), and the message."""
    until = waiting_until(now, retry_after, retry_seconds)
    message = f"{said}; asked again after {until.isoformat()}"
    update = {"state": AgentState.WAITING, "message": cut_message(message)}
    return task.model_copy(update={**update, "next_attempt_at": until}), message


def generation_task(due: GenerationDue, now: datetime) -> AgentTask:
    """A generation's task before the model answers: Failed until it gives accepted code."""
    return AgentTask(
        state=AgentState.FAILED, input_hash=due.input_hash, request_id=due.request_id,
        updated_at=now,
    )  # fmt: skip


def task_testing(task: AgentTask, revision: str) -> AgentTask:
    """The task once its revision exists: being test-run."""
    message = f"revision {revision} is being test-run"
    return task.model_copy(
        update={"state": AgentState.TESTING, "revision": revision, "message": message}
    )


def model_label(model: str) -> str:
    """The model name as IntegrationRevision.spec.source.model accepts it."""
    cleaned = _MODEL_NAME.sub("-", model.strip())[:128].lstrip("._:/@-")
    return cleaned or "unknown"


def cut_message(text: str) -> str:
    return text if len(text) <= MAX_AGENT_MESSAGE else text[: MAX_AGENT_MESSAGE - 3] + "..."


# --- fixes ------------------------------------------------------------------------------------

FIXABLE = frozenset({RunPhase.FAILED, RunPhase.TIMED_OUT, RunPhase.DEAD_LETTERED})


@dataclass(frozen=True)
class FixDecision:
    """Serve the request (`due`), refuse it with a message, or nothing to do."""

    request: AgentRequest | None = None
    due: bool = False
    refusal: str | None = None


def fix_decision(
    fix: RunFixStatus | None,
    request: AgentRequest | None,
    phase: RunPhase | None,
    max_attempts: int,
    now: datetime,
) -> FixDecision:
    """What to do about a run's fix request.

    A request id is served once. A finished run that did not succeed may be fixed, at most
    `max_attempts` times; a request beyond that, or for a run that is running or succeeded,
    is refused (and recorded). A fix waiting for the provider is tried again when due.
    """
    handled = {a.request_id for a in fix.history} if fix else set()
    if request is None or request.id in handled:
        if (
            fix is not None
            and fix.state is AgentState.WAITING
            and (fix.next_attempt_at is None or now >= fix.next_attempt_at)
            and fix.history
        ):
            last = fix.history[-1]
            return FixDecision(
                AgentRequest(last.request_id, last.requested_by or "unknown", now), due=True
            )
        return FixDecision()
    if phase is None or phase not in FIXABLE:
        return FixDecision(
            request,
            refusal=f"only a failed, timed-out or dead-lettered run can be fixed; this run is "
            f"{phase.value if phase else 'not started'}",
        )
    if fix is not None and len(fix.history) >= max_attempts:
        return FixDecision(
            request,
            refusal=f"this run has had {len(fix.history)} fix attempts, the most allowed "
            f"({max_attempts}); fix the code by hand or replay the run",
        )
    return FixDecision(request, due=True)


def record_fix(
    fix: RunFixStatus | None,
    request: AgentRequest,
    state: AgentState,
    now: datetime,
    *,
    revision: str | None = None,
    test_run: str | None = None,
    message: str | None = None,
    next_attempt_at: datetime | None = None,
) -> RunFixStatus:
    """The run's fix status after serving (or refusing) `request`: the attempt is recorded
    in history, once per request id (a retry updates its entry)."""
    at = now.replace(microsecond=0)
    attempt = FixAttempt(
        request_id=request.id,
        requested_by=request.requested_by,
        state=state,
        revision=revision,
        at=at,
    )
    history = [a for a in (fix.history if fix else ()) if a.request_id != request.id]
    history.append(attempt)
    return RunFixStatus(
        state=state,
        revision=revision,
        test_run=test_run,
        message=cut_message(message) if message else None,
        next_attempt_at=next_attempt_at,
        history=tuple(history[-MAX_FIX_HISTORY:]),
    )


def update_fix_history(fix: RunFixStatus, state: AgentState, now: datetime) -> RunFixStatus:
    """The latest attempt's state follows its proposal's tests and deploy."""
    if not fix.history:
        return fix.model_copy(update={"state": state})
    last = fix.history[-1].model_copy(update={"state": state, "at": now.replace(microsecond=0)})
    return fix.model_copy(update={"state": state, "history": (*fix.history[:-1], last)})


# --- tests and deploy -------------------------------------------------------------------------


def pick_test_documents(
    override: str | None, recent: Sequence[tuple[datetime, str]], limit: int
) -> list[str]:
    """The documents a new agent revision is test-run on.

    The Integration's annotation `agent.docrelay.io/test-documents` (comma-separated ids) wins;
    otherwise the most recent distinct documents of the integration's own runs (the documents
    of its type it saw). Empty: the caller falls back to the platform's documents of the type.
    """
    if override:
        chosen = [d.strip() for d in override.split(",") if _DOCUMENT_ID.match(d.strip())]
        return list(dict.fromkeys(chosen))[:limit]
    seen: dict[str, None] = {}
    for _, document in sorted(recent, key=lambda r: r[0], reverse=True):
        seen.setdefault(document, None)
        if len(seen) >= limit:
            break
    return list(seen)


def verdict_of(phases: Iterable[RunPhase | None]) -> bool | None:
    """True when every test run succeeded, False once one ended otherwise, None while any
    runs (or there are none)."""
    phases = list(phases)
    if not phases:
        return None
    if any(p is not None and p.finished and p is not RunPhase.SUCCEEDED for p in phases):
        return False
    if all(p is RunPhase.SUCCEEDED for p in phases):
        return True
    return None


def condition_tested(
    verdict: bool | None, runs: Sequence[RevisionTestRun], now: datetime, generation: int | None
) -> Condition:
    """The revision's Tested condition from its test runs."""
    names = ", ".join(r.name for r in runs) or "none"
    if verdict is True:
        status, reason, message = ConditionStatus.TRUE, "TestPassed", f"test runs passed: {names}"
    elif verdict is False:
        failed = ", ".join(
            f"{r.name} ({r.phase.value})" for r in runs if r.phase is not RunPhase.SUCCEEDED
        )
        status, reason, message = ConditionStatus.FALSE, "TestFailed", f"test runs failed: {failed}"
    else:
        status, reason, message = ConditionStatus.UNKNOWN, "NotTested", f"test runs: {names}"
    return Condition(
        type=RevisionConditionType.TESTED.value,
        status=status,
        observed_generation=generation,
        last_transition_time=now.replace(microsecond=0),
        reason=reason,
        message=message,
    )


def needs_tests(source: str) -> bool:
    """Revisions the agent wrote must pass their test runs before they may be deployed."""
    return source in (SourceType.AGENT.value, SourceType.FIX.value)


def untested_refusal(source: str, tested: bool | None) -> str | None:
    """Why a revision may not be deployed because of its tests, or None."""
    if not needs_tests(source) or tested is True:
        return None
    if tested is False:
        return "it was written by the agent and its test runs failed"
    return "it was written by the agent and its test runs have not passed yet"


def task_after_tests(
    task: AgentTask,
    verdict: bool | None,
    policy: DeployPolicy,
    deployed: str | None,
    now: datetime,
) -> tuple[AgentTask, bool]:
    """The task's next state from its revision's tests and the deployed revision, and whether
    to ask for an automatic deploy now."""
    if task.revision is None or task.state not in (
        AgentState.TESTING,
        AgentState.TEST_PASSED,
        AgentState.UNCHANGED,
    ):
        return task, False
    stamp = now.replace(microsecond=0)
    if deployed == task.revision and verdict is not False:
        return task.model_copy(update={"state": AgentState.DEPLOYED, "updated_at": stamp}), False
    if verdict is False:
        return task.model_copy(update={"state": AgentState.TEST_FAILED, "updated_at": stamp}), False
    if verdict is True:
        new = task
        if task.state is not AgentState.TEST_PASSED:
            new = task.model_copy(update={"state": AgentState.TEST_PASSED, "updated_at": stamp})
        return new, policy is DeployPolicy.AUTOMATIC
    return task, False


def deploy_request_id(revision: str) -> str:
    """The id of the automatic deploy request for a revision: one per revision."""
    return "agent-" + hashlib.sha256(revision.encode()).hexdigest()[:32]


# --- the AgentAvailable condition -------------------------------------------------------------


@dataclass(frozen=True)
class ProviderHealth:
    """What the operator knows of its language model."""

    configured: bool
    description: str  # "model M at HOST", or what is missing
    reason: str = AgentReason.AVAILABLE
    message: str | None = None  # the last failure, our words


def agent_condition(
    health: ProviderHealth, generation: int | None, now: datetime
) -> Condition | None:
    """AgentAvailable, for an Integration that has instructions."""
    if not health.configured:
        ok, reason = False, AgentReason.NOT_CONFIGURED
        message = (
            "no language model is configured for this install (" + health.description + "); "
            "set the operator's agent settings (DOCRELAY_AGENT_KIND, DOCRELAY_AGENT_BASE_URL, "
            "DOCRELAY_AGENT_MODEL), or set spec.code. Integrations with spec.code are unaffected"
        )
    elif health.reason == AgentReason.AVAILABLE:
        ok, reason, message = True, AgentReason.AVAILABLE, f"the agent uses {health.description}"
    else:
        ok, reason = False, health.reason
        message = f"{health.description}: {health.message or 'unavailable'}"
    return Condition(
        type=IntegrationConditionType.AGENT_AVAILABLE.value,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        observed_generation=generation,
        last_transition_time=now.replace(microsecond=0),
        reason=reason,
        message=cut_message(message)[:1024],
    )


# --- what the worker writes after looking at the test runs (handlers/agent.py) --------------


def tests_message(
    revision: str, state: AgentState, deploy: bool, failed: str
) -> tuple[str, tuple[str, str] | None]:
    """The task's message for its new state, and the Event (type, reason) to post, if any."""
    if state is AgentState.TEST_PASSED:
        then = (
            "; deploying it (deployPolicy Automatic)"
            if deploy
            else f"; deploy it with `docrelay deploy {revision}`"
        )
        return f"revision {revision} passed its test runs{then}", (
            "Normal",
            AgentReason.TEST_PASSED,
        )
    if state is AgentState.TEST_FAILED:
        message = f"revision {revision} failed its test runs ({failed}); it cannot be deployed"
        return message, ("Warning", AgentReason.TEST_FAILED)
    if state is AgentState.DEPLOYED:
        return f"revision {revision} is deployed", None
    return "", None


def judge_words(field: str, instructions: str | None, fix_of_run: str | None) -> str | None:
    """What the one-shot flow's test runs are judged against: the integration's instructions,
    and for a fix that the run's failure is to go away; None (no judgement) without any."""
    words = (instructions or "").strip()
    if field == "fix" and fix_of_run:
        words += (
            f"\n\n(This revision fixes the failed run {fix_of_run}: it must run without that "
            "error and still do what the instructions ask.)"
        )
    return words.strip() or None


def needs_live_test_message(revision: str, integration: str, stops: Sequence[str]) -> str:
    """A one-shot revision whose dry test stopped at direct HTTPS: what was not seen, and how
    to test it live (the user's explicit choice; it sends for real)."""
    return (
        f"revision {revision} could not be tested dry: it connects directly over HTTPS to "
        f"{', '.join(stops)}, which a dry test does not open (nothing was sent); test it live, "
        f"for real: docrelay chat {integration} --change --live-test --revision {revision}"
    )[:1000]


def judged_failed_message(revision: str, reasons: str) -> str:
    return (
        f"revision {revision} ran without an error, but it was judged not to do what the "
        f"instructions ask: {reasons}; it cannot be deployed"
    )[:1000]


def condition_update(
    raw: Sequence[dict[str, object]], condition: Condition, now: datetime, *, generation: bool
) -> list[dict[str, object]] | None:
    """The conditions list with `condition` set, as the API stores it; None when the stored
    one already says the same (status, reason, message, and observedGeneration if asked)."""
    conditions = [Condition.model_validate(c) for c in raw]
    old = next((c for c in conditions if c.type == condition.type), None)

    def said(c: Condition) -> tuple[object, ...]:
        extra = (c.observed_generation,) if generation else ()
        return (c.status, c.reason, c.message, *extra)

    if old is not None and said(old) == said(condition):
        return None
    return [
        c.model_dump(mode="json", by_alias=True, exclude_none=True)
        for c in set_condition(conditions, condition, now)
    ]


def run_time(text: str | None) -> datetime:
    """A timestamp the API wrote (epoch when missing)."""
    if not text:
        return datetime(1970, 1, 1, tzinfo=UTC)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_phase(run: dict[str, Any] | None) -> RunPhase | None:
    phase = ((run or {}).get("status") or {}).get("phase")
    return RunPhase(phase) if phase else None


def run_completion(run: dict[str, Any] | None) -> datetime | None:
    text = ((run or {}).get("status") or {}).get("completionTime")
    return run_time(text) if text else None


# --- what the worker decides around its API calls (handlers/agent.py gathers and acts) -------


def not_configured_message(description: str) -> str:
    return "the agent is not configured for this install: " + description


def unconfigured_generation(due: GenerationDue, description: str, now: datetime) -> AgentTask:
    """The generation recorded when no provider is configured: once per input (generation_due
    is then None until the input changes)."""
    return AgentTask(
        state=AgentState.FAILED,
        input_hash=due.input_hash,
        request_id=due.request_id,
        message=not_configured_message(description),
        updated_at=now,
    )


def wants_fix(run: dict[str, Any]) -> bool:
    """Whether a run carries a `docrelay fix` request."""
    return FIX_REQUEST_ANNOTATION in (run["metadata"].get("annotations") or {})


def agent_candidates(
    integrations: Iterable[dict[str, Any]], runs: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The Integrations the agent looks at: with instructions, with an agent status, or with a
    run that asks for a fix. The objects as given (callers copy what they keep)."""
    wanted = {
        (r["metadata"]["namespace"], (r.get("spec") or {}).get("integration"))
        for r in runs
        if wants_fix(r)
    }
    return [
        i
        for i in integrations
        if (i.get("spec") or {}).get("instructions")
        or (i.get("status") or {}).get("agent")
        or (i["metadata"]["namespace"], i["metadata"]["name"]) in wanted
    ]


def belongs_to(obj: dict[str, Any], namespace: str, integration: str) -> bool:
    """Whether a run or revision is of this Integration."""
    return bool(
        obj["metadata"]["namespace"] == namespace
        and (obj.get("spec") or {}).get("integration") == integration
    )


def listed_document_ids(listed: Iterable[dict[str, Any]], limit: int) -> list[str]:
    """The identifiers of documents the platform listed, at most `limit`."""
    ids = [(d.get("meta") or {}).get("identifier") or d.get("identifier") for d in listed]
    return [str(i) for i in ids if i][:limit]


def no_documents_message(document_type: str) -> str:
    return (
        "no document to test on: the integration has had no runs and the platform "
        f"lists no document of type {document_type}; name some "
        f"in the annotation {TEST_DOCUMENTS_ANNOTATION}"
    )


def fix_test_plan(failed_run: dict[str, Any] | None) -> list[tuple[str, str]] | None:
    """A fix is test-run on the failed run's document and trigger; None when the run is gone."""
    if failed_run is None:
        return None
    spec = failed_run["spec"]
    return [(str(spec["documentIdentifier"]), str(spec["trigger"]))]


def revision_test_runs(
    names: Sequence[str], runs_by_name: dict[str, dict[str, Any]]
) -> list[RevisionTestRun]:
    """The revision's `status.testRuns`: each test run's phase (Queued until it has one)."""
    return [
        RevisionTestRun(
            name=n,
            phase=run_phase(runs_by_name.get(n)) or RunPhase.QUEUED,
            completion_time=run_completion(runs_by_name.get(n)),
        )
        for n in names
    ]


def revision_tests_patch(
    status: dict[str, Any],
    entries: Sequence[RevisionTestRun],
    condition: Condition,
    now: datetime,
) -> dict[str, Any] | None:
    """The revision status patch (test runs and Tested); None when it already says so."""
    stored = status.get("conditions") or []
    patch = {
        "testRuns": [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in entries],
        "conditions": condition_update(stored, condition, now, generation=False) or stored,
    }
    if all(status.get(k) == v for k, v in patch.items()):
        return None
    return patch


def deploy_request_due(
    revision: str, handled: str | None, current: str | None, now: datetime
) -> DeployRequest | None:
    """The deploy request to annotate for a revision, or None when it was already asked for
    (handled, or in the annotation now)."""
    request_id = deploy_request_id(revision)
    if handled == request_id or (current and request_id in current):
        return None
    return DeployRequest(
        id=request_id,
        action=DeployAction.DEPLOY,
        revision=revision,
        requested_by=AGENT_ACTOR,
        requested_at=now,
    )


def agent_status_patch(
    status: dict[str, Any],
    agent: IntegrationAgentStatus,
    health: ProviderHealth | None,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The Integration status patch: `status.agent` (explicit nulls remove what the agent no
    longer reports: a merge patch) and, with `health` (an Integration with instructions),
    AgentAvailable. Empty when both already say so."""
    patch: dict[str, Any] = {}
    wanted = agent.model_dump(mode="json", by_alias=True, exclude_none=True)
    if wanted and status.get("agent") != wanted:
        patch["agent"] = agent.model_dump(mode="json", by_alias=True)
    condition = agent_condition(health, generation, now) if health is not None else None
    if condition is not None:
        update = condition_update(status.get("conditions") or [], condition, now, generation=True)
        if update is not None:
            patch["conditions"] = update
    return patch


def fix_unchanged(raw: dict[str, Any], fix: RunFixStatus) -> bool:
    """Whether the run's stored `status.fix` already says what `fix` says."""
    wanted = fix.model_dump(mode="json", by_alias=True, exclude_none=True)
    return bool((raw.get("status") or {}).get("fix") == wanted)


def failure_fields(status: IntegrationRunStatus) -> dict[str, Any]:
    """What a fix prompt says of the failed run's error (its log is read by the caller)."""
    return {
        "error_class": status.error_class.value if status.error_class else "Unknown",
        "exception_type": status.exception_type,
        "error_message": status.error_message or "",
    }


def failure_text(run: str, status: IntegrationRunStatus) -> str:
    """The failed run's error in a sentence (a fix thread starts with it, masked)."""
    kind = status.exception_type or status.error_class or "Error"
    return f"run {run} failed on revision {status.revision}: {kind}: {status.error_message or ''}"


def fix_proposed_message(proposal: str, test_run: str) -> str:
    return (
        f"the agent proposed revision {proposal}; it is test-run on this run's document "
        f"({test_run})"
    )


def run_errors(names: Sequence[str], runs_by_name: dict[str, dict[str, Any]]) -> list[str | None]:
    """Each test run's error message (None while it has none)."""
    return [((runs_by_name.get(n) or {}).get("status") or {}).get("errorMessage") for n in names]


def after_tests(
    revision: str,
    integration: str,
    state: AgentState,
    deploy: bool,
    entries: Sequence[RevisionTestRun],
    stops: Sequence[str],
    judged: str | None,
) -> tuple[str, tuple[str, str] | None]:
    """The task's message once its tests moved it to `state`, and the Event (type, reason):
    a dry test stopped at direct HTTPS says how to test live, a judged failure gives the
    judge's reasons (`judged`), otherwise which runs failed or what to do next."""
    message, event = tests_message(revision, state, deploy, failed_test_names(entries))
    if stops and state is AgentState.TEST_FAILED:
        message = needs_live_test_message(revision, integration, stops)
    elif judged is not None and state is AgentState.TEST_FAILED:
        message = judged_failed_message(revision, judged)
    return message, event


def failed_test_names(entries: Sequence[RevisionTestRun]) -> str:
    return ", ".join(e.name for e in entries if e.phase is not RunPhase.SUCCEEDED)


def followed_fix(
    stored: dict[str, Any] | None, revision: str | None, task: AgentTask, now: datetime
) -> RunFixStatus | None:
    """The failed run's `status.fix` as its proposal's tests and deploy go (`stored` is what
    the run says now); None when the run's fix is of another revision."""
    fix = RunFixStatus.model_validate(stored or {"state": task.state.value})
    if fix.revision != revision:
        return None
    return update_fix_history(fix, task.state, now).model_copy(update={"message": task.message})


def generated_message(revision: str, attempts: int, model: str) -> str:
    """The Event when the agent wrote a revision from the instructions."""
    return (
        f"the agent wrote revision {revision} from spec.instructions "
        f"({attempts} question(s) to {model_label(model)}); "
        "it is test-run before it can be deployed"
    )


def refused_message(attempts: int, fix: bool) -> str:
    """The Event when every answer of the model was refused (nothing is deployed)."""
    if fix:
        return f"the model's fix was refused {attempts} time(s); see status.fix"
    return (
        f"the model's code was refused {attempts} time(s); nothing was "
        "deployed; see status.agent.generation.message"
    )


def prompt_context(
    integration: str,
    spec: IntegrationSpec,
    schema: dict[str, Any] | None,
    accounts: Sequence[object],
    allow_document_values: bool,
) -> dict[str, Any]:
    """What every prompt says about the integration (GenerateRequest and FixRequest fields):
    names, never values; `accounts` are the connected accounts' references."""
    return {
        "integration": integration,
        "workspace": spec.workspace,
        "document_type": spec.document_type,
        "trigger": spec.trigger.value,
        "document_schema": schema,
        "secret_names": tuple(spec.secrets),
        "accounts": tuple(accounts),
        "egress_hosts": tuple(spec.egress.hosts) if spec.egress else (),
        "dry_run_safe_hosts": tuple(spec.egress.dry_run_safe_hosts) if spec.egress else (),
        "python_version": str(spec.runtime.python or "3.12"),
        "nodejs_version": str(spec.runtime.nodejs) if spec.runtime.nodejs else None,
        "allow_document_values": allow_document_values,
    }
