"""What the agent does with a conversation (IntegrationConversation): pure decisions.

The handler (handlers/conversation.py) gathers the thread, the Integration and the revision
the thread proposed, asks `next_step`, acts (asks the model, creates a revision, deploys),
and writes the status these functions build. No I/O and no clock here: `now` is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from docrelay.agent.prompts import FixRequest, GenerateRequest, Prompt, build_chat_prompt
from docrelay.agent.tokens import MESSAGE_OVERHEAD, calibrated, estimate_prompt, estimate_tokens
from docrelay.models.conversation import (
    MAX_REASONS,
    MAX_THREAD_TURNS,
    MAX_TURN_TEXT,
    ConversationState,
    IntegrationConversationSpec,
    IntegrationConversationStatus,
    PromptTokens,
    TestVerdict,
    ThreadTurn,
    TokenUsage,
    TurnKind,
    TurnRole,
    UserAction,
    UserTurn,
    Verdict,
)
from docrelay.models.integration import DeployPolicy, Integration

CUT_NOTE = "\n[... cut: {left} more characters]"
WITHHELD = "[withheld: the integration's secrets could not be loaded to mask this text]"
SUMMARY_CHARS = 160  # of each older turn, in the prompt's summary of them
SUMMARY_HEADING = "\n\nEarlier in this conversation (summarised, oldest first):\n"
SUMMARY_FRAME_TOKENS = 40  # the heading and the count line


class StepKind(StrEnum):
    ASK = "Ask"  # ask the model: a question or a revision comes back
    APPROVE = "Approve"  # deploy the revision, if its tests passed
    OVERRIDE = "Override"  # take a failed verdict as passed, with the user's reason
    CLOSE = "Close"
    TEST = "Test"  # test the revision again: dry (Test) or live (LiveTest)
    NOTE = "Note"  # answer in words only (e.g. an action not offered yet)
    FOLLOW = "Follow"  # no user turn owed: follow the proposal's test runs
    NOTHING = "Nothing"


@dataclass(frozen=True)
class Step:
    kind: StepKind
    turn: UserTurn | None = None


def pending_turn(
    spec: IntegrationConversationSpec, status: IntegrationConversationStatus
) -> UserTurn | None:
    """The oldest user turn not acted on yet (after `status.answered`)."""
    ids = [t.id for t in spec.turns]
    start = ids.index(status.answered) + 1 if status.answered in ids else 0
    return spec.turns[start] if start < len(spec.turns) else None


def next_step(spec: IntegrationConversationSpec, status: IntegrationConversationStatus) -> Step:
    """What to do now: answer the oldest owed user turn, else follow the tests."""
    if status.state is ConversationState.CLOSED:
        return Step(StepKind.NOTHING)
    turn = pending_turn(spec, status)
    if turn is not None:
        kind = {
            UserAction.SAY: StepKind.ASK,
            UserAction.APPROVE: StepKind.APPROVE,
            UserAction.OVERRIDE: StepKind.OVERRIDE,
            UserAction.CLOSE: StepKind.CLOSE,
            UserAction.TEST: StepKind.TEST,
            UserAction.LIVE_TEST: StepKind.TEST,
        }.get(turn.action, StepKind.NOTE)
        return Step(kind, turn)
    if status.state is ConversationState.TESTING and status.revision:
        return Step(StepKind.FOLLOW)
    return Step(StepKind.NOTHING)


def look_fingerprint(version: str, test_run_versions: Sequence[str]) -> tuple[str, ...]:
    """What a look at a thread saw: its resourceVersion and its test runs' (from the caches)."""
    return (version, *test_run_versions)


def worth_a_look(last: tuple[str, ...] | None, now: tuple[str, ...]) -> bool:
    """Whether the worker looks at a thread now: only when it or one of its test runs changed
    since the last look that succeeded (a turn owed is a change of the thread; a test run
    ending is a change of the run), and always at the first look after a start."""
    return last != now


