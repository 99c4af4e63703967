"""A burst to one integration: a new run the concurrency gate refuses is written Queued only if
it still waits QUEUED_AFTER_SECONDS later (most of a burst's runs get a slot within moments,
and the write was one more status patch per run); what a user then sees is unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docrelay.models.run import IntegrationRunStatus, RunPhase
from docrelay.reconcile.run import QUEUED_AFTER_SECONDS, decide, status_patch
from tests.unit.test_run_lifecycle import observed

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_a_new_run_refused_moments_after_its_creation_is_not_written() -> None:
    decision = decide(observed(may_start=False, created=NOW - timedelta(seconds=1)))
    assert decision.status.phase is None
    assert decision.start_attempt is None
    assert status_patch(None, decision.status) == {}  # no status write
    assert decision.requeue_after == QUEUED_AFTER_SECONDS - 1  # looked at again by then


def test_one_still_waiting_after_that_shows_queued_and_why() -> None:
    waited = timedelta(seconds=QUEUED_AFTER_SECONDS + 1)
    decision = decide(observed(may_start=False, created=NOW - waited))
    assert decision.status.phase is RunPhase.QUEUED
    patch = status_patch(None, decision.status)
    assert patch["phase"] == "Queued"
    assert "maxConcurrency" in patch["conditions"][0]["message"]


def test_a_run_already_queued_stays_queued() -> None:
    """A retry waiting for a slot (phase Queued, an attempt behind it) is not taken back."""
    given = observed(RunPhase.QUEUED, attempt=1, may_start=False, created=NOW)
    assert decide(given).status.phase is RunPhase.QUEUED


def test_a_new_run_admitted_at_once_starts() -> None:
    decision = decide(observed(created=NOW))
    assert decision.status.phase is RunPhase.PENDING and decision.start_attempt == 1


def test_only_an_empty_status_over_no_status_is_no_write() -> None:
    assert status_patch({}, IntegrationRunStatus()) == {}
    assert status_patch(None, IntegrationRunStatus(attempt=1)) != {}
    assert status_patch({"phase": "Queued"}, IntegrationRunStatus())["phase"] is None
