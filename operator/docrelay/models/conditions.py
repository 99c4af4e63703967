"""Status conditions, as metav1.Condition, and the pure helper that keeps their semantics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from docrelay.models.common import ApiModel, CamelCaseReason

READY = "Ready"
MAX_CONDITIONS = 16

ConditionTypeName = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=316,
        pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    ),
]


class ConditionStatus(StrEnum):
    """Whether the condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the object's state, as in metav1.Condition."""

    type: ConditionTypeName = Field(
        description="The aspect this condition describes, in CamelCase (e.g. Ready)."
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    observed_generation: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        default=None, description="The metadata.generation the condition was computed from."
    )
    last_transition_time: datetime = Field(
        description="When status last changed (not when reason or message last changed)."
    )
    reason: CamelCaseReason = Field(
        description="A CamelCase, machine-readable reason for the status; see docs/api.md."
    )
    message: Annotated[str, Field(strict=True, max_length=32768)] = Field(
        default="",
        description="A human-readable explanation. Never holds a secret or document data.",
    )


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    """The condition with this type, or None."""
    return next((c for c in conditions if c.type == condition_type), None)


def set_condition(
    conditions: Sequence[Condition], new: Condition, now: datetime
) -> list[Condition]:
    """Return `conditions` with `new` in place of the condition of the same type.

    `lastTransitionTime` becomes `now` (to the second, as the API server stores it) only when
    the status changes or the type is new; otherwise the old time stays and only reason,
    message and observedGeneration follow `new`. Ready comes first; the others keep their
    order and a new type goes last. Pure: the input is not changed.
    """
    old = find_condition(conditions, new.type)
    if old is not None and old.status == new.status:
        transition = old.last_transition_time
    else:
        transition = now.replace(microsecond=0)
    merged = new.model_copy(update={"last_transition_time": transition})

    out = [merged if c.type == new.type else c for c in conditions]
    if old is None:
        out.append(merged)
    return sorted(out, key=lambda c: c.type != READY)  # stable: only moves Ready to the front


def _one_per_type(conditions: tuple[Condition, ...]) -> tuple[Condition, ...]:
    seen: set[str] = set()
    for condition in conditions:
        if condition.type in seen:
            raise ValueError(f"duplicate condition type {condition.type!r}")
        seen.add(condition.type)
    return conditions


Conditions = Annotated[
    tuple[Condition, ...],
    AfterValidator(_one_per_type),
    Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
"""Conditions keyed by type: at most one of each type (the API server merges them by type)."""


class ObservedStatus(ApiModel):
    """What every docrelay status has: the generation it reflects and its conditions."""

    observed_generation: Annotated[int, Field(strict=True, ge=0)] | None = Field(
        default=None, description="The metadata.generation this status was computed from."
    )
    conditions: Conditions = Field(
        default_factory=tuple,
        max_length=MAX_CONDITIONS,
        description="The object's conditions, one per type, Ready first.",
    )