def idle_past_retention(
    state: str | None,
    last_turn_at: datetime | None,
    created: datetime | None,
    max_age_days: int,
    now: datetime,
) -> bool:
    """A thread to delete: at rest (not Thinking or Testing) and idle (its newest turn, else
    its creation) longer than the Integration's runRetention.maxAgeDays, as finished runs."""
    if state in (ConversationState.THINKING.value, ConversationState.TESTING.value):
        return False
    since = last_turn_at or created
    return since is not None and (now - since).total_seconds() > max_age_days * 86400


def cut_text(text: str, limit: int = MAX_TURN_TEXT) -> str:
    """At most `limit` characters, saying how many were left out."""
    if len(text) <= limit:
        return text
    keep = limit - len(CUT_NOTE.format(left=len(text)))
    return text[:keep] + CUT_NOTE.format(left=len(text) - keep)


def masked(text: str | None, mask: Callable[[str], str] | None) -> str | None:
    """`text` masked and bounded; withheld when no masker could be made."""
    if text is None:
        return None
    if mask is None:
        return WITHHELD
    return cut_text(mask(text)) or None


def user_copy(turn: UserTurn, mask: Callable[[str], str] | None, now: datetime) -> ThreadTurn:
    """A user turn as shown in status.turns: masked and bounded."""
    return ThreadTurn(
        id=turn.id,
        role=TurnRole.USER,
        action=turn.action,
        text=masked(turn.text, mask),
        by=turn.by,
        revision=turn.revision,
        at=turn.at or now,
    )


def next_agent_id(status: IntegrationConversationStatus) -> str:
    agents = sum(1 for t in status.turns if t.role is TurnRole.AGENT)
    return f"a-{agents + status.trimmed + 1}"


def with_turns(
    status: IntegrationConversationStatus,
    turns: Sequence[ThreadTurn],
    now: datetime,
    **update: object,
) -> IntegrationConversationStatus:
    """The status with `turns` appended (the oldest dropped past the bound), tokens summed."""
    known = {t.id for t in status.turns}
    listed = [*status.turns, *(t for t in turns if t.id not in known)]
    dropped = max(0, len(listed) - MAX_THREAD_TURNS)
    tokens = status.tokens
    for turn in turns:
        if turn.tokens is not None:
            tokens = TokenUsage(
                input_tokens=tokens.input_tokens + turn.tokens.input_tokens,
                output_tokens=tokens.output_tokens + turn.tokens.output_tokens,
            )
    return status.model_copy(
        update={
            "turns": tuple(listed[dropped:]),
            "trimmed": status.trimmed + dropped,
            "tokens": tokens,
            "last_turn_at": now,
            **update,
        }
    )


def agent_turn(
    status: IntegrationConversationStatus,
    kind: TurnKind,
    text: str,
    now: datetime,
    *,
    in_reply_to: str | None = None,
    **fields: object,
) -> ThreadTurn:
    return ThreadTurn(
        id=next_agent_id(status),
        role=TurnRole.AGENT,
        kind=kind,
        in_reply_to=in_reply_to,
        text=cut_text(text) or None,
        at=now,
        **fields,  # type: ignore[arg-type]
    )


def is_question(reply: str) -> bool:
    """A reply with no code block is a question (or words) for the user, not code."""
    return "```" not in reply


def _prompt_text(turn: ThreadTurn) -> str:
    text = turn.text or ""
    if turn.role is TurnRole.AGENT and turn.revision and turn.kind is TurnKind.REVISION:
        text = f"(proposed revision {turn.revision}) {text}"
    return text


def summary_line(turn: ThreadTurn) -> str:
    """One older turn in the prompt's summary: who, what it produced, its first words."""
    who = "user" if turn.role is TurnRole.USER else f"agent ({turn.kind or 'Note'})"
    words = " ".join((turn.text or "").split())
    if len(words) > SUMMARY_CHARS:
        words = words[: SUMMARY_CHARS - 3] + "..."
    about = f" [revision {turn.revision}]" if turn.revision else ""
    return f"- {who}{about}: {words}"


