"""The agent in conversation: answers each user turn of an IntegrationConversation.

A thread of its own polls the watched namespace (level-based: `status.answered` says which
user turns are owed an answer, so a restarted operator carries on). For each thread it
gathers, asks `reconcile.conversation.next_step`, acts, and writes the status once. The model
is asked through the agent worker (handlers/agent.py: provider, health, key), revisions and
their test runs are made and followed as the agent's generations are. Every text written or
sent to the model is the masked copy (docrelay/masking.py) of what the user wrote.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kopf

from docrelay.agent.chat import ProviderError
from docrelay.agent.loop import converse
from docrelay.agent.nodecheck import node_syntax_check
from docrelay.agent.prompts import FixRequest, GenerateRequest
from docrelay.handlers import judge
from docrelay.handlers.agent import AGENT_MEMO_KEY, AgentWorker, IntegrationTick
from docrelay.handlers.boundary import post_event
from docrelay.handlers.runs import RUNS_MEMO_KEY
from docrelay.kube import REVISIONS, KubeError
from docrelay.kube import agent as kube_agent
from docrelay.kube import runs as kube_runs
from docrelay.kube.cache import Store, integration_or_get
from docrelay.models.agent import AgentState, AgentTask
from docrelay.models.conversation import (
    ConversationPurpose,
    ConversationState,
    IntegrationConversation,
    IntegrationConversationStatus,
    TestVerdict,
    TokenUsage,
    TurnKind,
    TurnRole,
    UserAction,
    UserTurn,
    Verdict,
)
from docrelay.models.integration import DeployPolicy
from docrelay.models.revision import SourceType
from docrelay.models.run import IntegrationRun
from docrelay.reconcile.agent import (
    belongs_to,
    failure_fields,
    failure_text,
    not_configured_message,
)
from docrelay.reconcile.conversation import (
    NO_TEST_DOCUMENT,
    StepKind,
    agent_turn,
    answer_tokens,
    approve_refusal,
    chat_prompt,
    deploying_manually,
    documents_to_test,
    idle_past_retention,
    look_fingerprint,
    masked,
    next_step,
    no_revision_text,
    outcome_of_judgement,
    outcome_without_judge,
    override_text,
    override_verdict,
    parse_time,
    retention_days,
    revision_tested,
    revision_text,
    round_of,
    round_refusal,
    round_runs,
    round_text,
    run_versions,
    user_copy,
    user_thread_words,
    with_turns,
    worth_a_look,
)

log = logging.getLogger("docrelay.agent.chat")

CONVERSATIONS = "integrationconversations"
NOT_OFFERED = "I do not know what to do with that turn"


class ConversationWorker:
    """The conversations' thread; the model and its health are the agent worker's."""

    def __init__(self, memo: Any, namespace: str | None) -> None:
        self.memo, self.namespace = memo, namespace
        self.stop_event = threading.Event()
        self.store: Store | None = None  # the conversations, watch-fed (started lazily)
        self.looked: dict[tuple[str, str], tuple[str, ...]] = {}  # what each look saw

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
                if self.store is not None:
                    self.store.stop()
                return
            if agent is None:
                continue
            try:
                self.tick(agent)
            except KubeError as exc:
                log.warning("chat: %s; will retry", exc)
            except Exception:  # never let the worker die
                log.exception("chat: unexpected error; will retry")

    def conversations(self, agent: AgentWorker) -> list[dict[str, Any]]:
        """Every conversation, from a watch-fed store (no list call per look once it has
        synced; a list until then)."""
        if self.store is None:
            self.store = Store(agent.kube, CONVERSATIONS, self.namespace or None)
            self.store.start()
        if self.store.synced:
            return self.store.list_shallow()
        return agent.kube.list_objects(CONVERSATIONS, self.namespace or None)

    def expired(self, obj: dict[str, Any]) -> bool:
        """Idle past its Integration's runRetention.maxAgeDays (from the cache; no API call)."""
        integrations = self.integrations()
        spec = obj.get("spec") or {}
        owner = integrations.get(obj["metadata"]["namespace"], str(spec.get("integration"))) if (
            integrations is not None and integrations.synced
        ) else None  # fmt: skip
        if owner is None:  # unknown yet (or gone: the garbage collector deletes the thread)
            return False
        status = obj.get("status") or {}
        return idle_past_retention(
            status.get("state"),
            parse_time(status.get("lastTurnAt")),
            parse_time(obj["metadata"].get("creationTimestamp")),
            retention_days(owner),
            datetime.now(UTC),
        )

    def integrations(self) -> Store | None:
        """The runs machinery's watch-fed Integrations, once there."""
        store = getattr(self.memo.get(RUNS_MEMO_KEY), "integrations", None)
        return store if isinstance(store, Store) else None

    def tick(self, agent: AgentWorker) -> None:
        """Look at the threads that owe an answer or follow tests, each only when it or its
        test runs changed since the last look (read from the watch-fed caches: no API call
        for a thread at rest)."""
        runs = agent._cached("cache", kube_runs.RUNS)
        versions = run_versions(runs)
        seen = set()
        for obj in self.conversations(agent):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            seen.add((ns, name))
            if self.expired(obj):
                log.info("chat: %s/%s idle past its retention; deleting it", ns, name)
                meta = obj["metadata"]
                agent.kube.delete(
                    CONVERSATIONS, ns, name,
                    {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
                )  # fmt: skip
                continue
            test_runs = (obj.get("status") or {}).get("testRuns") or []
            now = look_fingerprint(
                str(obj["metadata"].get("resourceVersion", "")),
                [versions.get((ns, str(r)), "") for r in test_runs],
            )
            if not worth_a_look(self.looked.get((ns, name)), now):
                continue
            try:
                Thread(self, agent, copy.deepcopy(obj), runs).run()
                self.looked[(ns, name)] = now  # a failed look is tried again next time
            except KubeError as exc:
                log.warning("chat: %s/%s: %s; will retry", ns, name, exc)
            except Exception:
                log.exception("chat: %s/%s: unexpected error", ns, name)
        for gone in set(self.looked) - seen:
            del self.looked[gone]

    def masker(self, kube: Any, ns: str) -> Callable[[str], str] | None:
        """Masks every form of every value sealed in the namespace, whatever its secret's state:
        a value a user pastes into a turn just after `docrelay secret set`, before its secret
        is Active, is hidden too. None if there are values and they cannot be opened."""
        return judge.namespace_masker(self.memo.get(RUNS_MEMO_KEY), kube, ns, "chat")


class Thread:
    """One look at one conversation."""

    def __init__(
        self,
        owner: ConversationWorker,
        agent: AgentWorker,
        obj: dict[str, Any],
        runs: list[dict[str, Any]],
    ):
        self.owner, self.agent, self.kube, self.obj = owner, agent, agent.kube, obj
        self.all_runs = runs
        self.conversation = IntegrationConversation.model_validate(obj)
        self.spec = self.conversation.spec
        self.status = self.conversation.status or IntegrationConversationStatus()
        self.ns, self.name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        self.now = datetime.now(UTC).replace(microsecond=0)

    def run(self) -> None:
        step = next_step(self.spec, self.status)
        if step.kind is StepKind.NOTHING:
            return
        integration = integration_or_get(
            self.owner.integrations(), self.kube, self.ns, self.spec.integration
        )
        if integration is None:
            if step.turn is not None:
                self._reply(
                    step.turn, TurnKind.ERROR, f"the Integration {self.spec.integration} is gone",
                    ConversationState.FAILED, None,
                )  # fmt: skip
                self._write()
            return
        runs = [
            copy.deepcopy(r) for r in self.all_runs if belongs_to(r, self.ns, self.spec.integration)
        ]
        # The revisions this look may need, each read by name (no list of them).
        wanted = {self.status.revision, step.turn.revision if step.turn else None}
        revisions: dict[str, dict[str, Any]] = {}
        for name in sorted(n for n in wanted if n):
            found = self.kube.get(REVISIONS, self.ns, name)
            if found is not None and found["spec"].get("integration") == self.spec.integration:
                revisions[name] = found
        tick = IntegrationTick(self.agent, integration, runs=runs, revisions=revisions)
        mask = self.owner.masker(self.kube, self.ns)
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
        elif step.kind is StepKind.TEST:
            assert step.turn is not None
            self._test(tick, step.turn, revisions, step.turn.action is UserAction.LIVE_TEST)
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
            text = not_configured_message(self.agent.health.description)
            self._reply(turn, TurnKind.ERROR, text, ConversationState.FAILED, None)
            return
        if mask is None:
            text = "I cannot read your words safely: the integration's secrets do not open"
            self._reply(turn, TurnKind.ERROR, text, ConversationState.WAITING_FOR_USER, None)
            return
        current = self.status.revision
        fix: FixRequest | None = None
        if self.spec.purpose is ConversationPurpose.FIX:
            fix = self._fix_request(tick, mask)
            if fix is None:
                text = f"the run {self.spec.run} or the code it ran is gone: nothing to fix"
                self._reply(turn, TurnKind.ERROR, text, ConversationState.FAILED, current)
                return
            current = current or fix.revision
        code = tick._code(current) if current else None
        context = tick._context()
        fitted = chat_prompt(
            self.status,
            lambda words: fix or GenerateRequest(**context, instructions=words or "(none)"),
            current,
            code,
            self.agent.settings.agent_prompt_tokens,
        )
        try:
            result = self.agent.converse(
                lambda p: converse(
                    p,
                    fitted.prompt,
                    fitted.request,
                    max_attempts=self.agent.settings.agent_code_attempts,
                    current_code=code,
                    syntax_check=node_syntax_check,
                    token_budget=self.agent.settings.agent_turn_tokens,
                )
            )
        except ProviderError as exc:
            text = f"the language model could not answer: {exc}; say it again to retry"
            self._reply(turn, TurnKind.ERROR, text, ConversationState.WAITING_FOR_USER, current)
            return
        tokens, prompt_tokens = answer_tokens(
            fitted.tokens, [(a.usage.input_tokens, a.usage.output_tokens) for a in result.attempts]
        )
        self.status = self.status.model_copy(update={"prompt_tokens": prompt_tokens})
        model = result.model[:128]
        if result.question is not None:
            self._reply(
                turn, TurnKind.QUESTION, masked(result.question, mask) or "?",
                ConversationState.WAITING_FOR_USER, current, model=model, tokens=tokens,
            )  # fmt: skip
            return
        if result.code is None:
            self._reply(
                turn, TurnKind.NOTE, result.failure or "the model's code was refused",
                ConversationState.WAITING_FOR_USER, current, model=model, tokens=tokens,
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
        text = revision_text(masked(result.explanation, mask), revision)
        self._reply(
            turn, TurnKind.REVISION, text, ConversationState.TESTING, revision, model=model,
            tokens=tokens,
        )  # fmt: skip
        self.status = self.status.model_copy(
            update={"revision": revision, "test_runs": (), "live_test": False}
        )

    def _test(
        self,
        tick: IntegrationTick,
        turn: UserTurn,
        revisions: dict[str, dict[str, Any]],
        live: bool,
    ) -> None:
        """A Test or LiveTest turn: a new round of test runs of the revision, on the documents
        its last round used (dry unless LiveTest: docs/runner.md, "Dry runs")."""
        revision = turn.revision or self.status.revision
        state, known = self.status.state, revision in revisions
        refusal = round_refusal(revision, known, state, self.status.revision)
        if refusal is not None:
            about = revision if revision is None or not known else self.status.revision
            self._reply(turn, TurnKind.NOTE, refusal, state, about)
            return
        assert revision is not None
        plan = self._test_plan(tick, revisions[revision])
        if not plan:
            self._reply(turn, TurnKind.NOTE, NO_TEST_DOCUMENT, state, revision)
            return
        names = kube_agent.create_test_runs(
            self.kube, self.ns, self.spec.integration, revision, plan[:10],
            dry_run=not live, round_=round_of(self.spec, turn),
        )  # fmt: skip
        self._reply(
            turn, TurnKind.NOTE, round_text(revision, live, names),
            ConversationState.TESTING, revision,
        )  # fmt: skip
        self.status = self.status.model_copy(
            update={"revision": revision, "test_runs": tuple(names), "live_test": live}
        )

    def _test_plan(self, tick: IntegrationTick, revision: dict[str, Any]) -> list[tuple[str, str]]:
        named = [str(e.get("name")) for e in (revision.get("status") or {}).get("testRuns") or []]
        plan = documents_to_test(named, tick.runs_by_name, self.spec.run)
        if plan:
            return plan
        trigger = tick.integration.spec.trigger.value
        return [(d, trigger) for d in tick._test_documents()]

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
        error = failure_text(str(run.metadata.name), status)
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
            **failure_fields(status),
            logs=tick._log(self.spec.run or "", status.attempt) or status.log_tail or "",
            instructions=tick.integration.spec.instructions,
        )

    def _follow(self, tick: IntegrationTick, runs: list[dict[str, Any]]) -> None:
        revision = self.status.revision
        assert revision is not None
        fixing = self.spec.run if self.spec.purpose is ConversationPurpose.FIX else None
        # Nothing deploys by itself before the judgement: the thread deploys (Automatic) after.
        policy = tick.integration.spec.deploy_policy
        tick.integration = deploying_manually(tick.integration)
        task = tick.follow_tests(
            "fix" if fixing else "generation",
            AgentTask(
                state=AgentState.TESTING,
                revision=revision,
                fix_of_run=fixing,
                test_runs=self.status.test_runs,
            ),
        )
        if task.test_runs[:10] != self.status.test_runs:
            self.status = self.status.model_copy(update={"test_runs": task.test_runs[:10]})
        if task.state is AgentState.TESTING:
            return
        by_name = {r["metadata"]["name"]: r for r in runs}
        entries = round_runs(task.test_runs, by_name)
        live = self.status.live_test
        passed = task.state in (AgentState.TEST_PASSED, AgentState.DEPLOYED)
        outcome = outcome_without_judge(revision, entries, passed, live, task.message)
        tokens = None
        if outcome is None:
            ok, reasons, tokens = self._judge(tick, task.test_runs, by_name)
            outcome = outcome_of_judgement(revision, entries, ok, reasons)
        if outcome.tested is not None:
            self._set_tested(revision, *outcome.tested)
        passed = outcome.verdict is Verdict.PASS
        text = outcome.text
        verdict = TestVerdict(
            verdict=outcome.verdict,
            reasons=outcome.reasons[:10],
            test_runs=task.test_runs[:10],
            dry_run=not live,
        )
        answer = agent_turn(
            self.status, TurnKind.TEST_VERDICT, text, self.now, revision=revision,
            verdict=verdict, tokens=tokens,
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
        mask = self.owner.masker(self.kube, self.ns)
        runs = judge.evidence(self.kube, self.ns, names, by_name, tick._log, mask)
        return judge.judge(self.agent, user_thread_words(self.status), runs)

    def _set_tested(self, revision: str, ok: bool, reason: str, message: str) -> None:
        self.agent.revisions.observe(
            judge.set_tested(self.kube, self.ns, revision, ok, reason, message, self.now)
        )

    def _deployed(self, revision: str, why: str) -> None:
        answer = agent_turn(
            self.status, TurnKind.DEPLOY, f"revision {revision}: {why}", self.now,
            revision=revision,
        )  # fmt: skip
        self.status = with_turns(
            self.status, [answer], self.now,
            state=ConversationState.DEPLOYED, deployed_revision=revision,
        )  # fmt: skip

    def _tested(self, revision: dict[str, Any] | None) -> tuple[bool | None, str | None]:
        """The revision's Tested condition: (True/False/None when unknown, its reason)."""
        found = judge.tested_condition(revision)
        return revision_tested(
            found.status.value if found else None, found.reason if found else None
        )

    def _approve(
        self, tick: IntegrationTick, turn: UserTurn, revisions: dict[str, dict[str, Any]]
    ) -> None:
        revision = turn.revision or self.status.revision
        obj = revisions.get(revision or "")
        tested, reason = self._tested(obj) if obj else (None, None)
        refusal = approve_refusal(revision, tested, False, reason)
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
            text = no_revision_text(revision, "override")
            self._reply(turn, TurnKind.NOTE, text, self.status.state, revision)
            return
        reason = masked(turn.text, mask) or "(no reason)"
        self._set_tested(
            revision, True, "Overridden", f"overridden by {turn.by or 'a user'}: {reason}"
        )
        self._reply(
            turn, TurnKind.TEST_VERDICT, override_text(revision, reason),
            ConversationState.WAITING_FOR_USER, revision, verdict=override_verdict(turn, reason),
        )  # fmt: skip

    def _write(self) -> None:
        wanted = self.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        if (self.obj.get("status") or {}) == wanted:
            return
        self.kube.patch_status(
            CONVERSATIONS, self.ns, self.name, self.status.model_dump(mode="json", by_alias=True)
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
