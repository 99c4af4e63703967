"""An IntegrationRevision's status from the check of its code, and what a plan reads of one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from docrelay.models.conditions import READY, Condition, ConditionStatus
from docrelay.models.revision import (
    IntegrationRevisionStatus,
    RevisionConditionType,
    ValidationResult,
)
from docrelay.reconcile.codecheck import CodeCheck
from docrelay.reconcile.integration import RevisionInfo


def revision_status(check: CodeCheck, now: datetime, generation: int | None) -> dict[str, Any]:
    """The status the operator writes once it has checked a revision's code."""
    now = now.replace(microsecond=0)
    validation = ValidationResult(
        valid=check.valid,
        checked_at=now,
        reason=check.reason.value if check.reason else None,
        message=check.message,
        line=check.line,
        column=check.column,
    )
    ready = Condition(
        type=READY,
        status=ConditionStatus.TRUE if check.valid else ConditionStatus.FALSE,
        observed_generation=generation,
        last_transition_time=now,
        reason="Valid" if check.valid else (check.reason.value if check.reason else "Invalid"),
        message=check.describe(),
    )
    status = IntegrationRevisionStatus(
        observed_generation=generation, validation=validation, conditions=(ready,)
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def revision_info(obj: dict[str, Any]) -> RevisionInfo:
    """What a plan needs from an IntegrationRevision object as the API returns it."""
    validation = (obj.get("status") or {}).get("validation") or {}
    valid = validation.get("valid")
    problem = None
    if valid is False:
        check = CodeCheck(
            valid=False,
            message=validation.get("message") or validation.get("reason") or "invalid",
            line=validation.get("line"),
            column=validation.get("column"),
        )
        problem = check.describe()
    tested = next(
        (
            c.get("status")
            for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("type") == RevisionConditionType.TESTED.value
        ),
        None,
    )
    return RevisionInfo(
        name=obj["metadata"]["name"],
        integration=obj.get("spec", {}).get("integration", ""),
        created=datetime.fromisoformat(obj["metadata"]["creationTimestamp"]),
        valid=valid if isinstance(valid, bool) else None,
        problem=problem,
        source=str(((obj.get("spec") or {}).get("source") or {}).get("type") or "User"),
        tested=True if tested == "True" else False if tested == "False" else None,
    )