def history(
    status: IntegrationConversationStatus, budget: int
) -> tuple[str, list[tuple[str, str]]]:
    """The thread for a prompt within `budget` tokens (estimated, docrelay/agent/tokens.py):
    the first user words (the description, not counted here: the base prompt carries them),
    then the newest turns as (role, text), oldest first, within three quarters of the budget
    (the newest turn always); older turns are summarised in one line each, newest first
    within what is left, and the rest counted. Texts are the masked copies in status, never
    the spec's."""
    description, kept, _ = _history(status, budget)
    return description, kept


def _first_words(status: IntegrationConversationStatus) -> str:
    first = next((t for t in status.turns if t.text and t.role is TurnRole.USER), None)
    return first.text if first and first.text else ""


def _history(
    status: IntegrationConversationStatus, budget: int
) -> tuple[str, list[tuple[str, str]], int]:
    said = [t for t in status.turns if t.text]
    first = next((t for t in said if t.role is TurnRole.USER), None)
    rest = [t for t in said if t is not first]
    kept: list[tuple[str, str]] = []
    used = 0
    for turn in reversed(rest):
        text = _prompt_text(turn)
        cost = estimate_tokens(text) + MESSAGE_OVERHEAD
        if kept and used + cost > budget * 3 // 4:
            break
        used += cost
        kept.append(("user" if turn.role is TurnRole.USER else "assistant", text))
    kept.reverse()
    older = rest[: len(rest) - len(kept)]
    lines: list[str] = []
    for turn in reversed(older):
        line = summary_line(turn)
        cost = estimate_tokens(line) + 1
        if used + cost + SUMMARY_FRAME_TOKENS > budget:
            break
        used += cost
        lines.append(line)
    lines.reverse()
    counted = len(older) - len(lines) + status.trimmed
    description = _first_words(status)
    if lines:
        description += SUMMARY_HEADING + "\n".join(lines)
    if counted:
        description += f"\n\n({counted} older turn(s) of this conversation are left out.)"
    return description, kept, len(older) + status.trimmed


@dataclass(frozen=True)
class FittedPrompt:
    """A turn's prompt and what fitting it to the budget did (status.promptTokens)."""

    prompt: Prompt
    request: GenerateRequest | FixRequest
    tokens: PromptTokens


def chat_prompt(
    status: IntegrationConversationStatus,
    request_for: Callable[[str], GenerateRequest | FixRequest],
    revision: str | None,
    code: str | None,
    budget: int,
) -> FittedPrompt:
    """The prompt of a thread's next answer, estimated within `budget` tokens (the install's
    per-turn budget, scaled down when the provider counted the last prompt higher than we
    estimated it): the generate prompt made from the thread's first words (`request_for`;
    for a Fix thread the fix prompt, then the first words as a turn), the current revision's
    code before the newest turn, and as much of the thread as the rest of the budget holds
    (`history`; the newest turn is always sent, so a base prompt larger than the budget still
    asks)."""
    last = status.prompt_tokens
    budget = calibrated(budget, last.estimated if last else None, last.reported if last else None)
    first = _first_words(status)
    request = request_for(first)
    fix = isinstance(request, FixRequest)
    fixed = _estimate(build_chat_prompt(request, [("user", first)] if fix else []))
    if status.revision and code:
        fixed += estimate_tokens(with_current_code([("user", "")], revision, code)[0][1])
    description, turns, left_out = _history(status, max(0, budget - fixed))
    if fix:
        turns = [("user", description), *turns]
    else:
        request = request_for(description)
    if status.revision:
        turns = with_current_code(turns, revision, code)
    prompt = build_chat_prompt(request, turns)
    return FittedPrompt(
        prompt,
        request,
        PromptTokens(estimated=_estimate(prompt), budget=budget, left_out=left_out),
    )


def _estimate(prompt: Prompt) -> int:
    return estimate_prompt(prompt.system, (m.content for m in prompt.messages))


def answer_tokens(
    fitted: PromptTokens, usages: Sequence[tuple[int | None, int | None]]
) -> tuple[TokenUsage, PromptTokens]:
    """What an answer cost (the sum of its attempts' tokens, as the provider reported them)
    and its prompt's record: the first attempt's reported prompt tokens beside the estimate."""
    reported = usages[0][0] if usages else None
    return spent(usages), fitted.model_copy(update={"reported": reported})


