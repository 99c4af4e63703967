"""Run names and idempotency keys: deterministic, distinct, within Kubernetes limits."""

from __future__ import annotations

import pytest

from docrelay.models.common import RUN_NAME_MAX
from docrelay.models.run import IntegrationRunSpec
from docrelay.naming import idempotency_key, job_name, run_name

EVENT = ("invoices", "evt_1", "doc_abc", "DocumentParseCompleted")


def test_same_event_same_run_name() -> None:
    assert run_name(*EVENT) == run_name(*EVENT)


@pytest.mark.parametrize(
    "other",
    [
        ("invoices", "evt_2", "doc_abc", "DocumentParseCompleted"),
        ("invoices", "evt_1", "doc_xyz", "DocumentParseCompleted"),
        ("invoices", "evt_1", "doc_abc", "DocumentValidated"),
        ("receipts", "evt_1", "doc_abc", "DocumentParseCompleted"),
    ],
)
def test_any_difference_names_another_run(other: tuple[str, str, str, str]) -> None:
    assert run_name(*other) != run_name(*EVENT)


def test_longest_integration_name_fits() -> None:
    name = run_name("a" * 40, "evt", "doc", "DocumentValidated")
    assert len(name) == RUN_NAME_MAX
    assert len(job_name(name, 10)) <= 63


def test_idempotency_key_is_valid_for_the_run_spec() -> None:
    key = idempotency_key("tenant-a", *EVENT)
    assert key == idempotency_key("tenant-a", *EVENT)
    assert key != idempotency_key("tenant-b", *EVENT)
    spec = IntegrationRunSpec.model_validate(
        {"integration": "invoices", "documentIdentifier": "doc_abc",
         "trigger": "DocumentParseCompleted", "eventId": "evt_1", "idempotencyKey": key}
    )
    assert spec.idempotency_key == key
