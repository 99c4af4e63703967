"""The agent worker: code from instructions, fixes of failed runs, each test-run before deploy.

One thread per operator looks at the watched namespace every few seconds (level-based, so a
restarted operator carries on where it stopped): gather, decide (reconcile.agent), act. It
asks the language model (agent.loop with a provider from agent.providers), creates revisions
and their test runs, follows the tests, requests an automatic deploy when the policy says so,
and writes `status.agent`, the `AgentAvailable` condition, the revisions' `Tested` condition
and the runs' `status.fix`. Model calls are slow: they happen here, never in a kopf handler.

What reaches a prompt: instructions, the runtime contract, the document type's schema (from
the platform API), secret and account NAMES, the failing code, the error and the run's stored
log (masked by the operator when it was stored). Never a secret value; document values only
with `agent_allow_document_values`.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import kopf
from pydantic import ValidationError

from docrelay.agent.chat import Provider, ProviderError, ProviderRejected, ProviderUnavailable
from docrelay.agent.loop import AgentResult, generate, propose_fix
from docrelay.agent.nodecheck import node_syntax_check
from docrelay.agent.prompts import FixRequest, GenerateRequest
from docrelay.agent.providers import ProviderSettings, SecretKeyRef, build_provider
from docrelay.builders.agent import build_agent_revision, build_test_run
from docrelay.handlers import judge
from docrelay.handlers.boundary import post_event
from docrelay.handlers.context import from_memo
from docrelay.handlers.notify import agent_failed_notice
from docrelay.handlers.runs import RUNS_MEMO_KEY
from docrelay.kube import INTEGRATIONS, REVISIONS, Kube, KubeError, ObjectRef
from docrelay.kube import agent as kube_agent
from docrelay.kube import runs as kube_runs
from docrelay.kube.catalog import grounded_account_refs
from docrelay.kube.revision_cache import RevisionCache
from docrelay.models import API_VERSION
from docrelay.models.agent import AgentState, AgentTask, IntegrationAgentStatus, RunFixStatus
from docrelay.models.conditions import Condition, ConditionStatus
from docrelay.models.integration import Integration, IntegrationStatus
from docrelay.models.revision import RevisionTestRun, SourceType
from docrelay.models.run import IntegrationRun
from docrelay.platform.client import PlatformClient
from docrelay.reconcile.agent import (
    FIX_REQUEST_ANNOTATION,
    GENERATE_REQUEST_ANNOTATION,
    TEST_DOCUMENTS_ANNOTATION,
    AgentReason,
    GenerationDue,
    ProviderHealth,
    after_tests,
    agent_candidates,
    agent_status_patch,
    belongs_to,
    condition_tested,
    cut_message,
    deploy_request_due,
    failed_test_names,
    failure_fields,
    fix_decision,
    fix_proposed_message,
    fix_test_plan,
    followed_fix,
    generated_message,
    generation_due,
    generation_task,
    judge_words,
    model_label,
    needs_live_test_message,
    no_documents_message,
    not_configured_message,
    parse_agent_request,
    pick_test_documents,
    prompt_context,
    record_fix,
    refused_message,
    revision_test_runs,
    revision_tests_patch,
    run_errors,
    run_phase,
    run_time,
    task_after_tests,
    task_testing,
    unconfigured_generation,
    verdict_of,
    waiting_task,
    wants_fix,
)
from docrelay.reconcile.conversation import NEEDS_LIVE_TEST_REASON, dry_stops, in_conversation
from docrelay.reconcile.deploy import DEPLOY_REQUEST_ANNOTATION
from docrelay.reconcile.notify import Notice
from docrelay.settings import OperatorSettings

log = logging.getLogger("docrelay.agent")

AGENT_MEMO_KEY = "docrelay.agent"
# A task in these states has a revision whose tests and deploy the worker follows.
FOLLOWED = (AgentState.TESTING, AgentState.TEST_PASSED)


def provider_settings(settings: OperatorSettings) -> tuple[ProviderSettings | None, str]:
    """The provider the settings describe, or None and what is missing."""
    missing = [
        variable
        for variable, value in (
            ("DOCRELAY_AGENT_KIND", settings.agent_kind),
            ("DOCRELAY_AGENT_BASE_URL", settings.agent_base_url),
            ("DOCRELAY_AGENT_MODEL", settings.agent_model),
        )
        if not value
    ]
    if missing:
        return None, "not set: " + ", ".join(missing)
    try:
        provider = ProviderSettings(
            kind=settings.agent_kind,  # type: ignore[arg-type]
            base_url=settings.agent_base_url,  # type: ignore[arg-type]
            model=settings.agent_model,  # type: ignore[arg-type]
            api_key_secret=SecretKeyRef(
                name=settings.agent_api_key_secret, key=settings.agent_api_key_secret_key
            )
            if settings.agent_api_key_secret
            else None,
            connect_timeout_seconds=min(settings.agent_connect_timeout_seconds, 60),
            read_timeout_seconds=min(settings.agent_read_timeout_seconds, 900),
            max_tokens=settings.agent_max_tokens,
            max_attempts=settings.agent_http_attempts,
            backoff_base_seconds=settings.agent_backoff_base_seconds,
            backoff_cap_seconds=max(
                settings.agent_backoff_cap_seconds, settings.agent_backoff_base_seconds
            ),
            max_tokens_field=settings.agent_max_tokens_field,
        )
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        return None, f"invalid agent settings: {fields}"
    host = (urlsplit(provider.base_url).netloc or "").rsplit("@", 1)[-1]
    return provider, f"model {provider.model} at {host}"


class AgentWorker:
    """The agent's thread, its provider and what it knows of the provider's health."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        namespace: str | None,
        operator_namespace: str | None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.namespace = namespace
        self.operator_namespace = operator_namespace
        self.provider_settings, description = provider_settings(settings)
        self.health = ProviderHealth(self.provider_settings is not None, description)
        self.stop_event = threading.Event()
        self.memo: Any = None  # kopf's memo: the runs machinery's notifier (spec.notify)
        # Revisions, watch-fed: the runs machinery's store should it keep one, else its own.
        self.revisions = RevisionCache(
            kube, namespace, lambda: getattr(self._runs(), "revisions", None)
        )

    def _runs(self) -> Any:
        """The runs machinery (its caches, its notifier), once started."""
        return self.memo.get(RUNS_MEMO_KEY) if self.memo is not None else None

    def notify(self, integration: Integration, notice: Notice) -> None:
        notifier = getattr(self._runs(), "notifier", None)
        if notifier is not None:
            notifier.notify(integration, notice)

    # --- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._loop, name="docrelay-agent", daemon=True).start()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.settings.agent_poll_seconds):
            try:
                self.tick()
            except KubeError as exc:
                log.warning("agent: %s; will retry", exc)
            except Exception:  # never let the worker die; details stay in our log
                log.exception("agent: unexpected error; will retry")
        self.revisions.stop()

    def tick(self) -> None:
        runs = self._cached("cache", kube_runs.RUNS)
        chosen = agent_candidates(self._cached("integrations", INTEGRATIONS), runs)
        if not chosen:
            return
        revisions = self.revisions.list()
        for obj in map(copy.deepcopy, chosen):
            ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
            try:
                IntegrationTick(
                    self,
                    obj,
                    runs=[copy.deepcopy(r) for r in runs if belongs_to(r, ns, name)],
                    revisions={
                        r["metadata"]["name"]: copy.deepcopy(r)
                        for r in revisions
                        if belongs_to(r, ns, name)
                    },
                ).run()
            except KubeError as exc:
                log.warning("agent: integration %s/%s: %s; will retry", ns, name, exc)
            except Exception:
                log.exception("agent: integration %s/%s: unexpected error", ns, name)

    def _cached(self, store: str, plural: str) -> list[dict[str, Any]]:
        """Every object of a kind, from the runs machinery's watch-fed cache once it has
        synced (no list call every tick); callers copy what they keep."""
        cache = getattr(self._runs(), store, None)
        if cache is not None and cache.synced:
            return list(cache.list_shallow())
        return self.kube.list_objects(plural, self.namespace or None)

    # --- the provider and the platform --------------------------------------------------------

    def provider(self) -> Provider:
        """A client for one conversation, with the API key read now (it may have rotated)."""
        assert self.provider_settings is not None
        key = None
        ref = self.provider_settings.api_key_secret
        if ref is not None:
            namespace = self.operator_namespace or ""
            key = kube_agent.secret_values(self.kube, namespace, ref.name).get(ref.key)
            if not key:
                raise ProviderRejected(
                    f"the API key Secret {namespace}/{ref.name} has no key {ref.key!r}"
                )
        return build_provider(self.provider_settings, key)

    def converse(self, ask: Callable[[Provider], AgentResult]) -> AgentResult:
        """Ask through a fresh client; what happens updates the provider's health."""
        description = self.health.description
        provider: Provider | None = None
        try:
            provider = self.provider()
            result = ask(provider)
        except ProviderUnavailable as exc:
            self.health = ProviderHealth(True, description, AgentReason.UNREACHABLE, str(exc)[:600])
            raise
        except ProviderError as exc:
            self.health = ProviderHealth(True, description, AgentReason.REJECTED, str(exc)[:600])
            raise
        finally:
            close = getattr(provider, "close", None)
            if close is not None:
                close()
        self.health = ProviderHealth(True, description)
        return result

    def platform(self, namespace: str) -> PlatformClient | None:
        return kube_agent.platform_client(
            self.kube, namespace, self.settings.platform_secret, self.settings.platform_url
        )


