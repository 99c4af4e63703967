"""The agent in conversation: answers each user turn of an IntegrationConversation.

A thread of its own polls the watched namespace (level-based: `status.answered` says which
user turns are owed an answer, so a restarted operator carries on). For each thread it
gathers, asks `reconcile.conversation.next_step`, acts, and writes the status once. The model
is asked through the agent worker (handlers/agent.py: provider, health, key), revisions and
their test runs are made and followed as the agent's generations are. Every text written or
sent to the model is the masked copy (docrelay/masking.py) of what the user wrote.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from docrelay.agent.chat import Completion, Message, Provider, ProviderError
from docrelay.agent.loop import AgentResult, converse
from docrelay.agent.nodecheck import node_syntax_check
from docrelay.agent.prompts import FixRequest, GenerateRequest, build_chat_prompt
from docrelay.builders.run import egress_record_name
from docrelay.handlers.agent import AGENT_MEMO_KEY, AgentWorker, IntegrationTick
from docrelay.handlers.boundary import post_event
from docrelay.handlers.runs import RUNS_MEMO_KEY, active_secrets, open_secrets
from docrelay.kube import INTEGRATIONS, REVISIONS, KubeError
from docrelay.kube import runs as kube_runs
from docrelay.masking import Masker
from docrelay.models.agent import AgentState, AgentTask
from docrelay.models.conditions import Condition, ConditionStatus, find_condition, set_condition
from docrelay.models.conversation import (
    ConversationPurpose,
    ConversationState,
    IntegrationConversation,
    IntegrationConversationStatus,
    TestVerdict,
    TokenUsage,
    TurnKind,
    TurnRole,
    UserTurn,
    Verdict,
)
from docrelay.models.integration import DeployPolicy
from docrelay.models.revision import RevisionConditionType, SourceType
from docrelay.models.run import IntegrationRun
from docrelay.reconcile.conversation import (
    JUDGE_SYSTEM,
    RunEvidence,
    StepKind,
    agent_turn,
    approve_refusal,
    cut_text,
    history,
    judge_prompt,
    masked,
    next_step,
    outbound_lines,
    parse_judgement,
    test_report,
    user_copy,
    with_turns,
)

log = logging.getLogger("docrelay.agent.chat")

CONVERSATIONS = "integrationconversations"
NOT_OFFERED = (
    "testing again from the thread is not offered yet: a revision's tests run once, when I "
    "propose it"
)


class ConversationWorker:
    """The conversations' thread; the model and its health are the agent worker's."""

    def __init__(self, memo: Any, namespace: str | None) -> None:
        self.memo, self.namespace = memo, namespace
        self.stop_event = threading.Event()

    @property
    def agent(self) -> AgentWorker | None:
        worker = self.memo.get(AGENT_MEMO_KEY)
        return worker if isinstance(worker, AgentWorker) else None

    def start(self) -> None:
        threading.Thread(target=self._loop, name="docrelay-chat", daemon=True).start()

    def _loop(self) -> None:
        while True:
            agent = self.agent
            if self.stop_event.wait(agent.settings.agent_poll_seconds if agent else 1.0):
                return
            if agent is None:
                continue
            try:
                self.tick(agent)
            except KubeError as exc:
                log.warning("chat: %s; will retry", exc)
            except Exception:  # never let the worker die
                log.exception("chat: unexpected error; will retry")

    def tick(self, agent: AgentWorker) -> None:
        for obj in agent.kube.list_objects(CONVERSATIONS, self.namespace or None):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            try:
                Thread(self, agent, obj).run()
            except KubeError as exc:
                log.warning("chat: %s/%s: %s; will retry", ns, name, exc)
            except Exception:
                log.exception("chat: %s/%s: unexpected error", ns, name)

    def masker(self, kube: Any, ns: str, integration: str) -> Callable[[str], str] | None:
        """Masks every form of the integration's secret values; None if they do not open."""
        runs = self.memo.get(RUNS_MEMO_KEY)
        try:
            opened = open_secrets(
                getattr(runs, "sealing", None), active_secrets(kube, ns, integration)
            )
        except Exception as exc:  # the message names no value (handlers/runs.py)
            log.warning("chat: the secrets to mask could not be opened: %s", type(exc).__name__)
            return None
        return Masker(p.decode("utf-8", errors="replace") for p, _ in opened.values()).mask