def approve_refusal(
    revision: str | None, tested: bool | None, overridden: bool, reason: str | None = None
) -> str | None:
    """Why an Approve cannot deploy (None: it may). `reason`: the Tested condition's."""
    if revision is None:
        return "there is no revision to deploy yet: describe what you need and I will write one"
    if tested is True or overridden:
        return None
    if tested is False and reason == NEEDS_LIVE_TEST_REASON:
        return (
            f"revision {revision} needs a live test before I deploy it: its dry test stopped at "
            "a direct HTTPS connection, so what it sends was never seen; ask for a live test "
            "(it sends for real) or override the verdict with your reason"
        )
    if tested is False:
        return (
            f"revision {revision} failed its tests, so I will not deploy it; tell me what to "
            "change, or override the verdict with your reason"
        )
    return f"revision {revision} is still being tested; approve again once it has passed"


def test_report(revision: str, runs: Sequence[tuple[str, str | None, str | None]]) -> str:
    """Plain words for a finished test: each run's phase and, for a failure, its error."""
    failed = [(n, p, e) for n, p, e in runs if p != "Succeeded"]
    if not failed:
        return (
            f"revision {revision} passed its {len(runs)} test run(s) "
            f"({', '.join(n for n, _, _ in runs)}). Approve it to deploy."
        )
    lines = [f"revision {revision} failed {len(failed)} of {len(runs)} test run(s):"]
    lines += [f"- {n}: {p or 'unknown'}{f': {e}' if e else ''}" for n, p, e in failed]
    lines.append("Tell me what to change and I will revise it.")
    return "\n".join(lines)


NEEDS_LIVE_TEST_REASON = "NeedsLiveTest"
"""The Tested condition's reason when a dry test stopped at a direct HTTPS connection."""


def round_of(spec: IntegrationConversationSpec, turn: UserTurn) -> int:
    """A Test/LiveTest turn's round: its place in the append-only spec.turns (from 1), so its
    test runs are named once however often the operator looks."""
    return 1 + [t.id for t in spec.turns].index(turn.id)


def dry_stops(errors: Sequence[str | None]) -> tuple[str, ...]:
    """The destinations at which dry test runs stopped (the egress proxy's `dry run: <host:port>
    was not contacted ... needs a live test`, as the run's error message shows it)."""
    stops = []
    for error in errors:
        if not error or "needs a live test" not in error:
            continue
        _, _, rest = error.partition("dry run: ")
        where = rest.split(" ", 1)[0]
        if where and where not in stops:
            stops.append(where)
    return tuple(stops)


def needs_live_test_text(revision: str, stops: Sequence[str]) -> str:
    return (
        f"revision {revision} could not be tested dry: it connects directly over HTTPS to "
        f"{', '.join(stops)}, and a dry test opens no such connection (the proxy cannot see "
        "whether it reads or writes), so nothing was sent. Ask for a live test to run it for "
        "real (it will send to those hosts), or override this verdict with your reason."
    )


def documents_to_test(
    last_round: Sequence[str],
    runs_by_name: Mapping[str, Mapping[str, object]],
    failed_run: str | None,
) -> list[tuple[str, str]]:
    """(document, trigger) for a new round of tests: those of the revision's last round,
    else the failed run's (a Fix thread); empty: the caller picks the generation's."""
    plan: list[tuple[str, str]] = []
    for name in last_round:
        spec = (runs_by_name.get(name) or {}).get("spec")
        if isinstance(spec, Mapping) and spec.get("documentIdentifier"):
            plan.append((str(spec["documentIdentifier"]), str(spec["trigger"])))
    if plan:
        return list(dict.fromkeys(plan))
    failed = (runs_by_name.get(failed_run or "") or {}).get("spec") if failed_run else None
    if isinstance(failed, Mapping):
        return [(str(failed["documentIdentifier"]), str(failed["trigger"]))]
    return []