class IntegrationTick:
    """One look at one Integration: generation, fixes, tests, deploy, then one status write."""

    def __init__(
        self,
        worker: AgentWorker,
        obj: dict[str, Any],
        runs: list[dict[str, Any]],
        revisions: dict[str, dict[str, Any]],
    ) -> None:
        self.worker, self.kube, self.settings = worker, worker.kube, worker.settings
        self.obj, self.runs, self.revisions = obj, runs, revisions
        self.runs_by_name = {r["metadata"]["name"]: r for r in runs}
        self.integration = Integration.model_validate(obj)
        self.ns = obj["metadata"]["namespace"]
        self.name = obj["metadata"]["name"]
        self.status = self.integration.status or IntegrationStatus()
        self.agent = self.status.agent or IntegrationAgentStatus()
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.about = ObjectRef(
            API_VERSION, "Integration", self.ns, self.name, obj["metadata"]["uid"]
        )
        self.events: list[tuple[ObjectRef, str, str, str]] = []
        self.notices: list[Notice] = []  # sent after the status is written, as the Events
        self._schema: dict[str, Any] | None = None
        self._schema_read = False

    def run(self) -> None:
        self.generation()
        for run in filter(wants_fix, self.runs):
            self.fix(run)
        for field in ("generation", "fix"):
            task = getattr(self.agent, field)
            if task is not None and task.revision and task.state in FOLLOWED:
                words = judge_words(field, self.integration.spec.instructions, task.fix_of_run)
                self.agent = self.agent.model_copy(
                    update={field: self.follow_tests(field, task, judge_with=words)}
                )
        self.write_status()
        for about, kind, reason, message in self.events:
            post_event(self.kube, about, kind, reason, message)
        for notice in self.notices:
            self.worker.notify(self.integration, notice)

    def event(self, kind: str, reason: str, message: str, about: ObjectRef | None = None) -> None:
        """An Event to post once the status is written (about the Integration by default)."""
        self.events.append((about or self.about, kind, reason, message))

    # --- generate ----------------------------------------------------------------------------

    def generation(self) -> None:
        spec = self.integration.spec
        if in_conversation(self.obj["metadata"].get("annotations")):
            return  # a Build thread writes this integration's code (handlers/conversation.py)
        raw = (self.obj["metadata"].get("annotations") or {}).get(GENERATE_REQUEST_ANNOTATION)
        request = parse_agent_request(raw)
        due = generation_due(spec, self.agent, request, self.now)
        if due is None:
            return
        handled = due.request_id or self.agent.handled_generate_request
        if not self.worker.health.configured:
            # Recorded once per input: generation_due is then None until the input changes.
            failed = unconfigured_generation(due, self.worker.health.description, self.now)
            self.agent = self.agent.model_copy(
                update={"handled_generate_request": handled, "generation": failed}
            )
            return
        requested_by = request.requested_by if request and request.id == due.request_id else None
        task = self._generate(due, requested_by)
        self.agent = self.agent.model_copy(
            update={"generation": task, "handled_generate_request": handled}
        )

    def _generate(self, due: GenerationDue, requested_by: str | None) -> AgentTask:
        spec = self.integration.spec
        samples: list[dict[str, Any]] = []
        if self.settings.agent_allow_document_values:
            samples = self._documents(self._test_documents()[:2])
        request = GenerateRequest(
            **self._context(),
            instructions=spec.instructions or "",
            sample_documents=tuple(samples),
        )
        base = generation_task(due, self.now)
        try:
            result = self.worker.converse(
                lambda p: generate(
                    p,
                    request,
                    max_attempts=self.settings.agent_code_attempts,
                    syntax_check=node_syntax_check,
                )
            )
        except ProviderUnavailable as exc:
            return self._waiting(base, exc)
        except ProviderError as exc:
            self.event("Warning", AgentReason.REJECTED, _provider_message(exc))
            return base.model_copy(update={"message": cut_message(_provider_message(exc))})
        attempts = len(result.attempts)
        base = base.model_copy(update={"model": result.model[:128], "attempts": attempts})
        if result.code is None:
            self.event("Warning", AgentReason.CODE_REFUSED, refused_message(attempts, fix=False))
            message = result.failure or "the model's code was refused"
            return base.model_copy(update={"message": cut_message(message)})
        revision = self._create_revision(
            result, SourceType.AGENT, user=requested_by, fix_of_run=None, parent=None
        )
        said = generated_message(revision, attempts, result.model)
        self.event("Normal", AgentReason.REVISION_PROPOSED, said)
        return task_testing(base, revision)

    def _waiting(self, task: AgentTask, exc: ProviderUnavailable) -> AgentTask:
        retry = self.settings.agent_retry_seconds
        task, said = waiting_task(task, _provider_message(exc), exc.retry_after, retry, self.now)
        self.event("Warning", AgentReason.UNREACHABLE, said)
        return task

    def _context(self) -> dict[str, Any]:
        """What both prompts say about the integration: names, never values."""
        spec = self.integration.spec
        schema = self._document_schema()
        accounts = grounded_account_refs(
            self.kube, self.ns, list(spec.connected_accounts), spec.instructions or "",
            self.settings.pipedream_secret,
        )  # fmt: skip
        allow = self.settings.agent_allow_document_values
        return prompt_context(self.name, spec, schema, accounts, allow)

    def _document_schema(self) -> dict[str, Any] | None:
        if not self._schema_read:
            self._schema_read = True
            self._schema = kube_agent.document_schema(
                self.worker.platform(self.ns),
                self.integration.spec.document_type,
                f"{self.ns}/{self.name}",
            )
        return self._schema

    def _documents(self, identifiers: list[str]) -> list[dict[str, Any]]:
        """Documents for a prompt: only called when the install allows document values."""
        return kube_agent.documents(self.worker.platform(self.ns), identifiers)

    def _create_revision(
        self,
        result: AgentResult,
        source: SourceType,
        *,
        user: str | None,
        fix_of_run: str | None,
        parent: str | None,
    ) -> str:
        assert result.code is not None
        code = result.code
        manifest = build_agent_revision(
            integration=self.name,
            integration_uid=self.obj["metadata"]["uid"],
            code=code,
            runtime=self.integration.spec.runtime,
            source=source,
            model=model_label(result.model),
            prompt_hash=result.prompt_hash,
            user=user,
            fix_of_run=fix_of_run,
            parent=parent,
        )
        language = self.integration.spec.runtime.language
        revision = kube_agent.create_revision(
            self.kube, self.ns, manifest, code, language, self.now
        )
        name = str(revision["metadata"]["name"])
        self.revisions[name] = revision
        self.worker.revisions.observe(copy.deepcopy(revision))
        return name

    # --- fix ---------------------------------------------------------------------------------

    def fix(self, raw: dict[str, Any]) -> None:
        try:
            run = IntegrationRun.model_validate(raw)
        except ValidationError:
            return
        name = raw["metadata"]["name"]
        about = ObjectRef(API_VERSION, "IntegrationRun", self.ns, name, raw["metadata"]["uid"])
        status = run.status
        old = status.fix if status else None
        request = parse_agent_request(raw["metadata"]["annotations"][FIX_REQUEST_ANNOTATION])
        decision = fix_decision(
            old,
            request,
            status.phase if status else None,
            self.settings.agent_fix_attempts,
            self.now,
        )
        if decision.request is None or not (decision.refusal or decision.due):
            return
        request = decision.request

        def record(state: AgentState, message: str | None, **fields: Any) -> None:
            new = record_fix(old, request, state, self.now, message=message, **fields)
            self._write_fix(name, raw, new)

        refusal = decision.refusal
        if not refusal and not self.worker.health.configured:
            refusal = not_configured_message(self.worker.health.description)
        if refusal:
            self.event("Warning", AgentReason.FIX_REFUSED, refusal, about)
            record(AgentState.FAILED, refusal)
            return
        assert status is not None
        revision = status.revision or run.spec.revision
        code = self._code(revision) if revision else None
        if revision is None or code is None:
            record(
                AgentState.FAILED, f"the code of the run's revision {revision or '(none)'} is gone"
            )
            return
        document = None
        if self.settings.agent_allow_document_values:
            found = self._documents([run.spec.document_identifier])
            document = found[0] if found else None
        fix_request = FixRequest(
            **self._context(),
            run=name,
            revision=revision,
            code=code,
            **failure_fields(status),
            logs=self._log(name, status.attempt) or status.log_tail or "",
            instructions=self.integration.spec.instructions,
            document=document,
        )
        base = AgentTask(
            state=AgentState.FAILED,
            fix_of_run=name,
            request_id=request.id,
            updated_at=self.now,
        )
        try:
            result = self.worker.converse(
                lambda p: propose_fix(
                    p,
                    fix_request,
                    max_attempts=self.settings.agent_code_attempts,
                    syntax_check=node_syntax_check,
                )
            )
        except ProviderUnavailable as exc:
            task = self._waiting(base, exc)
            self.agent = self.agent.model_copy(update={"fix": task})
            record(AgentState.WAITING, task.message, next_attempt_at=task.next_attempt_at)
            return
        except ProviderError as exc:
            message = _provider_message(exc)
            failed = base.model_copy(update={"message": cut_message(message)})
            self.agent = self.agent.model_copy(update={"fix": failed})
            record(AgentState.FAILED, message)
            return
        base = base.model_copy(
            update={"model": result.model[:128], "attempts": len(result.attempts)}
        )
        if result.code is None:
            message = result.failure or "the model's code was refused"
            failed = base.model_copy(update={"message": cut_message(message)})
            self.agent = self.agent.model_copy(update={"fix": failed})
            refused = refused_message(len(result.attempts), fix=True)
            self.event("Warning", AgentReason.CODE_REFUSED, refused, about)
            record(AgentState.FAILED, message)
            return
        proposal = self._create_revision(
            result, SourceType.FIX, user=request.requested_by, fix_of_run=name, parent=revision
        )
        test_name = build_test_run(
            namespace=self.ns,
            integration=self.name,
            revision=proposal,
            document=run.spec.document_identifier,
            trigger=run.spec.trigger.value,
        )["metadata"]["name"]
        message = fix_proposed_message(proposal, test_name)
        testing = base.model_copy(
            update={"state": AgentState.TESTING, "revision": proposal, "message": message}
        )
        self.agent = self.agent.model_copy(update={"fix": testing})
        self.event("Normal", AgentReason.REVISION_PROPOSED, message, about)
        record(AgentState.TESTING, message, revision=proposal, test_run=test_name)

    def _code(self, revision: str) -> str | None:
        obj = self.revisions.get(revision) or self.kube.get(REVISIONS, self.ns, revision)
        return kube_agent.revision_code(self.kube, self.ns, obj)

    def _log(self, run: str, attempt: int) -> str | None:
        """The run's stored log (masked when it was stored), its last 10,000 characters."""
        return kube_agent.run_log(self.kube, self.ns, run, attempt)

    def _write_fix(self, name: str, raw: dict[str, Any], fix: RunFixStatus) -> None:
        kube_agent.write_run_fix(self.kube, self.ns, raw, fix)

    # --- tests and deploy --------------------------------------------------------------------

    def _test_documents(self) -> list[str]:
        override = (self.obj["metadata"].get("annotations") or {}).get(TEST_DOCUMENTS_ANNOTATION)
        recent = [
            (run_time(r["metadata"].get("creationTimestamp")), str(r["spec"]["documentIdentifier"]))
            for r in self.runs
            if not (r.get("spec") or {}).get("test")
        ]
        limit = self.settings.agent_test_documents
        spec = self.integration.spec
        return pick_test_documents(override, recent, limit) or kube_agent.document_ids(
            self.worker.platform(self.ns), spec.workspace, spec.document_type, limit,
            f"{self.ns}/{self.name}",
        )  # fmt: skip

    def follow_tests(self, field: str, task: AgentTask, judge_with: str | None = None) -> AgentTask:
        """Create the revision's test runs (dry) if it has none, follow them, and write its
        Tested condition; with `judge_with` (the words the code must follow) runs that passed
        are judged against them once (handlers/judge.py), so TestPassed means no error AND a
        pass verdict. A conversation judges with its thread instead (judge_with None)."""
        assert task.revision is not None
        proposal: str = task.revision
        # From the store; read by name if it is not there yet (the watch may lag a write).
        revision = self.revisions.get(proposal) or self.kube.get(REVISIONS, self.ns, proposal)
        if revision is None:
            return task.model_copy(
                update={
                    "state": AgentState.TEST_FAILED,
                    "message": f"revision {task.revision} no longer exists",
                    "updated_at": self.now,
                }
            )
        failed_run = self.runs_by_name.get(task.fix_of_run or "") if field == "fix" else None
        if not task.test_runs:
            if field == "fix":
                plan = fix_test_plan(failed_run)
                if plan is None:
                    message = f"the failed run {task.fix_of_run} no longer exists"
                    return task.model_copy(
                        update={"state": AgentState.TEST_FAILED, "message": message}
                    )
            else:
                trigger = self.integration.spec.trigger.value
                plan = [(d, trigger) for d in self._test_documents()]
            if not plan:
                message = no_documents_message(self.integration.spec.document_type)
                return task.model_copy(update={"state": AgentState.TEST_FAILED, "message": message})
            names = kube_agent.create_test_runs(self.kube, self.ns, self.name, proposal, plan)
            task = task.model_copy(update={"test_runs": tuple(names), "updated_at": self.now})
        phases = [run_phase(self.runs_by_name.get(n)) for n in task.test_runs]
        verdict = verdict_of(phases)
        judged: Condition | None = None
        if verdict is True and judge_with is not None:
            verdict, judged = self._judged(revision, task.test_runs, judge_with)
        stops = (
            dry_stops(run_errors(task.test_runs, self.runs_by_name))
            if verdict is False and judge_with is not None
            else ()
        )
        if stops:  # the one-shot flow's dry test stopped at direct HTTPS: a live test decides
            said = needs_live_test_message(proposal, self.name, stops)
            generation = revision["metadata"].get("generation")
            judged = judge.judged_condition(
                False, NEEDS_LIVE_TEST_REASON, said, generation, self.now
            )
        entries = revision_test_runs(task.test_runs, self.runs_by_name)
        self._write_tests(proposal, revision, entries, verdict, judged)
        new, deploy = task_after_tests(
            task,
            verdict,
            self.integration.spec.deploy_policy,
            self.status.deployed_revision,
            self.now,
        )
        if new.state is not task.state:
            judged_words = (judged.message or "") if judged is not None else None
            message, event = after_tests(
                proposal, self.name, new.state, deploy, entries, stops, judged_words
            )
            new = new.model_copy(update={"message": message or new.message})
            if event is not None:
                self.event(event[0], event[1], message)
            if new.state is AgentState.TEST_FAILED:
                failed = failed_test_names(entries)
                self.notices.append(agent_failed_notice(self.ns, self.name, proposal, failed))
        if deploy:
            self._request_deploy(proposal)
        if field == "fix" and failed_run is not None:
            stored = (failed_run.get("status") or {}).get("fix")
            fix = followed_fix(stored, task.revision, new, self.now)
            if fix is not None:
                self._write_fix(failed_run["metadata"]["name"], failed_run, fix)
        return new

    def _judged(
        self, revision: dict[str, Any], names: tuple[str, ...], words: str
    ) -> tuple[bool, Condition]:
        """The judgement of passed runs: the one already written on the revision (the model is
        asked once per revision), else the model's now."""
        stored = judge.tested_condition(revision)
        if stored is not None and stored.reason in judge.JUDGED:
            return stored.status is ConditionStatus.TRUE, stored
        # A record the operator has not collected yet is read masked with the namespace's
        # values, as a conversation's judge reads it (None: its names are left out).
        mask = judge.namespace_masker(self.worker._runs(), self.kube, self.ns, "agent")
        runs = judge.evidence(self.kube, self.ns, names, self.runs_by_name, self._log, mask)
        passed, reasons, _ = judge.judge(self.worker, words, runs)
        reason = judge.JUDGED_PASSED if passed else judge.JUDGED_FAILED
        generation = revision["metadata"].get("generation")
        said = "; ".join(reasons) or "no reason given"
        return passed, judge.judged_condition(passed, reason, said, generation, self.now)

    def _write_tests(
        self,
        name: str,
        revision: dict[str, Any],
        entries: list[RevisionTestRun],
        verdict: bool | None,
        judged: Condition | None = None,
    ) -> None:
        generation = revision["metadata"].get("generation")
        condition = judged or condition_tested(verdict, entries, self.now, generation)
        patch = revision_tests_patch(revision.get("status") or {}, entries, condition, self.now)
        written = kube_agent.write_revision_status(self.kube, self.ns, revision, patch)
        self.worker.revisions.observe(written)

    def _request_deploy(self, revision: str) -> None:
        current = (self.obj["metadata"].get("annotations") or {}).get(DEPLOY_REQUEST_ANNOTATION)
        handled = self.status.handled_deploy_request
        request = deploy_request_due(revision, handled, current, self.now)
        if request is None:
            return
        self.kube.patch_annotations(
            INTEGRATIONS, self.ns, self.name, {DEPLOY_REQUEST_ANNOTATION: request.encode()}
        )

    # --- status ------------------------------------------------------------------------------

    def write_status(self) -> None:
        """status.agent and AgentAvailable, guarded by resourceVersion; read again on conflict."""
        health = self.worker.health if self.integration.spec.instructions else None
        kube_agent.write_integration_status(
            self.kube,
            self.obj,
            lambda obj: agent_status_patch(
                obj.get("status") or {}, self.agent, health, obj["metadata"].get("generation"),
                self.now,
            ),
        )  # fmt: skip


def _provider_message(exc: ProviderError) -> str:
    """Our words around the provider error (which names no key: agent/providers.py)."""
    if isinstance(exc, ProviderUnavailable):
        return f"the language model is unavailable: {exc}"
    return f"the language model refused the request: {exc}"


# --- registration ---------------------------------------------------------------------------


def register(
    registry: kopf.OperatorRegistry,
    watched_namespace: Callable[[], str | None],
    operator_namespace: Callable[[], str | None],
) -> None:
    def start(memo: kopf.Memo, **_: Any) -> None:
        context = from_memo(memo)
        worker = AgentWorker(
            context.kube, context.settings, watched_namespace(), operator_namespace()
        )
        log.info(
            "agent: %s",
            worker.health.description
            if worker.health.configured
            else "not configured (" + worker.health.description + ")",
        )
        memo[AGENT_MEMO_KEY] = worker
        worker.memo = memo
        worker.start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        worker = memo.get(AGENT_MEMO_KEY)
        if isinstance(worker, AgentWorker):
            worker.stop_event.set()

    kopf.on.startup(registry=registry, id="agent")(start)
    kopf.on.cleanup(registry=registry, id="agent")(stop)
