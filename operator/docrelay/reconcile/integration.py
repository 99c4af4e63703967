"""The Integration's decisions: from what exists and what is wanted to a plan and a status.

One pure function, `plan_integration`: the handler gathers the inputs, calls it, carries out
the plan (create the code revision, delete old revisions, post events) and writes the status
it returns, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from docrelay.builders.revision import revision_name
from docrelay.models.common import NODE_END_OF_LIFE, NodeVersion, Runtime
from docrelay.models.conditions import Condition, ConditionStatus, find_condition, set_condition
from docrelay.models.integration import (
    MAX_DEPLOY_HISTORY,
    DeployRecord,
    Integration,
    IntegrationConditionType,
    IntegrationStatus,
)
from docrelay.reconcile.accounts import AccountReason, accounts_verdict
from docrelay.reconcile.agent import AGENT_ACTOR, untested_refusal
from docrelay.reconcile.codecheck import CodeCheck, check_code
from docrelay.reconcile.deploy import DeployAction, DeployRequest, MalformedRequest

OPERATOR_ACTOR = "docrelay-operator"


class Reason:
    """Condition and event reasons (CamelCase); docs/operator.md lists what each asks of you."""

    READY = "Ready"
    PAUSED = "Paused"
    DEPLOYED = "Deployed"
    MANUAL_DEPLOY = "ManualDeploy"
    NO_CODE = "NoCode"
    REVISION_MISSING = "DeployedRevisionMissing"
    SECRETS_PRESENT = "SecretsPresent"
    NO_SECRETS = "NoSecretsNeeded"
    SECRETS_MISSING = "SecretsMissing"
    ACCOUNTS_PRESENT = "AccountsPresent"
    NO_ACCOUNTS = "NoAccountsNeeded"
    ACCOUNTS_MISSING = "AccountsMissing"
    ACCOUNT_DEAD = "AccountDead"
    ACCOUNT_UNHEALTHY = "AccountUnhealthy"
    # history and events
    CODE_APPLIED = "CodeApplied"
    REVERTED = "Reverted"
    AGENT_AUTOMATIC = "AgentAutomatic"
    DEPLOY_REJECTED = "DeployRejected"
    INVALID_CODE = "InvalidCode"
    REVISIONS_PRUNED = "RevisionsPruned"
    END_OF_LIFE_RUNTIME = "EndOfLifeRuntime"


@dataclass(frozen=True)
class RevisionInfo:
    """What the plan needs to know about one existing IntegrationRevision."""

    name: str
    integration: str
    created: datetime
    valid: bool | None  # None: not validated yet
    problem: str | None = None  # why it is not valid, for messages
    source: str = "User"  # spec.source.type: User, Agent or Fix
    tested: bool | None = None  # the Tested condition: None while unknown


@dataclass(frozen=True)
class Observed:
    """Everything gathered for one Integration."""

    integration: Integration
    revisions: tuple[RevisionInfo, ...]
    present_secret_keys: frozenset[str]
    present_accounts: frozenset[str]
    request: DeployRequest | MalformedRequest | None
    now: datetime
    history_limit: int = 20
    # Name -> health of each ConnectedAccount (reconcile.accounts.account_health); None: only
    # presence is known (every present account counts as not checked yet).
    account_health: Mapping[str, str] | None = None


@dataclass(frozen=True)
class EventNote:
    """An Event to post on the Integration; the message is ours, never foreign text."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    code_revision: str | None
    code_check: CodeCheck | None
    create_code_revision: bool
    validate_code_revision: bool
    deployed_revision: str | None
    delete_revisions: tuple[str, ...]
    events: tuple[EventNote, ...]
    status: IntegrationStatus
    conditions: tuple[Condition, ...] = field(default_factory=tuple)

    def status_patch(self) -> dict[str, Any]:
        """The status this handler owns, as the status subresource takes it (a merge patch).

        The run counters belong to the run handlers, which update them as runs finish; a
        patch built from an earlier read must not put old values back.
        """
        return self.status.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            exclude=RUN_OWNED_STATUS_FIELDS | AGENT_OWNED_STATUS_FIELDS,
        )