class Thread:
    """One look at one conversation."""

    def __init__(self, owner: ConversationWorker, agent: AgentWorker, obj: dict[str, Any]):
        self.owner, self.agent, self.kube, self.obj = owner, agent, agent.kube, obj
        self.conversation = IntegrationConversation.model_validate(obj)
        self.spec = self.conversation.spec
        self.status = self.conversation.status or IntegrationConversationStatus()
        self.ns, self.name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        self.now = datetime.now(UTC).replace(microsecond=0)

    def run(self) -> None:
        step = next_step(self.spec, self.status)
        if step.kind is StepKind.NOTHING:
            return
        integration = self.kube.get(INTEGRATIONS, self.ns, self.spec.integration)
        if integration is None:
            if step.turn is not None:
                self._reply(
                    step.turn, TurnKind.ERROR, f"the Integration {self.spec.integration} is gone",
                    ConversationState.FAILED, None,
                )  # fmt: skip
                self._write()
            return
        runs = [
            r
            for r in self.kube.list_objects(kube_runs.RUNS, self.ns)
            if (r.get("spec") or {}).get("integration") == self.spec.integration
        ]
        revisions = {
            r["metadata"]["name"]: r
            for r in self.kube.list_objects(REVISIONS, self.ns)
            if (r.get("spec") or {}).get("integration") == self.spec.integration
        }
        tick = IntegrationTick(self.agent, integration, runs=runs, revisions=revisions)
        mask = self.owner.masker(self.kube, self.ns, self.spec.integration)
        if step.turn is not None:
            self.status = with_turns(self.status, [user_copy(step.turn, mask, self.now)], self.now)
        if step.kind is StepKind.ASK:
            assert step.turn is not None
            self._ask(tick, step.turn, mask)
        elif step.kind is StepKind.APPROVE:
            assert step.turn is not None
            self._approve(tick, step.turn, revisions)
        elif step.kind is StepKind.OVERRIDE:
            assert step.turn is not None
            self._override(tick, step.turn, revisions, mask)
        elif step.kind is StepKind.CLOSE:
            assert step.turn is not None
            self.status = self.status.model_copy(
                update={"state": ConversationState.CLOSED, "answered": step.turn.id}
            )
        elif step.kind is StepKind.NOTE:
            assert step.turn is not None
            self._reply(step.turn, TurnKind.NOTE, NOT_OFFERED, self.status.state, None)
        elif step.kind is StepKind.FOLLOW:
            self._follow(tick, runs)
        self._write()
        for about, kind, reason, message in tick.events:
            post_event(self.kube, about, kind, reason, message)

    # --- answers -----------------------------------------------------------------------------

    def _reply(
        self,
        turn: UserTurn,
        kind: TurnKind,
        text: str,
        state: ConversationState | None,
        revision: str | None,
        **fields: Any,
    ) -> None:
        answer = agent_turn(
            self.status, kind, text, self.now, in_reply_to=turn.id, revision=revision, **fields
        )
        self.status = with_turns(self.status, [answer], self.now, state=state, answered=turn.id)

    def _ask(
        self, tick: IntegrationTick, turn: UserTurn, mask: Callable[[str], str] | None
    ) -> None:
        if not self.agent.health.configured:
            text = "the agent is not configured for this install: " + self.agent.health.description
            self._reply(turn, TurnKind.ERROR, text, ConversationState.FAILED, None)
            return
        if mask is None:
            text = "I cannot read your words safely: the integration's secrets do not open"
            self._reply(turn, TurnKind.ERROR, text, ConversationState.WAITING_FOR_USER, None)
            return
        description, turns = history(self.status)
        current = self.status.revision
        request: GenerateRequest | FixRequest
        if self.spec.purpose is ConversationPurpose.FIX:
            fix = self._fix_request(tick, mask)
            if fix is None:
                text = f"the run {self.spec.run} or the code it ran is gone: nothing to fix"
                self._reply(turn, TurnKind.ERROR, text, ConversationState.FAILED, current)
                return
            request = fix
            turns = [("user", description), *turns]
            current = current or fix.revision
        else:
            request = GenerateRequest(**tick._context(), instructions=description or "(none)")
        code = tick._code(current) if current else None
        if code and self.status.revision and turns:
            turns = [
                *turns[:-1],
                ("assistant", f"The code of revision {current} now:\n```\n{code}\n```"),
                turns[-1],
            ]
        prompt = build_chat_prompt(request, turns)
        try:
            result = self.agent.converse(
                lambda p: converse(
                    p,
                    prompt,
                    request,
                    max_attempts=self.agent.settings.agent_code_attempts,
                    current_code=code,
                    syntax_check=node_syntax_check,
                )
            )
        except ProviderError as exc:
            text = f"the language model could not answer: {exc}; say it again to retry"
            self._reply(turn, TurnKind.ERROR, text, ConversationState.WAITING_FOR_USER, current)
            return
        spent = _tokens(result)
        model = result.model[:128]
        if result.question is not None:
            self._reply(
                turn, TurnKind.QUESTION, masked(result.question, mask) or "?",
                ConversationState.WAITING_FOR_USER, current, model=model, tokens=spent,
            )  # fmt: skip
            return
        if result.code is None:
            self._reply(
                turn, TurnKind.NOTE, result.failure or "the model's code was refused",
                ConversationState.WAITING_FOR_USER, current, model=model, tokens=spent,
            )  # fmt: skip
            return
        fixing = self.spec.run if self.spec.purpose is ConversationPurpose.FIX else None
        revision = tick._create_revision(
            result,
            SourceType.FIX if fixing else SourceType.AGENT,
            user=turn.by,
            fix_of_run=fixing,
            parent=current,
        )
        words = masked(result.explanation, mask) or "Here is the code."
        self._reply(
            turn, TurnKind.REVISION,
            f"{words}\n\nI proposed it as revision {revision}; it is being test-run now.",
            ConversationState.TESTING, revision, model=model, tokens=spent,
        )  # fmt: skip
        self.status = self.status.model_copy(update={"revision": revision})

    def _fix_request(
        self, tick: IntegrationTick, mask: Callable[[str], str] | None
    ) -> FixRequest | None:
        """The failed run's code, error and stored (masked) log; the thread starts with them."""
        raw = tick.runs_by_name.get(self.spec.run or "")
        run = IntegrationRun.model_validate(raw) if raw else None
        status = run.status if run else None
        if run is None or status is None or not status.revision:
            return None
        code = tick._code(status.revision)
        if code is None:
            return None
        kind = status.exception_type or status.error_class or "Error"
        error = f"run {run.metadata.name} failed on revision {status.revision}: {kind}: "
        error += status.error_message or ""
        if not any(t.role is TurnRole.AGENT for t in self.status.turns):
            seed = agent_turn(
                self.status, TurnKind.NOTE,
                masked(error, mask) or "",
                self.now, revision=status.revision,
            )  # fmt: skip
            self.status = with_turns(self.status, [seed], self.now)
        return FixRequest(
            **tick._context(),
            run=self.spec.run or "",
            revision=status.revision,
            code=code,
            error_class=status.error_class.value if status.error_class else "Unknown",
            exception_type=status.exception_type,
            error_message=status.error_message or "",
            logs=tick._log(self.spec.run or "", status.attempt) or status.log_tail or "",
            instructions=tick.integration.spec.instructions,
        )

    def _follow(self, tick: IntegrationTick, runs: list[dict[str, Any]]) -> None:
        revision = self.status.revision
        assert revision is not None
        fixing = self.spec.run if self.spec.purpose is ConversationPurpose.FIX else None
        # Nothing deploys by itself before the judgement: the thread deploys (Automatic) after.
        policy = tick.integration.spec.deploy_policy
        tick.integration = tick.integration.model_copy(
            update={
                "spec": tick.integration.spec.model_copy(
                    update={"deploy_policy": DeployPolicy.MANUAL}
                )
            }
        )
        task = tick.follow_tests(
            "fix" if fixing else "generation",
            AgentTask(state=AgentState.TESTING, revision=revision, fix_of_run=fixing),
        )
        if task.state is AgentState.TESTING:
            return
        by_name = {r["metadata"]["name"]: r for r in runs}
        entries = []
        for name in task.test_runs:
            status = (by_name.get(name) or {}).get("status") or {}
            entries.append((name, status.get("phase"), status.get("errorMessage")))
        passed = task.state in (AgentState.TEST_PASSED, AgentState.DEPLOYED)
        reasons = tuple(
            f"{n}: {p}: {(e or '')[:200]}".rstrip(": ") for n, p, e in entries if not passed
        )[:10]
        text = test_report(revision, entries) if entries else (task.message or "")
        spent = None
        if passed:
            passed, reasons, spent = self._judge(tick, task.test_runs, by_name)
            if passed:
                said = "; ".join(reasons or ("no reason given",))
                text += "\nThey did what you asked: " + said
                self._set_tested(revision, True, "JudgedPassed", said)
            else:
                text = (
                    f"revision {revision} ran without an error, but it does not do what you "
                    "asked:\n"
                    + "\n".join(f"- {r}" for r in reasons)
                    + "\nTell me what to change, or override this verdict with your reason."
                )
                self._set_tested(revision, False, "JudgedFailed", "; ".join(reasons))
        verdict = TestVerdict(
            verdict=Verdict.PASS if passed else Verdict.FAIL,
            reasons=reasons,
            test_runs=task.test_runs[:10],
            dry_run=False,
        )
        answer = agent_turn(
            self.status, TurnKind.TEST_VERDICT, text, self.now, revision=revision,
            verdict=verdict, tokens=spent,
        )  # fmt: skip
        self.status = with_turns(
            self.status, [answer], self.now, state=ConversationState.WAITING_FOR_USER
        )
        if passed and policy is DeployPolicy.AUTOMATIC:
            tick._request_deploy(revision)
            self._deployed(revision, "deploying it: the integration's deploy policy is Automatic")

    def _judge(
        self, tick: IntegrationTick, names: tuple[str, ...], by_name: dict[str, dict[str, Any]]
    ) -> tuple[bool, tuple[str, ...], TokenUsage | None]:
        """The model's judgement of the test runs' evidence against the user's words."""
        evidence = []
        for name in names:
            status = (by_name.get(name) or {}).get("status") or {}
            attempt = int(status.get("attempt") or 0)
            record = kube_runs.read_config_map_data(
                self.kube, self.ns, egress_record_name(name, attempt)
            ) if attempt else None  # fmt: skip
            parts = []
            for value in (record or {}).values():
                try:
                    parts.append(json.loads(value))
                except ValueError:
                    continue
            evidence.append(
                RunEvidence(
                    name=name,
                    phase=status.get("phase"),
                    result=status.get("resultSummary"),
                    error=status.get("errorMessage"),
                    log=tick._log(name, attempt),
                    outbound=outbound_lines(parts),
                )
            )
        asked = "\n\n".join(
            t.text or "" for t in self.status.turns if t.role is TurnRole.USER and t.text
        )
        prompt = judge_prompt(asked, evidence, self.agent.settings.agent_allow_document_values)
        try:
            completion = self._complete(JUDGE_SYSTEM, prompt)
        except ProviderError as exc:
            return False, (cut_text(f"the test could not be judged: {exc}", 300),), None
        passed, reasons = parse_judgement(completion.text)
        spent = TokenUsage(
            input_tokens=completion.usage.input_tokens or 0,
            output_tokens=completion.usage.output_tokens or 0,
        )
        return passed, reasons, spent

    def _complete(self, system: str, prompt: str) -> Completion:
        """One plain question through the agent worker (its key, its provider health)."""
        answers: list[Completion] = []

        def ask(provider: Provider) -> AgentResult:
            answers.append(provider.complete(system, [Message("user", prompt)]))
            return AgentResult(code=None, model=answers[0].model, prompt_hash="", attempts=())

        self.agent.converse(ask)
        return answers[0]

    def _set_tested(self, revision: str, ok: bool, reason: str, message: str) -> None:
        obj = self.kube.get(REVISIONS, self.ns, revision) or {}
        conditions = [
            Condition.model_validate(c) for c in (obj.get("status") or {}).get("conditions") or []
        ]
        condition = Condition(
            type=RevisionConditionType.TESTED.value,
            status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            reason=reason,
            message=message[:1000],
            observed_generation=(obj.get("metadata") or {}).get("generation"),
            last_transition_time=self.now,
        )
        self.kube.patch_status(
            REVISIONS, self.ns, revision,
            {"conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True)
                for c in set_condition(conditions, condition, self.now)
            ]},
        )  # fmt: skip

    def _deployed(self, revision: str, why: str) -> None:
        answer = agent_turn(
            self.status, TurnKind.DEPLOY, f"revision {revision}: {why}", self.now,
            revision=revision,
        )  # fmt: skip
        self.status = with_turns(
            self.status, [answer], self.now,
            state=ConversationState.DEPLOYED, deployed_revision=revision,
        )  # fmt: skip

    def _tested(self, revision: dict[str, Any] | None) -> bool | None:
        conditions = ((revision or {}).get("status") or {}).get("conditions") or []
        found = find_condition(
            [Condition.model_validate(c) for c in conditions], RevisionConditionType.TESTED.value
        )
        if found is None or found.status is ConditionStatus.UNKNOWN:
            return None
        return found.status is ConditionStatus.TRUE

    def _approve(
        self, tick: IntegrationTick, turn: UserTurn, revisions: dict[str, dict[str, Any]]
    ) -> None:
        revision = turn.revision or self.status.revision
        obj = revisions.get(revision or "")
        refusal = approve_refusal(revision, self._tested(obj) if obj else None, False)
        if revision and obj is None:
            refusal = f"revision {revision} does not exist"
        if refusal is not None:
            self._reply(turn, TurnKind.NOTE, refusal, ConversationState.WAITING_FOR_USER, revision)
            return
        assert revision is not None
        tick._request_deploy(revision)
        self.status = self.status.model_copy(update={"answered": turn.id})
        self._deployed(revision, f"deploying it, as {turn.by or 'you'} approved")

    def _override(
        self,
        tick: IntegrationTick,
        turn: UserTurn,
        revisions: dict[str, dict[str, Any]],
        mask: Callable[[str], str] | None,
    ) -> None:
        revision = turn.revision or self.status.revision
        obj = revisions.get(revision or "")
        if obj is None or revision is None:
            text = f"there is no revision {revision or ''} to override".replace("  ", " ")
            self._reply(turn, TurnKind.NOTE, text, self.status.state, revision)
            return
        reason = masked(turn.text, mask) or "(no reason)"
        self._set_tested(
            revision, True, "Overridden", f"overridden by {turn.by or 'a user'}: {reason}"
        )
        verdict = TestVerdict(
            verdict=Verdict.PASS,
            reasons=("overridden by the user",),
            overridden_by=turn.by or "unknown",
            override_reason=reason[:4000],
        )
        self._reply(
            turn, TurnKind.TEST_VERDICT,
            f"recorded: revision {revision} counts as passed ({reason}). Approve it to deploy.",
            ConversationState.WAITING_FOR_USER, revision, verdict=verdict,
        )  # fmt: skip

    def _write(self) -> None:
        wanted = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if (self.obj.get("status") or {}) == wanted:
            return
        self.kube.patch_status(
            CONVERSATIONS, self.ns, self.name, self.status.model_dump(mode="json", by_alias=True)
        )


def _tokens(result: AgentResult) -> TokenUsage:
    return TokenUsage(
        input_tokens=sum(a.usage.input_tokens or 0 for a in result.attempts),
        output_tokens=sum(a.usage.output_tokens or 0 for a in result.attempts),
    )


def register(registry: kopf.OperatorRegistry, watched_namespace: Callable[[], str | None]) -> None:
    def start(memo: kopf.Memo, **_: Any) -> None:
        worker = ConversationWorker(memo, watched_namespace())
        memo["docrelay.chat"] = worker
        worker.start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        worker = memo.get("docrelay.chat")
        if isinstance(worker, ConversationWorker):
            worker.stop_event.set()

    kopf.on.startup(registry=registry, id="chat")(start)
    kopf.on.cleanup(registry=registry, id="chat")(stop)
