"""ConnectedAccount decisions: what Pipedream said -> status and Ready; accounts -> AccountsReady.

Pure. The checker (handlers/accounts.py) asks Pipedream and hands the answer here as an
`AccountCheck`; the Integration's plan reads each listed account's health with
`account_health`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from docrelay.models.account import ConnectedAccount, ConnectedAccountStatus
from docrelay.models.conditions import READY, Condition, ConditionStatus, set_condition


class AccountReason(StrEnum):
    """The reasons of a ConnectedAccount's Ready condition (docs/api.md)."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    DEAD = "Dead"
    NOT_FOUND = "NotFound"
    APP_MISMATCH = "AppMismatch"
    CHECK_FAILED = "CheckFailed"
    NOT_CHECKED = "NotChecked"  # no status yet: used by the Integration only


@dataclass(frozen=True)
class AccountCheck:
    """What asking Pipedream gave: the account, or "not found", or why it could not be asked.
    `problem` is our own text (never Pipedream's body, never a credential)."""

    account: Mapping[str, Any] | None = None
    not_found: bool = False
    problem: str | None = None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def account_status(
    account: ConnectedAccount, check: AccountCheck, now: datetime
) -> ConnectedAccountStatus:
    """The status to write after one check. Pipedream's flags are kept as last known when it
    could not be asked, so a Pipedream outage does not erase what was known."""
    spec = account.spec
    old = account.status or ConnectedAccountStatus()
    generation = account.metadata.generation
    healthy, dead, expires = old.healthy, old.dead, old.expires_at
    where = f"Pipedream account {spec.account_id} (external user {spec.external_user_id})"
    if check.problem is not None:
        status, reason = ConditionStatus.UNKNOWN, AccountReason.CHECK_FAILED
        message = f"could not ask Pipedream about {where}: {check.problem}; will retry"
    elif check.not_found or check.account is None:
        healthy, dead, expires = None, None, None
        status, reason = ConditionStatus.FALSE, AccountReason.NOT_FOUND
        message = (
            f"{where} does not exist in the project's {spec.environment or 'default'} "
            "environment: connect the app again (docrelay connect) and set spec.accountId"
        )
    else:
        found = check.account
        healthy = bool(found.get("healthy")) if found.get("healthy") is not None else None
        dead = bool(found.get("dead")) if found.get("dead") is not None else None
        expires = _parse_time(found.get("expires_at"))
        app_info = found.get("app")
        app = app_info.get("name_slug") if isinstance(app_info, Mapping) else None
        external = found.get("external_id")
        if app and app != spec.app:
            status, reason = ConditionStatus.FALSE, AccountReason.APP_MISMATCH
            message = (
                f"{where} is an account of app {app}, not {spec.app}: fix spec.app or "
                "spec.accountId"
            )
        elif external and external != spec.external_user_id:
            status, reason = ConditionStatus.FALSE, AccountReason.NOT_FOUND
            message = f"{where} belongs to another external user: fix spec.externalUserId"
        elif dead:
            status, reason = ConditionStatus.FALSE, AccountReason.DEAD
            message = (
                f"{where} is dead: its credentials no longer work; connect it again "
                "(docrelay connect) and set spec.accountId"
            )
        elif healthy is False:
            status, reason = ConditionStatus.FALSE, AccountReason.UNHEALTHY
            message = f"{where} is unhealthy: Pipedream could not use its credentials lately"
        else:
            status, reason = ConditionStatus.TRUE, AccountReason.HEALTHY
            message = f"{where} is healthy"
            if expires is not None:
                message += f"; its credentials expire at {expires.isoformat()}"
    ready = Condition(
        type=READY,
        status=status,
        observed_generation=generation,
        last_transition_time=now,
        reason=reason.value,
        message=message,
    )
    return old.model_copy(
        update={
            "observed_generation": generation,
            "healthy": healthy,
            "dead": dead,
            "expires_at": expires,
            "last_checked_at": now.replace(microsecond=0),
            "conditions": tuple(set_condition(list(old.conditions), ready, now)),
        }
    )


def status_patch(status: ConnectedAccountStatus) -> dict[str, Any]:
    """A merge patch of the status subresource; fields Pipedream did not give are cleared."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name in ("healthy", "dead", "expiresAt"):
        body.setdefault(name, None)
    return body


def needs_check(obj: Mapping[str, Any]) -> bool:
    """A ConnectedAccount whose current spec has not been checked yet (new or edited)."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    return bool(metadata.get("generation")) and status.get("observedGeneration") != metadata.get(
        "generation"
    )


def account_health(obj: Mapping[str, Any]) -> str:
    """One word for an Integration: the account's Ready reason when its current spec was
    checked, else NotChecked. CheckFailed counts as not known, not as broken."""
    if needs_check(obj):
        return AccountReason.NOT_CHECKED.value
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == READY:
            return str(condition.get("reason") or AccountReason.NOT_CHECKED.value)
    return AccountReason.NOT_CHECKED.value


def accounts_health(objects: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Name -> health of every ConnectedAccount listed."""
    return {str(o["metadata"]["name"]): account_health(o) for o in objects}


BROKEN = {
    AccountReason.DEAD.value: "dead",
    AccountReason.UNHEALTHY.value: "unhealthy",
    AccountReason.NOT_FOUND.value: "not found at Pipedream",
    AccountReason.APP_MISMATCH.value: "of another app",
}


@dataclass(frozen=True)
class AccountsVerdict:
    ok: bool
    reason: str
    message: str


def accounts_verdict(
    namespace: str | None, wanted: Iterable[str], health: Mapping[str, str]
) -> AccountsVerdict:
    """AccountsReady of an Integration listing `wanted`, given each account's health.

    Missing first (AccountsMissing), then dead (AccountDead), then otherwise broken
    (AccountUnhealthy); the message names every account in each group. Not yet checked, or
    Pipedream unreachable, does not hold an integration back: the broker refuses nothing for
    it, and a Pipedream outage must not turn every integration not ready.
    """
    wanted = list(wanted)
    if not wanted:
        return AccountsVerdict(True, "NoAccountsNeeded", "spec.connectedAccounts is empty")
    missing = [a for a in wanted if a not in health]
    dead = [a for a in wanted if health.get(a) == AccountReason.DEAD.value]
    broken = [a for a in wanted if health.get(a) in BROKEN and a not in dead]
    parts = []
    if missing:
        parts.append(
            f"ConnectedAccount not found in namespace {namespace}: "
            + ", ".join(missing)
            + "; connect the account (docrelay connect) or fix spec.connectedAccounts"
        )
    if dead:
        parts.append(
            "dead at Pipedream (connect again and update spec.accountId): " + ", ".join(dead)
        )
    if broken:
        parts.append("not usable: " + ", ".join(f"{a} ({BROKEN[health[a]]})" for a in broken))
    if parts:
        reason = "AccountsMissing" if missing else "AccountDead" if dead else "AccountUnhealthy"
        return AccountsVerdict(False, reason, "; ".join(parts))
    unchecked = [a for a in wanted if health.get(a) not in (AccountReason.HEALTHY.value,)]
    message = "every connected account exists: " + ", ".join(wanted)
    if unchecked:
        message += " (health not known yet: " + ", ".join(unchecked) + ")"
    return AccountsVerdict(True, "AccountsPresent", message)