def round_text(revision: str, live: bool, runs: Sequence[str]) -> str:
    how = (
        "live: what it sends reaches the downstream systems"
        if live
        else "dry: writes are simulated and recorded, nothing is sent"
    )
    return f"testing revision {revision} again, {how} ({', '.join(runs)})."


RunEntry = tuple[str, str | None, str | None]  # (run, phase, error message)


@dataclass(frozen=True)
class RoundOutcome:
    """What a finished round of test runs comes to: the verdict, the words for the thread, the
    reasons, and the revision's Tested condition to write ((ok, reason, message), or None when
    the runs' own result stands)."""

    verdict: Verdict
    text: str
    reasons: tuple[str, ...]
    tested: tuple[bool, str, str] | None = None


def outcome_without_judge(
    revision: str, entries: Sequence[RunEntry], passed: bool, live: bool, message: str | None
) -> RoundOutcome | None:
    """The verdict of a round the model need not judge: a dry stop at direct HTTPS
    (NeedsLiveTest), or a run that failed (Fail); None when every run passed (judge it)."""
    stops = () if live else dry_stops([e for _, _, e in entries])
    if stops:
        reasons = tuple(f"a dry test stopped at a direct HTTPS connection to {s}" for s in stops)
        return RoundOutcome(
            Verdict.NEEDS_LIVE_TEST,
            needs_live_test_text(revision, stops),
            reasons[:MAX_REASONS],
            (False, NEEDS_LIVE_TEST_REASON, "; ".join(reasons)),
        )
    if passed:
        return None
    reasons = tuple(f"{n}: {p}: {(e or '')[:200]}".rstrip(": ") for n, p, e in entries)
    text = test_report(revision, entries) if entries else (message or "")
    return RoundOutcome(Verdict.FAIL, text, reasons[:MAX_REASONS])


def outcome_of_judgement(
    revision: str, entries: Sequence[RunEntry], passed: bool, reasons: Sequence[str]
) -> RoundOutcome:
    """The verdict of a round whose runs all passed, as the judge said."""
    said = "; ".join(reasons) or "no reason given"
    if passed:
        text = test_report(revision, entries) + "\nThey did what you asked: " + said
        return RoundOutcome(Verdict.PASS, text, tuple(reasons), (True, "JudgedPassed", said))
    text = (
        f"revision {revision} ran without an error, but it does not do what you asked:\n"
        + "\n".join(f"- {r}" for r in reasons)
        + "\nTell me what to change, or override this verdict with your reason."
    )
    return RoundOutcome(Verdict.FAIL, text, tuple(reasons), (False, "JudgedFailed", said))


CONVERSATION_ANNOTATION = "agent.docrelay.io/conversation"
"""On an Integration: the Build thread writing its code; the one-shot generation stands aside."""


def in_conversation(annotations: dict[str, str] | None) -> bool:
    return bool((annotations or {}).get(CONVERSATION_ANNOTATION))


# --- judging a test against the instructions ---------------------------------------------------

JUDGE_SYSTEM = """You check whether an integration's test runs did what the user asked.
You are given the user's instructions and, for each test run, its result, the end of its log
(secrets masked as ***), its outbound connections through the egress proxy (method, host,
path, status) and what it asked the broker to do with connected accounts (api_request,
execute_action, upload_file). In a dry test run writes are simulated and recorded instead of
sent: a write marked "simulated, not sent" counts as made. A connection marked "sent live
(marked safe)" was really made, over HTTPS: what it sent is not visible. A run without an
error can still ignore the instructions: no request where one was asked for, a secret that
was to be used and was not, the wrong data sent. Answer with one JSON object and nothing else:
{"verdict": "pass" or "fail", "reasons": ["one line each"]}."""

MAX_EVIDENCE_LOG = 2000


@dataclass(frozen=True)
class RunEvidence:
    name: str
    phase: str | None
    result: str | None
    error: str | None
    log: str | None  # masked when it was stored
    outbound: tuple[str, ...]  # "POST host:port /path -> 201" lines
    actions: tuple[str, ...] = ()  # "api_request POST host/path -> simulated" lines
    dry_run: bool = False


