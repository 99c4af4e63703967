"""`docrelay logs RUN [-f]`: a run's log, live from its pod while it runs, else the stored copy
(masked by the operator, kept after the Job and pod are gone). `--egress`: the attempt's
connections through the egress proxy instead (docs/egress.md); `--broker`: its account actions
through the broker (docs/broker.md)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from docrelay.actions.runs import (
    FINISHED,
    broker_record,
    broker_target,
    egress_record,
    live_pod,
    stored_log,
)
from docrelay.builders.run import CONTAINER
from docrelay.cli.common import CliError, connect
from docrelay.kube import Kube
from docrelay.kube import runs as kube_runs

POLL_SECONDS = 0.5


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "logs",
        parents=parents,
        help="print a run's log",
        description=(
            "Print the log of a run's attempt (default: the current or last one): from its pod "
            "while it runs, else the copy the operator stored with secret values masked."
        ),
    )
    parser.add_argument("run_name", metavar="RUN", help="the IntegrationRun's name")
    parser.add_argument("-f", "--follow", action="store_true", help="follow while it runs")
    parser.add_argument("--attempt", type=int, help="the attempt (default: the current one)")
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument(
        "--egress",
        action="store_true",
        help="list the attempt's connections through the egress proxy instead of its log",
    )
    listing.add_argument(
        "--broker",
        action="store_true",
        help="list the attempt's account actions through the broker instead of its log",
    )
    parser.set_defaults(run=run)


def _size(count: Any) -> str:
    value = float(count) if isinstance(count, int | float) else 0.0
    for unit in ("B", "kB", "MB"):
        if value < 1000 or unit == "MB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"  # pragma: no cover


def egress_summary(record: dict[str, Any]) -> str:
    return (
        f"{record['connections']} connection(s), {record['denied']} denied, "
        f"{_size(record['bytesOut'])} out, {_size(record['bytesIn'])} in"
    )


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell, the last one free."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]


def _footer(kind: str, summary: str, record: dict[str, Any]) -> str:
    footer = f"{kind}: {summary}"
    if record.get("dropped"):
        footer += f"; the {record['dropped']} oldest not listed"
    return footer


def egress_table(record: dict[str, Any]) -> str:
    """One line per connection, oldest first; the counts cover every connection, the lines
    the last ones kept."""
    rows: list[tuple[str, ...]] = [("TIME", "ALLOWED", "STATUS", "METHOD", "DESTINATION", "OUT",
                                    "IN", "SECONDS", "PATH / REASON")]  # fmt: skip
    for entry in record["entries"]:
        rows.append((
            str(entry.get("at", "")),
            "yes" if entry.get("allowed") else "no",
            str(entry.get("status", "")),
            str(entry.get("method", "")),
            f"{entry.get('host', '')}:{entry.get('port', '')}",
            _size(entry.get("bytesOut")),
            _size(entry.get("bytesIn")),
            str(entry.get("seconds", "")),
            str(entry.get("reason") or entry.get("path") or ""),
        ))  # fmt: skip
    footer = _footer("egress", egress_summary(record), record)
    return "\n".join([*_table(rows), footer]) + "\n"


def broker_summary(record: dict[str, Any]) -> str:
    return f"{record['actions']} action(s), {record['simulated']} simulated (dry run)"


def broker_table(record: dict[str, Any]) -> str:
    """One line per account action, oldest first; the counts cover every action, the lines
    the last ones kept."""
    rows: list[tuple[str, ...]] = [("TIME", "ACTION", "ACCOUNT", "OUTCOME", "STATUS", "TARGET")]
    for entry in record["entries"]:
        rows.append((
            str(entry.get("at", "")),
            str(entry.get("action", "")),
            str(entry.get("account", "")),
            str(entry.get("outcome", "")),
            str(entry.get("status", "")),
            broker_target(entry),
        ))  # fmt: skip
    footer = _footer("broker", broker_summary(record), record)
    return "\n".join([*_table(rows), footer]) + "\n"


# Each record `docrelay logs` shows: how it is read, summed up, listed, and said when absent.
RECORDS = {
    "egress": (
        egress_record,
        egress_summary,
        egress_table,
        "no connection through the egress proxy",
    ),
    "broker": (broker_record, broker_summary, broker_table, "no account action through the broker"),
}


def print_record(kube: Kube, namespace: str, name: str, attempt: int | None, kind: str) -> None:
    read, _, table, none = RECORDS[kind]
    run = kube.get(kube_runs.RUNS, namespace, name)
    if run is None:
        raise CliError(f"run {name} not found in namespace {namespace}")
    chosen = attempt or int((run.get("status") or {}).get("attempt") or 0)
    if not chosen:
        raise CliError(f"run {name} has not started an attempt yet")
    record = read(kube, namespace, name, chosen)
    if record is None:
        print(f"attempt {chosen} of run {name} made {none}")
        return
    sys.stdout.write(table(record))


def print_run_log(kube: Kube, namespace: str, name: str, attempt: int | None, follow: bool) -> None:
    """Print one attempt's log; with `follow`, wait for it to start and stream it."""
    while True:
        run = kube.get(kube_runs.RUNS, namespace, name)
        if run is None:
            raise CliError(f"run {name} not found in namespace {namespace}")
        status = run.get("status") or {}
        chosen = attempt or int(status.get("attempt") or 0)
        phase = status.get("phase")
        if chosen:
            stored = stored_log(kube, namespace, name, chosen)
            if stored is not None:
                sys.stdout.write(stored)
                for kind, (read, summary, _, _) in RECORDS.items():
                    record = read(kube, namespace, name, chosen)
                    if record is not None:  # stderr: stdout stays the log alone
                        print(
                            f"{kind}: {summary(record)} "
                            f"(docrelay logs {name} --attempt {chosen} --{kind} lists them)",
                            file=sys.stderr,
                        )
                return
            pod = live_pod(kube, namespace, name, chosen) if phase not in FINISHED else None
            if pod is not None:
                if not follow:
                    text = kube_runs.pod_log(kube, namespace, pod, CONTAINER, 8 * 1024 * 1024)
                    sys.stdout.write(text or "")
                    return
                for chunk in kube_runs.follow_pod_log(kube, namespace, pod, CONTAINER):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
                return
        if phase in FINISHED or not follow:
            if not chosen:
                raise CliError(f"run {name} has not started an attempt yet")
            raise CliError(f"no log stored for attempt {chosen} of run {name} (yet)")
        time.sleep(POLL_SECONDS)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    for kind in RECORDS:
        if getattr(args, kind):
            print_record(kube, namespace, args.run_name, args.attempt, kind)
            return 0
    print_run_log(kube, namespace, args.run_name, args.attempt, args.follow)
    return 0
