"""`docrelay runs [INTEGRATION]`: runs with phase, attempt, duration and a one-line error."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from docrelay.cli.common import connect, print_objects, print_table
from docrelay.kube import runs as kube_runs

MAX_ERROR_CHARS = 80


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "runs",
        parents=parents,
        help="list runs",
        description="List IntegrationRuns, oldest first: phase, attempt, duration, last error.",
    )
    parser.add_argument("integration", metavar="INTEGRATION", nargs="?", help="only this one")
    parser.set_defaults(run=run)


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def duration(status: dict[str, Any], now: datetime) -> str:
    start = _time(status.get("startTime"))
    if start is None:
        return "-"
    end = _time(status.get("completionTime")) or now
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def one_line_error(status: dict[str, Any]) -> str:
    if not status.get("errorClass"):
        return ""
    message = " ".join(str(status.get("errorMessage") or "").split())
    text = f"{status['errorClass']}: {message}" if message else str(status["errorClass"])
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    items = [
        r
        for r in kube_runs.list_runs(kube, namespace)
        if not args.integration or (r.get("spec") or {}).get("integration") == args.integration
    ]
    items.sort(key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"]))
    if args.output:
        print_objects({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return 0
    now = datetime.now(UTC)
    rows = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        rows.append(
            [
                item["metadata"]["name"],
                str(spec.get("integration", "")),
                str(spec.get("documentIdentifier", "")),
                str(status.get("phase") or "Queued") + (" (test)" if spec.get("test") else ""),
                str(status.get("attempt", 0)),
                duration(status, now),
                one_line_error(status),
            ]
        )
    if not rows:
        print("no runs")
        return 0
    print_table(["NAME", "INTEGRATION", "DOCUMENT", "PHASE", "ATTEMPT", "DURATION", "ERROR"], rows)
    return 0