def outbound_lines(parts: Sequence[object]) -> tuple[str, ...]:
    """The egress record's entries (from every part of `<job>-egress`) as one line each."""
    lines = []
    for part in parts:
        entries = part.get("entries") if isinstance(part, dict) else None
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            reason = str(entry.get("reason") or "")[:200]
            if not entry.get("allowed"):
                note = f" (refused: {reason})" if reason else " (refused)"
            else:
                note = f" ({reason})" if reason else ""
            lines.append(
                f"{entry.get('method', '?')} {entry.get('host', '?')}:{entry.get('port', '?')} "
                f"{entry.get('path') or ''} -> {entry.get('status', '?')}{note}".replace("  ", " ")
            )
    return tuple(lines[-50:])


def action_lines(parts: Sequence[object]) -> tuple[str, ...]:
    """The broker's record of a run's account actions (`<job>-broker`) as one line each:
    names only, as recorded (no bodies, no values)."""
    lines = []
    for part in parts:
        entries = part.get("entries") if isinstance(part, dict) else None
        for entry in sorted(
            (e for e in entries or [] if isinstance(e, dict)), key=lambda e: str(e.get("at"))
        ):
            what = str(entry.get("action", "?"))
            if entry.get("method"):
                what += f" {entry['method']} {entry.get('host') or ''}{entry.get('path') or ''}"
            if entry.get("tool"):
                what += f" {entry['tool']}"
                if entry.get("props"):
                    what += f" (props: {', '.join(str(p) for p in entry['props'][:20])})"
            if entry.get("fileName"):
                what += f" {entry['fileName']}"
            outcome = str(entry.get("outcome", "?"))
            if outcome == "simulated":
                outcome = "simulated, not sent (dry run)"
            elif entry.get("status") is not None:
                outcome += f" {entry['status']}"
            lines.append(f"{what} as account {entry.get('account', '?')} -> {outcome}")
    return tuple(lines[-50:])


WITHHELD_VALUES = (
    "(withheld: it may hold document values, which reach the model only with ALLOW_DOCUMENT_VALUES)"
)


def judge_prompt(
    instructions: str, runs: Sequence[RunEvidence], allow_document_values: bool = False
) -> str:
    """The evidence of each test run. The result and the log may hold document values: they
    are shown only when the install allows document values in prompts."""
    parts = ["## The user's instructions", instructions or "(none)"]
    for run in runs:
        result = run.result or "(none)"
        log = (run.log or "")[-MAX_EVIDENCE_LOG:] or "(empty)"
        if not allow_document_values:
            result = WITHHELD_VALUES if run.result else result
            log = WITHHELD_VALUES if run.log else log
        kind = "dry: writes simulated, not sent" if run.dry_run else "live"
        parts += [
            f"## Test run {run.name} ({kind}): {run.phase or 'unknown'}",
            f"result: {result}",
            f"error: {run.error or '(none)'}",
            "outbound connections:\n" + ("\n".join(run.outbound) or "(none)"),
            "broker actions:\n" + ("\n".join(run.actions) or "(none)"),
            "log (end):\n" + log,
        ]
    return "\n\n".join(parts)


def parse_judgement(reply: str) -> tuple[bool, tuple[str, ...]]:
    """(passed, reasons) from the judge's JSON; anything unreadable is a failed judgement."""
    start, end = reply.find("{"), reply.rfind("}")
    try:
        data = json.loads(reply[start : end + 1]) if start >= 0 else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("verdict") not in ("pass", "fail"):
        return False, ("the judgement of the test could not be read; not taken as passed",)
    reasons = tuple(cut_text(str(r), 300) for r in (data.get("reasons") or []) if str(r).strip())[
        :10
    ]
    return data["verdict"] == "pass", reasons


# --- what a look at a thread decides around its API calls (handlers/conversation.py) ---------


