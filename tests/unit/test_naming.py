"""Run names and idempotency keys: deterministic, distinct, within Kubernetes limits."""

from __future__ import annotations

import pytest

from docrelay.gateway.events import DocumentEvent, resthook_event_id
from docrelay.models.common import RUN_NAME_MAX, Trigger
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


# Pinned names. A run's name is how a redelivery finds the run the first delivery made: if an
# upgrade changed any of these functions, an event delivered before the upgrade and again
# after it would create a second run (and export twice). The literals were computed outside
# the product (`printf 'run/v1\0<integration>\0<event id>\0<document>\0<trigger>' | sha256sum`,
# first 15 hex digits); change them only with a migration plan for in-flight events.


def test_run_name_is_pinned() -> None:
    assert run_name(*EVENT) == "invoices-0fe0ddbb8112959"
    assert job_name("invoices-0fe0ddbb8112959", 2) == "invoices-0fe0ddbb8112959-2"


def test_idempotency_key_is_pinned() -> None:
    assert (
        idempotency_key("tenant-a", *EVENT)
        == "idem-30482b138432eddba79827f2e8c70568518117da27dc16c5"
    )


def test_a_resthook_delivery_names_the_same_run_across_versions() -> None:
    # The whole chain a redelivered RESThook goes through: the event id derived from the
    # delivery (it carries none), then the run's name and idempotency key.
    event = DocumentEvent(
        event="document.parse.completed",
        trigger=Trigger.DOCUMENT_PARSE_COMPLETED,
        timestamp="2026-01-01T00:00:00Z",
        document="doc1",
        workspace="ws1",
        document_type="dt1",
    )
    event_id = resthook_event_id(event)
    assert event_id == "rh-e35937c7dc5873408706dcbd4cb7f159d2875130"
    assert run_name("to-xero", event_id, "doc1", "DocumentParseCompleted") == (
        "to-xero-2ede1ea31fd2010"
    )
    assert idempotency_key("tenant-a", "to-xero", event_id, "doc1", "DocumentParseCompleted") == (
        "idem-91eb64a43f5facca678b9317e9c5b01aa50858a421123e69"
    )
