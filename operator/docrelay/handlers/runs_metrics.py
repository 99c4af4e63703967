"""Prometheus metrics of runs, served by the operator when DOCRELAY_METRICS_PORT is set.

Labels are namespace and integration names, phases and error classes only: never a document
identifier, an error message or anything a run printed.
"""

from __future__ import annotations

from collections import Counter as Tally
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RUNS_FINISHED = Counter(
    "docrelay_runs_finished_total",
    "Runs that reached a final phase.",
    ["namespace", "integration", "phase"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "docrelay_run_retries_total",
    "Attempts that failed with a retryable error and were scheduled again.",
    ["namespace", "integration", "error_class"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "docrelay_run_duration_seconds",
    "From a run's first start to its final phase.",
    ["namespace", "integration"],
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
    registry=REGISTRY,
)
RUNS_BY_PHASE = Gauge(
    "docrelay_runs",
    "Runs that exist now, by phase.",
    ["namespace", "integration", "phase"],
    registry=REGISTRY,
)
START_DELAY = Histogram(
    "docrelay_run_start_delay_seconds",
    "From a run's creation (the event) to its first Job.",
    ["namespace", "integration"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
OLDEST_QUEUED = Gauge(
    "docrelay_run_queued_oldest_seconds",
    "How long the oldest run waiting in Queued has existed.",
    ["namespace", "integration"],
    registry=REGISTRY,
)
PAUSED = Gauge(
    "docrelay_integration_paused",
    "1 while the integration is paused (its Paused condition is True) or suspended.",
    ["namespace", "integration", "why"],
    registry=REGISTRY,
)
AGENT_FAILING = Gauge(
    "docrelay_agent_failing",
    "1 while the agent's latest generation or fix of the integration failed (its test runs, "
    "or the provider).",
    ["namespace", "integration", "task"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "docrelay_runs_queued",
    "Runs waiting in Queued (for a slot, a retry, a revision or a resume).",
    ["namespace", "integration"],
    registry=REGISTRY,
)


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=REGISTRY)


def observe_listing(runs: list[dict[str, Any]], now: datetime | None = None) -> None:
    """Set the gauges from a full listing (the poller's)."""
    tally: Tally[tuple[str, str, str]] = Tally()
    oldest: dict[tuple[str, str], float] = {}
    for run in runs:
        phase = (run.get("status") or {}).get("phase") or "Queued"
        integration = str((run.get("spec") or {}).get("integration", ""))
        namespace = run["metadata"]["namespace"]
        tally[(namespace, integration, phase)] += 1
        created = run["metadata"].get("creationTimestamp")
        if phase == "Queued" and now is not None and created:
            age = (now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
            oldest[(namespace, integration)] = max(oldest.get((namespace, integration), 0), age)
    RUNS_BY_PHASE.clear()
    QUEUE_DEPTH.clear()
    OLDEST_QUEUED.clear()
    for (namespace, integration, phase), count in tally.items():
        RUNS_BY_PHASE.labels(namespace, integration, phase).set(count)
        if phase == "Queued":
            QUEUE_DEPTH.labels(namespace, integration).set(count)
    for (namespace, integration), age in oldest.items():
        OLDEST_QUEUED.labels(namespace, integration).set(max(age, 0.0))


def observe_index(
    phases: dict[tuple[str, str, str], int],
    oldest_queued: dict[tuple[str, str], datetime],
    now: datetime,
) -> None:
    """Set the gauges from the runs index: counts by phase kept as the cache changes, and the
    oldest waiting run of each integration (no pass over the finished runs)."""
    RUNS_BY_PHASE.clear()
    QUEUE_DEPTH.clear()
    OLDEST_QUEUED.clear()
    for (namespace, integration, phase), count in phases.items():
        RUNS_BY_PHASE.labels(namespace, integration, phase).set(count)
        if phase == "Queued":
            QUEUE_DEPTH.labels(namespace, integration).set(count)
    for (namespace, integration), created in oldest_queued.items():
        OLDEST_QUEUED.labels(namespace, integration).set(max((now - created).total_seconds(), 0.0))


def observe_integrations(integrations: list[dict[str, Any]]) -> None:
    """Set the paused and agent gauges from a full listing of Integrations."""
    PAUSED.clear()
    AGENT_FAILING.clear()
    for item in integrations:
        namespace, name = item["metadata"]["namespace"], item["metadata"]["name"]
        status = item.get("status") or {}
        paused = any(
            c.get("type") == "Paused" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        if paused:
            PAUSED.labels(namespace, name, "Paused").set(1)
        if (item.get("spec") or {}).get("suspend"):
            PAUSED.labels(namespace, name, "Suspended").set(1)
        agent = status.get("agent") or {}
        for task in ("generation", "fix"):
            state = (agent.get(task) or {}).get("state")
            if state in ("TestFailed", "Failed"):
                AGENT_FAILING.labels(namespace, name, task).set(1)


def observe_decision(namespace: str, integration: str, decision: Any) -> None:
    """A run's decision (reconcile.run.RunDecision): a final phase and its duration, or a
    retry scheduled."""
    status = decision.status
    if decision.finished is not None:
        RUNS_FINISHED.labels(namespace, integration, decision.finished.value).inc()
        if status.start_time and status.completion_time:
            seconds = (status.completion_time - status.start_time).total_seconds()
            DURATION.labels(namespace, integration).observe(max(0.0, seconds))
    elif decision.collect and status.error_class and getattr(status.phase, "value", "") == "Queued":
        RETRIES.labels(namespace, integration, status.error_class.value).inc()  # a retry