def parse_time(text: object) -> datetime | None:
    """A timestamp the API wrote; None when missing or unreadable."""
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def retention_days(integration: Mapping[str, object]) -> int:
    """The Integration's `runRetention.maxAgeDays` (30 when unset): threads idle longer go."""
    spec = integration.get("spec") or {}
    retention = (spec.get("runRetention") if isinstance(spec, Mapping) else None) or {}
    return int(retention.get("maxAgeDays", 30) if isinstance(retention, Mapping) else 30)


def run_versions(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """Each run's resourceVersion by (namespace, name): what a thread's look fingerprints."""
    return {
        (r["metadata"]["namespace"], r["metadata"]["name"]): str(
            r["metadata"].get("resourceVersion", "")
        )
        for r in runs
    }


def spent(usages: Sequence[tuple[int | None, int | None]]) -> TokenUsage:
    """The tokens of one answer: the sum of its attempts' (input, output) tokens."""
    return TokenUsage(
        input_tokens=sum(i or 0 for i, _ in usages),
        output_tokens=sum(o or 0 for _, o in usages),
    )


def with_current_code(
    turns: list[tuple[str, str]], revision: str | None, code: str | None
) -> list[tuple[str, str]]:
    """The prompt's turns with the current revision's code said just before the newest turn
    (nothing added without code or turns)."""
    if not code or not turns:
        return turns
    said = ("assistant", f"The code of revision {revision} now:\n```\n{code}\n```")
    return [*turns[:-1], said, turns[-1]]


def round_refusal(
    revision: str | None, known: bool, state: ConversationState | None, testing: str | None
) -> str | None:
    """Why a Test turn starts no round (None: it may): no such revision, or a round of
    `testing` (the thread's revision) still running."""
    if revision is None or not known:
        return no_revision_text(revision, "test")
    if state is ConversationState.TESTING:
        return f"revision {testing} is still being tested; ask again after"
    return None


NO_TEST_DOCUMENT = "no document to test on: the integration has had no runs to take one from"


def round_runs(
    names: Sequence[str], runs_by_name: Mapping[str, Mapping[str, Any]]
) -> list[tuple[str, str | None, str | None]]:
    """Each run of a round: (name, phase, error message), as the thread reports them."""
    found = []
    for name in names:
        status = (runs_by_name.get(name) or {}).get("status") or {}
        found.append((name, status.get("phase"), status.get("errorMessage")))
    return found


def revision_tested(status: str | None, reason: str | None) -> tuple[bool | None, str | None]:
    """A revision's Tested condition as (True/False, its reason); (None, None) when unknown."""
    if status is None or status == "Unknown":
        return None, None
    return status == "True", reason


def user_thread_words(status: IntegrationConversationStatus) -> str:
    """All the user's (masked) words in the thread: what the judge checks the tests against."""
    return "\n\n".join(t.text or "" for t in status.turns if t.role is TurnRole.USER and t.text)


def override_verdict(turn: UserTurn, reason: str) -> TestVerdict:
    """An Override turn's verdict: passed, by whom and why (`reason` masked)."""
    return TestVerdict(
        verdict=Verdict.PASS,
        reasons=("overridden by the user",),
        overridden_by=turn.by or "unknown",
        override_reason=reason[:MAX_TURN_TEXT],
    )


def deploying_manually(integration: Integration) -> Integration:
    """The Integration as a thread's test follower sees it: deployPolicy Manual, so nothing
    deploys before the judgement (the thread deploys an Automatic one after a Pass)."""
    spec = integration.spec.model_copy(update={"deploy_policy": DeployPolicy.MANUAL})
    return integration.model_copy(update={"spec": spec})


def override_text(revision: str, reason: str) -> str:
    return f"recorded: revision {revision} counts as passed ({reason}). Approve it to deploy."


def no_revision_text(revision: str | None, to: str) -> str:
    return f"there is no revision {revision or ''} to {to}".replace("  ", " ")


def revision_text(words: str | None, revision: str) -> str:
    """The agent's turn proposing a revision: its explanation (masked), then what happens."""
    then = f"I proposed it as revision {revision}; it is being test-run now."
    return f"{words or 'Here is the code.'}\n\n{then}"
