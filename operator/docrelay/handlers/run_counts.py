"""The Integration's side of runs: its run fields (runCounts, lastRun, consecutiveFailures,
activeRuns, Paused) aggregated from the runs cache and written at most once a second per
integration, only when they changed; and retention. The runs machinery (handlers/runs.py)
calls these from its own threads.

The counts cannot lose a run to a crash between its final status and the counter write: the
run's final status is the record, and the Integration's `countedRuns` says how far the counts
go (reconcile.run.tally), so a restarted operator counts exactly the runs that finished since.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from docrelay.handlers.boundary import post_event
from docrelay.handlers.notify import paused_notice
from docrelay.kube import INTEGRATIONS, KubeError, ObjectRef
from docrelay.kube import runs as kube_runs
from docrelay.kube.cache import resource_version
from docrelay.models import API_VERSION
from docrelay.models.conditions import find_condition
from docrelay.models.integration import Integration, IntegrationConditionType, IntegrationStatus
from docrelay.models.run import RunPhase
from docrelay.reconcile.run import FinishedView, parse_time, runs_to_delete, tally

if TYPE_CHECKING:
    from docrelay.handlers.runs import Runs

log = logging.getLogger("docrelay.runs")

COUNT_INTERVAL = 1.0  # an Integration's run fields are written at most this often
ACTIVE_ONLY_DELAY = 5.0  # a change of activeRuns alone waits this long for a count to join it
ATTEMPTS = 5  # writes tried against a fresh read when another writer got there first


def _finished_view(raw: dict[str, Any] | None, listed: bool) -> FinishedView | None:
    status = (raw or {}).get("status") or {}
    try:
        phase = RunPhase(str(status.get("phase")))
    except ValueError:
        return None
    if raw is None or not phase.finished:
        return None
    at = status.get("completionTime")
    return FinishedView(
        name=raw["metadata"]["name"],
        phase=phase,
        completion=parse_time(at) if at else None,
        version=resource_version(raw),
        listed=listed,
    )


def flush_counts(runs: Runs, namespace: str, name: str, waited: float = 0.0) -> bool | None:
    """Write one Integration's run fields from the cache, if they changed. False if the write
    failed (the runs taken are put back, to be counted at the next try); None if only
    activeRuns changed and the first change is younger than ACTIVE_ONLY_DELAY (`waited`):
    a run shorter than that makes one write, with its count."""
    cache, integrations = runs.cache, runs.integrations
    if cache is None or integrations is None:
        return True
    with cache.cond:  # the watch position and the runs it delivered, together
        watched_through = cache.seen
        taken = runs.index.take_uncounted((namespace, name))
        views = [
            v
            for n, listed in taken.items()
            if (v := _finished_view(cache.get(namespace, n), listed))
        ]
    obj = integrations.get(namespace, name)
    for _ in range(ATTEMPTS):
        if obj is None:
            obj = runs.kube.get(INTEGRATIONS, namespace, name)
            if obj is None:
                return True  # the Integration is gone: nothing to count on
        status = IntegrationStatus.model_validate(obj.get("status") or {})
        recent = status.counted_runs.recent if status.counted_runs else ()
        completed = {}
        for n in recent:
            run = cache.get(namespace, n)
            at = ((run or {}).get("status") or {}).get("completionTime")
            completed[n] = parse_time(at) if at else None
        result = tally(
            status,
            views,
            runs.index.active(namespace, name),
            watched_through,
            runs.pause_after_failures,
            datetime.now(UTC).replace(microsecond=0),
            obj["metadata"].get("generation"),
            completed,
        )
        if result.patch is None:
            return True
        if not result.counted and not result.paused_now and waited < ACTIVE_ONLY_DELAY:
            return None
        try:
            written = kube_runs.patch_integration_status(
                runs.kube,
                namespace,
                name,
                result.patch,
                obj["metadata"]["resourceVersion"],
                integrations.observe,
            )
        except KubeError as exc:
            log.warning("runs: the run counts of %s/%s: %s; will retry", namespace, name, exc)
            runs.index.put_back((namespace, name), taken)
            return False
        if written:
            if result.paused_now:
                _paused(runs, obj, result.status)
            return True
        obj = None  # another writer came first: read again, count again
    runs.index.put_back((namespace, name), taken)
    return False


def _paused(runs: Runs, obj: dict[str, Any], status: IntegrationStatus) -> None:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    about = ObjectRef(API_VERSION, "Integration", namespace, name, obj["metadata"].get("uid"))
    post_event(
        runs.kube,
        about,
        "Warning",
        "Paused",
        f"paused after {status.consecutive_failures} consecutive failed runs; "
        "new runs wait until `docrelay resume`",
    )
    paused = find_condition(status.conditions, IntegrationConditionType.PAUSED)
    if runs.notifier is not None and paused is not None:
        runs.notifier.notify(
            Integration.model_validate(obj),
            paused_notice(
                namespace,
                name,
                status.consecutive_failures,
                paused.last_transition_time.isoformat(),
            ),
        )


def apply_retention(runs: Runs, integrations: list[tuple[str, str]]) -> None:
    """Delete the finished runs each named Integration's runRetention no longer keeps (from
    the index of finished runs: no listing)."""
    now = datetime.now(UTC)
    for namespace, name in integrations:
        obj = runs.integrations.get(namespace, name) if runs.integrations is not None else None
        if obj is None:
            continue  # runs of a deleted integration are kept until someone deletes them
        retention = Integration.model_validate(obj).spec.run_retention
        for doomed in runs_to_delete(runs.index.finished_runs((namespace, name)), retention, now):
            try:
                runs.kube.delete(kube_runs.RUNS, namespace, doomed)
            except KubeError as exc:
                log.warning("runs: retention failed: %s; will retry", exc)
                runs.index.retention_due.add((namespace, name))
                break
            log.info("run %s/%s deleted by the retention policy", namespace, doomed)
