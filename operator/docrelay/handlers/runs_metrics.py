"""Prometheus metrics of runs, served by the operator when DOCRELAY_METRICS_PORT is set.

Labels are namespace and integration names, phases and error classes only: never a document
identifier, an error message or anything a run printed.
"""

from __future__ import annotations

from collections import Counter as Tally
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
QUEUE_DEPTH = Gauge(
    "docrelay_runs_queued",
    "Runs waiting in Queued (for a slot, a retry, a revision or a resume).",
    ["namespace", "integration"],
    registry=REGISTRY,
)


def serve(host: str, port: int) -> None:
    start_http_server(port, addr=host, registry=REGISTRY)


def observe_listing(runs: list[dict[str, Any]]) -> None:
    """Set the gauges from a full listing (the poller's)."""
    tally: Tally[tuple[str, str, str]] = Tally()
    for run in runs:
        phase = (run.get("status") or {}).get("phase") or "Queued"
        integration = str((run.get("spec") or {}).get("integration", ""))
        tally[(run["metadata"]["namespace"], integration, phase)] += 1
    RUNS_BY_PHASE.clear()
    QUEUE_DEPTH.clear()
    for (namespace, integration, phase), count in tally.items():
        RUNS_BY_PHASE.labels(namespace, integration, phase).set(count)
        if phase == "Queued":
            QUEUE_DEPTH.labels(namespace, integration).set(count)
