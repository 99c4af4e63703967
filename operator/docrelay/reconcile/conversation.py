"""What the agent does with a conversation (IntegrationConversation): pure decisions.

The handler (handlers/conversation.py) gathers the thread, the Integration and the revision
the thread proposed, asks `next_step`, acts (asks the model, creates a revision, deploys),
and writes the status these functions build. No I/O and no clock here: `now` is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from docrelay.models.conversation import (
    MAX_THREAD_TURNS,
    MAX_TURN_TEXT,
    ConversationState,
    IntegrationConversationSpec,
    IntegrationConversationStatus,
    ThreadTurn,
    TokenUsage,
    TurnKind,
    TurnRole,
    UserAction,
    UserTurn,
)

CUT_NOTE = "\n[... cut: {left} more characters]"
WITHHELD = "[withheld: the integration's secrets could not be loaded to mask this text]"
# The prompt keeps the newest turns within this many characters (about 4 per token).
HISTORY_BUDGET_CHARS = 24_000


class StepKind(StrEnum):
    ASK = "Ask"  # ask the model: a question or a revision comes back
    APPROVE = "Approve"  # deploy the revision, if its tests passed
    OVERRIDE = "Override"  # take a failed verdict as passed, with the user's reason
    CLOSE = "Close"
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
        }.get(turn.action, StepKind.NOTE)
        return Step(kind, turn)
    if status.state is ConversationState.TESTING and status.revision:
        return Step(StepKind.FOLLOW)
    return Step(StepKind.NOTHING)


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


def history(
    status: IntegrationConversationStatus, budget: int = HISTORY_BUDGET_CHARS
) -> tuple[str, list[tuple[str, str]]]:
    """The thread for a prompt: the first user words (the description), then the newest turns
    as (role, text) within `budget` characters, oldest first; older turns are summarised as a
    count. Texts are the masked copies in status, never the spec's."""
    said = [t for t in status.turns if t.text]
    first = next((t for t in said if t.role is TurnRole.USER), None)
    rest = [t for t in said if t is not first]
    kept: list[tuple[str, str]] = []
    used = 0
    for turn in reversed(rest):
        text = turn.text or ""
        if turn.role is TurnRole.AGENT and turn.revision and turn.kind is TurnKind.REVISION:
            text = f"(proposed revision {turn.revision}) {text}"
        if used + len(text) > budget:
            break
        used += len(text)
        kept.append(("user" if turn.role is TurnRole.USER else "assistant", text))
    kept.reverse()
    left_out = len(rest) - len(kept) + status.trimmed
    description = first.text if first and first.text else ""
    if left_out:
        description += f"\n\n({left_out} older turn(s) of this conversation are left out.)"
    return description, kept


def approve_refusal(revision: str | None, tested: bool | None, overridden: bool) -> str | None:
    """Why an Approve cannot deploy (None: it may)."""
    if revision is None:
        return "there is no revision to deploy yet: describe what you need and I will write one"
    if tested is True or overridden:
        return None
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


CONVERSATION_ANNOTATION = "agent.docrelay.io/conversation"
"""On an Integration: the Build thread writing its code; the one-shot generation stands aside."""


def in_conversation(annotations: dict[str, str] | None) -> bool:
    return bool((annotations or {}).get(CONVERSATION_ANNOTATION))


# --- judging a test against the instructions ---------------------------------------------------

JUDGE_SYSTEM = """You check whether an integration's test runs did what the user asked.
You are given the user's instructions and, for each test run, its result, the end of its log
(secrets masked as ***) and its outbound connections through the egress proxy (method, host,
path, status). A run without an error can still ignore the instructions: no request where one
was asked for, a secret that was to be used and was not, the wrong data sent. Answer with one
JSON object and nothing else: {"verdict": "pass" or "fail", "reasons": ["one line each"]}."""

MAX_EVIDENCE_LOG = 2000


@dataclass(frozen=True)
class RunEvidence:
    name: str
    phase: str | None
    result: str | None
    error: str | None
    log: str | None  # masked when it was stored
    outbound: tuple[str, ...]  # "POST host:port /path -> 201" lines


def outbound_lines(parts: Sequence[object]) -> tuple[str, ...]:
    """The egress record's entries (from every part of `<job>-egress`) as one line each."""
    lines = []
    for part in parts:
        entries = part.get("entries") if isinstance(part, dict) else None
        for entry in entries or []:
            if not isinstance(entry, dict):
                continue
            allowed = "" if entry.get("allowed") else " (refused)"
            lines.append(
                f"{entry.get('method', '?')} {entry.get('host', '?')}:{entry.get('port', '?')} "
                f"{entry.get('path') or ''} -> {entry.get('status', '?')}{allowed}".replace(
                    "  ", " "
                )
            )
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
        parts += [
            f"## Test run {run.name}: {run.phase or 'unknown'}",
            f"result: {result}",
            f"error: {run.error or '(none)'}",
            "outbound connections:\n" + ("\n".join(run.outbound) or "(none)"),
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
