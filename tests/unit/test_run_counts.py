"""The Integration's run counters, aggregated from the runs cache (reconcile.run.tally and
docrelay.kube.runindex): each finished run is counted exactly once, also across a crash
between the run's final status and the counters' write, and a restart beside finished runs
counts none of them again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from docrelay.kube.runindex import RunIndex
from docrelay.models.integration import CountedRuns, IntegrationStatus
from docrelay.models.run import RunPhase
from docrelay.reconcile.run import FinishedView, tally

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def view(name: str, version: int, second: int, listed: bool, phase: str = "Succeeded"):
    return FinishedView(name, RunPhase(phase), T0 + timedelta(seconds=second), version, listed)


def count(status: IntegrationStatus, runs: list[FinishedView], through: int = 1000, active=0):
    # The completion of every run CountedRuns.recent may name, as the cache gives them.
    completed = {f"{p}": T0 + timedelta(seconds=s) for p, s in (("a", 0), ("b", 1), ("c", 2))}
    return tally(status, runs, active, through, 5, T0 + timedelta(minutes=5), 1, completed)


def test_runs_seen_finishing_are_counted_and_the_record_says_how_far() -> None:
    result = count(IntegrationStatus(), [view("a", 10, 1, False), view("b", 12, 2, False)], 15)
    assert result.patch is not None
    assert result.status.run_counts is not None and result.status.run_counts.succeeded == 2
    assert result.status.last_run is not None and result.status.last_run.name == "b"
    counted = result.status.counted_runs
    assert counted is not None and counted.resource_version == "15"
    assert counted.newest == T0 + timedelta(seconds=2) and set(counted.recent) == {"a", "b"}
    # Nothing new and the same activeRuns: nothing is written.
    assert count(result.status, [], 20).patch is None
    # A run started: activeRuns is written, the counts stay.
    started = count(result.status, [], 20, active=1)
    assert started.patch is not None and started.patch["activeRuns"] == 1


def test_a_crash_between_the_final_status_and_the_counters_loses_no_count() -> None:
    # Before the crash: a counted at the runs' version 100.
    before = count(IntegrationStatus(), [view("a", 90, 0, False)], 100).status
    # b finished (its final status at version 105); the operator died before counting it.
    # After the restart every finished run is listed: a, b, and an old run changed since.
    listed = [
        view("a", 90, 0, True),
        view("b", 105, 30, True),
        view("old", 130, -3600, True),  # finished long before; a replay's replayedBy since
    ]
    after = count(before, listed, 200).status
    assert after.run_counts is not None and after.run_counts.succeeded == 2  # a and b
    assert after.last_run is not None and after.last_run.name == "b"
    # Another restart counts nothing again.
    assert count(after, [view(n.name, n.version or 0, 0, True) for n in listed], 300).patch is None


def test_a_run_counted_moments_ago_and_changed_since_is_not_counted_again() -> None:
    first = count(IntegrationStatus(), [view("a", 10, 0, False)], 11).status
    second = count(first, [view("b", 20, 1, False)], 21).status
    assert second.counted_runs is not None and set(second.counted_runs.recent) == {"a", "b"}
    # a was changed after being counted (a fix written on it), then the operator restarted.
    again = count(second, [view("a", 50, 0, True), view("b", 20, 1, True)], 60)
    assert again.patch is None


def test_recent_keeps_only_runs_within_five_seconds_of_the_newest() -> None:
    status = IntegrationStatus(
        counted_runs=CountedRuns(resource_version="5", newest=T0, recent=("old",))
    )
    result = tally(status, [view("new", 10, 60, False)], 0, 11, 5, T0, 1, {"old": T0}).status
    assert result.counted_runs is not None and result.counted_runs.recent == ("new",)


def test_counts_written_before_this_bookkeeping_are_not_recounted_at_a_restart() -> None:
    status = IntegrationStatus.model_validate({"runCounts": {"succeeded": 7}})
    assert count(status, [view("a", 10, 0, True), view("b", 11, 1, True)]).patch is None
    live = count(status, [view("c", 12, 2, False)]).status
    assert live.run_counts is not None and live.run_counts.succeeded == 8


def test_consecutive_failures_pause_in_completion_order() -> None:
    runs = [view(f"f{i}", 10 + i, 10 - i, False, "Failed") for i in range(5)]
    result = count(IntegrationStatus(), runs)
    assert result.paused_now and result.status.consecutive_failures == 5
    assert result.status.last_run is not None and result.status.last_run.name == "f0"
    assert result.patch is not None and "conditions" in result.patch
    success_last = count(IntegrationStatus(), [*runs[:4], view("ok", 30, 20, False)])
    assert not success_last.paused_now and success_last.status.consecutive_failures == 0


# --- the index the gate and the counters read -------------------------------------------------


def raw(name: str, version: int, phase: str | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "resourceVersion": str(version),
            "creationTimestamp": "2026-01-01T12:00:00Z",
        },
        "spec": {"integration": "orders", **spec},
        "status": {"phase": phase} if phase else {},
    }


def test_the_index_holds_unfinished_runs_and_what_is_left_to_count() -> None:
    index = RunIndex()
    index.on_run(("ns", "listed"), None, raw("listed", 1, "Succeeded"), True)  # the first list
    index.on_run(("ns", "q"), None, raw("q", 2), True)
    index.mark_synced()
    index.on_run(("ns", "r"), None, raw("r", 3, "Running"), True)
    index.on_run(("ns", "t"), None, raw("t", 4, "Succeeded", test=True), True)
    assert sorted(r.name for r in index.refs("ns", "orders")) == ["q", "r"]
    assert index.active("ns", "orders") == 1 and index.waiting("ns", "orders") == ["q"]
    # Finished, by this process's own write first (write-through), then by the watch.
    index.on_run(("ns", "r"), raw("r", 3, "Running"), raw("r", 5, "Succeeded"), False)
    assert index.active("ns", "orders") == 0
    assert index.take_uncounted(("ns", "orders")) == {"listed": True}
    index.on_run(("ns", "r"), raw("r", 5, "Succeeded"), raw("r", 5, "Succeeded"), True)
    index.on_run(("ns", "r"), raw("r", 5, "Succeeded"), raw("r", 6, "Succeeded"), True)
    assert index.take_uncounted(("ns", "orders")) == {"r": False}  # once; test runs never
    assert ("ns", "orders") in index.take_dirty()
    assert index.phase_counts() == {("ns", "orders", "Queued"): 1, ("ns", "orders", "Succeeded"): 3}
    assert index.unfinished_runs() == [("ns", "q")]