RUN_OWNED_STATUS_FIELDS = {"last_run", "run_counts", "consecutive_failures", "active_runs"}
# The agent worker (handlers/agent.py) writes status.agent itself.
AGENT_OWNED_STATUS_FIELDS = {"agent"}
# The conditions this reconciler decides; Paused (the runs) and AgentAvailable (the agent)
# belong to other writers, whose latest value must survive this one's writes.
OWNED_CONDITION_TYPES = frozenset(
    {
        IntegrationConditionType.READY,
        IntegrationConditionType.CODE_READY,
        IntegrationConditionType.SECRETS_READY,
        IntegrationConditionType.ACCOUNTS_READY,
    }
)


def merge_conditions(
    ours: list[dict[str, Any]], stored: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The conditions to write: ours for the types this reconciler owns, the stored (freshly
    read) ones for every other type, in our order; others' new types come last."""
    theirs = {c["type"]: c for c in stored if c.get("type") not in OWNED_CONDITION_TYPES}
    merged = []
    for condition in ours:
        kind = condition.get("type")
        if kind in OWNED_CONDITION_TYPES:
            merged.append(condition)
        elif kind in theirs:
            merged.append(theirs.pop(kind))
    return merged + list(theirs.values())


def left_to_kopf(
    integration: Integration, request: DeployRequest | MalformedRequest | None
) -> bool:
    """True when kopf's create or update handler reconciles this Integration: it has no status
    yet, its spec changed since the status was written, or a deploy request is not yet acted
    on. Resuming at a start leaves those to kopf (docs/operator.md, "A restart")."""
    status = integration.status
    if status is None or status.observed_generation != integration.metadata.generation:
        return True
    return request is not None and request.id != status.handled_deploy_request


def resume_needs_nothing(plan: Plan, stored: Mapping[str, Any] | None, now: datetime) -> bool:
    """True when carrying out `plan` would change nothing: no revision to create, check or
    delete, no Event, and the status it writes is the stored one (conditions merged with the
    other writers' as write_status merges them). A resume then makes no call at all."""
    if plan.create_code_revision or plan.validate_code_revision:
        return False
    if plan.delete_revisions or plan.events:
        return False
    stored = stored or {}
    patch = plan.status_patch()
    ours = patch.pop("conditions", [])
    merged = with_ready_json(
        merge_conditions(ours, list(stored.get("conditions") or [])),
        patch.get("observedGeneration"),
        patch.get("deployedRevision"),
        now,
    )
    if merged != list(stored.get("conditions") or []):
        return False
    return all(stored.get(key) == value for key, value in patch.items())


def plan_integration(observed: Observed) -> Plan:
    integration = observed.integration
    name = integration.metadata.name or ""
    spec = integration.spec
    old = integration.status or IntegrationStatus()
    revisions = {r.name: r for r in observed.revisions if r.integration == name}

    code_rev = revision_name(name, spec.code, spec.runtime) if spec.code is not None else None
    check = check_code(spec.code, spec.runtime.language) if spec.code is not None else None

    deployed = old.deployed_revision
    history = list(old.history)
    events: list[EventNote] = []
    handled = old.handled_deploy_request

    def deploy(revision: str, by: str, reason: str) -> None:
        nonlocal deployed
        history.append(
            DeployRecord(
                revision=revision,
                previous_revision=deployed,
                deployed_by=by,
                deployed_at=observed.now.replace(microsecond=0),
                reason=reason,
            )
        )
        events.append(
            EventNote(
                "Normal",
                reason,
                f"revision {revision} deployed by {by}"
                + (f", replacing {deployed}" if deployed else ""),
            )
        )
        deployed = revision

    # 1. A deploy or revert request not yet acted on.
    request = observed.request
    if request is not None and request.id != handled:
        handled = request.id
        if isinstance(request, MalformedRequest):
            events.append(
                EventNote(
                    "Warning",
                    Reason.DEPLOY_REJECTED,
                    "the deploy.docrelay.io/request annotation is not a request docrelay "
                    "understands; use `docrelay deploy` or `docrelay revert`",
                )
            )
        else:
            refusal = _refuse_request(request, revisions, code_rev, check, name)
            if refusal:
                events.append(EventNote("Warning", Reason.DEPLOY_REJECTED, refusal))
            elif request.revision != deployed:
                reason = (
                    Reason.REVERTED
                    if request.action is DeployAction.REVERT
                    else Reason.AGENT_AUTOMATIC
                    if request.requested_by == AGENT_ACTOR
                    else Reason.DEPLOYED
                )
                deploy(request.revision, request.requested_by, reason)

    # 2. spec.code wins: new code replaces whatever is deployed, a manual deploy included.
    code_changed = code_rev is not None and code_rev != old.code_revision
    if code_rev is not None and check is not None:
        if check.valid and (code_changed or deployed is None) and deployed != code_rev:
            deploy(code_rev, OPERATOR_ACTOR, Reason.CODE_APPLIED)
        elif not check.valid and code_changed:
            events.append(
                EventNote(
                    "Warning",
                    Reason.INVALID_CODE,
                    f"spec.code (revision {code_rev}) is not deployed: {check.describe()}",
                )
            )

    # A runtime past its end of life still runs: said once per spec change, not per reconcile.
    if spec.runtime.end_of_life and old.observed_generation != integration.metadata.generation:
        events.append(EventNote("Warning", Reason.END_OF_LIFE_RUNTIME, end_of_life_message(
            spec.runtime)))

    create = code_rev is not None and code_rev not in revisions
    validate = code_rev is not None and (create or revisions[code_rev].valid is None)

    # 3. Keep the newest revisions; never the deployed one or the one spec.code names.
    known = list(revisions.values())
    if create and code_rev is not None:
        known.append(RevisionInfo(code_rev, name, observed.now, check.valid if check else None))
    deletable = sorted(
        (r for r in known if r.name not in {deployed, code_rev}),
        key=lambda r: (r.created, r.name),
    )
    excess = max(0, len(known) - observed.history_limit)
    delete = tuple(r.name for r in deletable[:excess])
    if delete:
        events.append(
            EventNote(
                "Normal",
                Reason.REVISIONS_PRUNED,
                f"deleted {len(delete)} old revision(s) beyond the {observed.history_limit} kept: "
                + ", ".join(delete),
            )
        )
    remaining = [r for r in known if r.name not in delete]
    latest = max(remaining, key=lambda r: (r.created, r.name)).name if remaining else None

    conditions = _conditions(
        observed,
        old,
        code_rev=code_rev,
        check=check,
        deployed=deployed,
        deployed_exists=deployed is None or deployed in revisions or deployed == code_rev,
        last_record=history[-1] if history else None,
    )
    events.extend(_missing_events(old.conditions, conditions))
    status = old.model_copy(
        update={
            "observed_generation": integration.metadata.generation,
            "deployed_revision": deployed,
            "latest_revision": latest,
            "code_revision": code_rev,
            "handled_deploy_request": handled,
            "history": tuple(history[-MAX_DEPLOY_HISTORY:]),
            "conditions": tuple(conditions),
        }
    )
    return Plan(
        code_revision=code_rev,
        code_check=check,
        create_code_revision=create,
        validate_code_revision=validate,
        deployed_revision=deployed,
        delete_revisions=delete,
        events=tuple(events),
        status=status,
        conditions=tuple(conditions),
    )


def end_of_life_message(runtime: Runtime) -> str:
    """What a Warning Event says of a runtime whose line is past its end of life upstream."""
    supported = ", ".join(f'"{v.value}"' for v in NodeVersion if v not in NODE_END_OF_LIFE)
    return (
        f'spec.runtime.nodejs "{runtime.version}": Node.js {runtime.version} is past its end of '
        f"life (since {runtime.end_of_life}; no more security fixes upstream). It still runs; "
        f"move to a supported line ({supported})"
    )


def _missing_events(before: Sequence[Condition], after: Sequence[Condition]) -> list[EventNote]:
    """A Warning Event each time SecretsReady or AccountsReady turns False or, while False,
    names other keys or accounts (its message changes): one per change, not one per
    reconcile."""
    notes = []
    for kind in (IntegrationConditionType.SECRETS_READY, IntegrationConditionType.ACCOUNTS_READY):
        new = find_condition(after, kind)
        if new is None or new.status is ConditionStatus.TRUE:
            continue
        old = find_condition(before, kind)
        if old is not None and (old.status, old.reason, old.message) == (
            new.status,
            new.reason,
            new.message,
        ):
            continue
        notes.append(EventNote("Warning", new.reason, new.message))
    return notes


def _refuse_request(
    request: DeployRequest,
    revisions: dict[str, RevisionInfo],
    code_rev: str | None,
    check: CodeCheck | None,
    integration: str,
) -> str | None:
    """Why a deploy request cannot be carried out, or None."""
    verb = request.action.value
    target = revisions.get(request.revision)
    if target is None and request.revision == code_rev and check is not None:
        valid: bool | None = check.valid
        problem = None if check.valid else check.describe()
    elif target is None:
        return (
            f"{verb} of revision {request.revision} refused: no IntegrationRevision of that name "
            f"belongs to integration {integration}"
        )
    else:
        valid, problem = target.valid, target.problem
    if valid is None:
        return f"{verb} of revision {request.revision} refused: its code has not been checked yet"
    if not valid:
        return f"{verb} of revision {request.revision} refused: its code is not valid ({problem})"
    if target is not None and request.action is DeployAction.DEPLOY:
        untested = untested_refusal(target.source, target.tested)
        if untested:
            return f"{verb} of revision {request.revision} refused: {untested}"
    return None


def _condition(
    kind: IntegrationConditionType, ok: bool, reason: str, message: str, generation: int | None
) -> Condition:
    return Condition(
        type=kind.value,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        observed_generation=generation,
        last_transition_time=datetime(1970, 1, 1),  # set_condition decides the real time
        reason=reason,
        message=message,
    )


def _conditions(
    observed: Observed,
    old: IntegrationStatus,
    *,
    code_rev: str | None,
    check: CodeCheck | None,
    deployed: str | None,
    deployed_exists: bool,
    last_record: DeployRecord | None,
) -> list[Condition]:
    integration = observed.integration
    spec = integration.spec
    generation = integration.metadata.generation
    namespace = integration.metadata.namespace
    name = integration.metadata.name
    kinds = IntegrationConditionType

    # CodeReady
    if check is not None and not check.valid and check.reason is not None:
        keeps = f"; revision {deployed} stays deployed" if deployed else ""
        code = _condition(
            kinds.CODE_READY,
            False,
            check.reason.value,
            f"spec.code (revision {code_rev}) {check.describe()}{keeps}",
            generation,
        )
    elif deployed is None:
        code = _condition(
            kinds.CODE_READY,
            False,
            Reason.NO_CODE,
            "no revision is deployed: the agent writes one from spec.instructions (see "
            "AgentAvailable and status.agent); deploy it with `docrelay deploy` once its test "
            "runs pass, or set spec.code"
            if spec.code is None and spec.instructions is not None
            else "no revision is deployed: set spec.code, or deploy a revision with "
            "`docrelay deploy`",
            generation,
        )
    elif not deployed_exists:
        code = _condition(
            kinds.CODE_READY,
            False,
            Reason.REVISION_MISSING,
            f"the deployed revision {deployed} no longer exists; deploy another with "
            "`docrelay deploy` or change spec.code",
            generation,
        )
    elif code_rev is not None and deployed != code_rev:
        by = (
            f" by {last_record.deployed_by} at {last_record.deployed_at.isoformat()}"
            if last_record is not None and last_record.revision == deployed
            else ""
        )
        code = _condition(
            kinds.CODE_READY,
            True,
            Reason.MANUAL_DEPLOY,
            f"revision {deployed} was deployed by hand{by}; spec.code is revision {code_rev}, "
            "which takes over again as soon as spec.code changes",
            generation,
        )
    else:
        source = " from spec.code" if deployed == code_rev else ""
        code = _condition(
            kinds.CODE_READY,
            True,
            Reason.DEPLOYED,
            f"revision {deployed}{source} is deployed",
            generation,
        )

    # SecretsReady: by name, in the order the spec lists them.
    missing_secrets = [s for s in spec.secrets if s not in observed.present_secret_keys]
    if missing_secrets:
        secrets = _condition(
            kinds.SECRETS_READY,
            False,
            Reason.SECRETS_MISSING,
            f"no usable IntegrationSecret for integration {name} with key "
            + ", ".join(missing_secrets)
            + "; create one per key (docrelay seal, or an IntegrationSecret with "
            "spec.integration and spec.key), or see why the Active one does not open "
            "(docrelay secret list)",
            generation,
        )
    elif spec.secrets:
        secrets = _condition(
            kinds.SECRETS_READY,
            True,
            Reason.SECRETS_PRESENT,
            "every secret has an Active IntegrationSecret that opens: " + ", ".join(spec.secrets),
            generation,
        )
    else:
        secrets = _condition(
            kinds.SECRETS_READY, True, Reason.NO_SECRETS, "spec.secrets is empty", generation
        )

    # AccountsReady: missing, dead, otherwise broken (reconcile.accounts).
    health = (
        observed.account_health
        if observed.account_health is not None
        else dict.fromkeys(observed.present_accounts, AccountReason.NOT_CHECKED.value)
    )
    verdict = accounts_verdict(namespace, spec.connected_accounts, health)
    accounts = _condition(
        kinds.ACCOUNTS_READY, verdict.ok, verdict.reason, verdict.message, generation
    )

    conditions = list(old.conditions)
    for condition in (code, secrets, accounts):
        conditions = set_condition(conditions, condition, observed.now)
    return with_ready(conditions, generation, deployed, observed.now)


# Ready is True only when each of these is True and the integration is not Paused.
READY_PARTS = (
    IntegrationConditionType.CODE_READY,
    IntegrationConditionType.SECRETS_READY,
    IntegrationConditionType.ACCOUNTS_READY,
)


def ready_condition(
    conditions: Sequence[Condition], generation: int | None, deployed: str | None
) -> Condition | None:
    """Ready from the other conditions: False with reason Paused while the integration is
    paused (runs wait), else False with the reason of the first part that is not True, else
    True. None when a part has not been decided yet (nothing to derive from)."""
    paused = find_condition(conditions, IntegrationConditionType.PAUSED)
    parts = [find_condition(conditions, kind) for kind in READY_PARTS]
    failing = [c for c in parts if c is not None and c.status is not ConditionStatus.TRUE]
    if paused is not None and paused.status is ConditionStatus.TRUE:
        return _condition(
            IntegrationConditionType.READY,
            False,
            Reason.PAUSED,
            "; ".join(f"{c.type}: {c.message}" for c in (paused, *failing)),
            generation,
        )
    if any(c is None for c in parts):
        return None
    if failing:
        return _condition(
            IntegrationConditionType.READY,
            False,
            failing[0].reason,
            "; ".join(f"{c.type}: {c.message}" for c in failing),
            generation,
        )
    return _condition(
        IntegrationConditionType.READY,
        True,
        Reason.READY,
        f"revision {deployed} is deployed; its secrets and accounts are present",
        generation,
    )


def with_ready(
    conditions: Sequence[Condition], generation: int | None, deployed: str | None, now: datetime
) -> list[Condition]:
    """`conditions` with Ready derived again from the others (see ready_condition)."""
    ready = ready_condition(conditions, generation, deployed)
    return list(conditions) if ready is None else set_condition(conditions, ready, now)


def with_ready_json(
    conditions: list[dict[str, Any]], generation: int | None, deployed: str | None, now: datetime
) -> list[dict[str, Any]]:
    """with_ready for conditions as the API stores them (camelCase dicts)."""
    parsed = [Condition.model_validate(c) for c in conditions]
    return [
        c.model_dump(mode="json", by_alias=True, exclude_none=True)
        for c in with_ready(parsed, generation, deployed, now)
    ]
