"""The judge: test runs that passed (no error) checked against the user's words (docs/agent.md,
"Tests that check the instructions"), for conversations and the one-shot generate/fix flow.

Gathers each run's evidence (its result, error, the end of its stored masked log, the egress
proxy's record `<job>-egress` and the broker's record of account actions `<job>-broker`), asks
the model once through the agent worker (its provider, key and health), and writes the
revision's `Tested` condition with the judgement. The decisions and texts are pure
(`reconcile/conversation.py`: `judge_prompt`, `parse_judgement`, the record lines).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from docrelay.agent.chat import Completion, Message, Provider, ProviderError
from docrelay.agent.loop import AgentResult
from docrelay.builders.run import broker_record_name, egress_record_name
from docrelay.handlers.run_controller import integration_secrets
from docrelay.kube import REVISIONS, KubeError
from docrelay.kube import egress as kube_egress
from docrelay.masking import Masker
from docrelay.models.conditions import Condition, ConditionStatus, find_condition, set_condition
from docrelay.models.conversation import TokenUsage
from docrelay.models.revision import RevisionConditionType
from docrelay.reconcile.conversation import (
    JUDGE_SYSTEM,
    RunEvidence,
    action_lines,
    cut_text,
    judge_prompt,
    outbound_lines,
    parse_judgement,
)
from docrelay.reconcile.secrets import openable_values

log = logging.getLogger(__name__)

JUDGED_PASSED = "JudgedPassed"
JUDGED_FAILED = "JudgedFailed"
OVERRIDDEN = "Overridden"
JUDGED = frozenset({JUDGED_PASSED, JUDGED_FAILED, OVERRIDDEN})


class Asker(Protocol):
    """What the judge needs of the agent worker (handlers/agent.py's AgentWorker)."""

    settings: Any

    def converse(self, ask: Callable[[Provider], AgentResult]) -> AgentResult: ...


def namespace_masker(runs: Any, kube: Any, ns: str, who: str) -> Callable[[str], str] | None:
    """Masks every form of every value sealed in the namespace, whatever its secret's state
    (`runs`: the runs machinery, its caches and sealing keys; `who` starts the log lines). None
    if there are values and they cannot be opened: a caller then leaves out what it would have
    masked (fails closed)."""
    sealing = getattr(runs, "sealing", None)
    try:
        objects = integration_secrets(runs, kube, ns)
    except KubeError as exc:  # the message names no value (docrelay.kube)
        log.warning("%s: the secrets to mask could not be listed: %s", who, type(exc).__name__)
        return None
    if not objects:
        return Masker([]).mask
    if sealing is None or sealing.ring is None:
        log.warning("%s: the sealing keys are not loaded yet; nothing is masked or sent", who)
        return None
    values = openable_values(sealing.ring, objects)
    return Masker(p.decode("utf-8", errors="replace") for p in values).mask


def read_record(
    kube: Any, ns: str, name: str, mask: Callable[[str], str] | None = None
) -> list[Any]:
    """The parts of a run attempt's record ConfigMap (one JSON key per gateway process), as
    masked with the run's values when the operator collected it; a record not collected has
    its free text (hosts, paths, file names: FREE_TEXT_FIELDS) masked with `mask`, or left
    out without one."""
    return kube_egress.read_record_parts(kube, ns, name, mask) or []


def evidence(
    kube: Any,
    ns: str,
    names: Sequence[str],
    runs_by_name: Mapping[str, Mapping[str, Any]],
    read_log: Callable[[str, int], str | None],
    mask: Callable[[str], str] | None = None,
) -> list[RunEvidence]:
    """Each run's evidence; `mask` (the integration's values) masks a record the operator has
    not collected (without it, such a record's paths and file names are left out)."""
    found = []
    for name in names:
        run = runs_by_name.get(name) or {}
        status = run.get("status") or {}
        attempt = int(status.get("attempt") or 0)
        found.append(
            RunEvidence(
                name=name,
                phase=status.get("phase"),
                result=status.get("resultSummary"),
                error=status.get("errorMessage"),
                log=read_log(name, attempt),
                outbound=outbound_lines(
                    read_record(kube, ns, egress_record_name(name, attempt), mask)
                    if attempt
                    else []
                ),
                actions=action_lines(
                    read_record(kube, ns, broker_record_name(name, attempt), mask)
                    if attempt
                    else []
                ),
                dry_run=bool((run.get("spec") or {}).get("dryRun")),
            )
        )
    return found


def complete(agent: Asker, system: str, prompt: str) -> Completion:
    """One plain question through the agent worker (its key, its provider health)."""
    answers: list[Completion] = []

    def ask(provider: Provider) -> AgentResult:
        answers.append(provider.complete(system, [Message("user", prompt)]))
        return AgentResult(code=None, model=answers[0].model, prompt_hash="", attempts=())

    agent.converse(ask)
    return answers[0]


def judge(
    agent: Asker, asked: str, runs: Sequence[RunEvidence]
) -> tuple[bool, tuple[str, ...], TokenUsage | None]:
    """(passed, reasons, tokens): the model's judgement of the runs against `asked` (masked
    words). A provider error or an unreadable answer is a failed judgement, never a pass."""
    prompt = judge_prompt(asked, runs, agent.settings.agent_allow_document_values)
    try:
        completion = complete(agent, JUDGE_SYSTEM, prompt)
    except ProviderError as exc:
        return False, (cut_text(f"the test could not be judged: {exc}", 300),), None
    passed, reasons = parse_judgement(completion.text)
    spent = TokenUsage(
        input_tokens=completion.usage.input_tokens or 0,
        output_tokens=completion.usage.output_tokens or 0,
    )
    return passed, reasons, spent


def tested_condition(revision: Mapping[str, Any] | None) -> Condition | None:
    conditions = ((revision or {}).get("status") or {}).get("conditions") or []
    return find_condition(
        [Condition.model_validate(c) for c in conditions], RevisionConditionType.TESTED.value
    )


def judged_condition(
    ok: bool, reason: str, message: str, generation: int | None, now: datetime
) -> Condition:
    return Condition(
        type=RevisionConditionType.TESTED.value,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message[:1000],
        observed_generation=generation,
        last_transition_time=now,
    )


def set_tested(
    kube: Any, ns: str, revision: str, ok: bool, reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The revision's Tested condition, as the judgement (or an override) says; the revision
    as the API server stored it."""
    obj = kube.get(REVISIONS, ns, revision) or {}
    conditions = [
        Condition.model_validate(c) for c in (obj.get("status") or {}).get("conditions") or []
    ]
    condition = judged_condition(
        ok, reason, message, (obj.get("metadata") or {}).get("generation"), now
    )
    return kube.patch_status(
        REVISIONS, ns, revision,
        {"conditions": [
            c.model_dump(mode="json", by_alias=True, exclude_none=True)
            for c in set_condition(conditions, condition, now)
        ]},
    )  # fmt: skip
