"""IntegrationSecrets whose Integration does not exist: a typo in spec.integration, or an
integration deleted since. Such a secret opens and is Active, yet no run ever receives it; the
Orphaned condition and an Event say so (docs/secrets.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from docrelay.models.conditions import Condition, ConditionStatus, find_condition, set_condition

ORPHANED = "Orphaned"
NOT_FOUND = "IntegrationNotFound"
FOUND = "IntegrationFound"
MAX_NAMED = 10


def orphan_condition(
    namespace: str,
    integration: str,
    exists: bool,
    integrations: Sequence[str],
    generation: int | None,
    now: datetime,
) -> Condition:
    """Orphaned=True while no Integration of that name exists in the namespace; the message
    names the integrations that do (to spot a typo), never a value."""
    if exists:
        return Condition(
            type=ORPHANED,
            status=ConditionStatus.FALSE,
            observed_generation=generation,
            last_transition_time=now,
            reason=FOUND,
            message=f"integration {integration} exists",
        )
    names = sorted(integrations)
    here = (
        f" (integrations here: {', '.join(names[:MAX_NAMED])}"
        + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")
        + ")"
        if names
        else " (there are none)"
    )
    return Condition(
        type=ORPHANED,
        status=ConditionStatus.TRUE,
        observed_generation=generation,
        last_transition_time=now,
        reason=NOT_FOUND,
        message=(
            f"no Integration named {integration} in namespace {namespace}{here}: no run "
            "receives this secret. If spec.integration is a typo, seal the value again for the "
            "right integration (the seal is bound to the name) and delete this one"
        ),
    )


def orphan_patch(
    status: Mapping[str, Any] | None, condition: Condition, now: datetime
) -> tuple[dict[str, Any] | None, bool]:
    """The status merge patch that records `condition` (None when it is already there) and
    whether the secret became orphaned just now (post an Event then, once)."""
    stored = [Condition.model_validate(c) for c in (status or {}).get("conditions") or []]
    old = find_condition(stored, ORPHANED)
    if old is not None and (old.status, old.reason, old.message) == (
        condition.status,
        condition.reason,
        condition.message,
    ):
        return None, False
    if old is None and condition.status is ConditionStatus.FALSE:
        return None, False  # nothing to say about a secret that was never orphaned
    became = condition.status is ConditionStatus.TRUE and (
        old is None or old.status is not ConditionStatus.TRUE
    )
    conditions = set_condition(stored, condition, now)
    dumped = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions]
    return {"conditions": dumped}, became
