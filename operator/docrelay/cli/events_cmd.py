"""`docrelay events`: the deliveries the gateway received for this namespace, newest last, with
the outcome and why (refused: signature or stale; unmatched; ignored) and the runs each made.

Read from the ConfigMap the gateway keeps (docrelay.gateway.deliveries) with your own
Kubernetes rights; identifiers only, never a body.
"""

from __future__ import annotations

import argparse
from typing import Any

from docrelay.cli.common import connect, print_objects, print_table
from docrelay.gateway.deliveries import CONFIG_MAP, REASONS, merged


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "events",
        parents=parents,
        help="the document events the gateway received here: outcome, reason, runs",
        description=(
            "The deliveries the gateway received for this namespace (the last 200 per gateway "
            "process, and the last 50 refused ones), oldest first: time, event, document, "
            "workspace, document type, outcome, why (refused: signature or stale; unmatched; "
            "ignored) and the runs created. Never a body."
        ),
    )
    parser.add_argument("--refused", action="store_true", help="only refused deliveries")
    parser.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    parser.set_defaults(run=run)


def rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    table = []
    for entry in entries:
        runs = list(entry.get("runs") or [])
        if entry.get("existing"):
            runs.append(f"({entry['existing']} existed)")
        reason = str(entry.get("reason", ""))
        table.append(
            [
                str(entry.get("time", "")),
                str(entry.get("event", "")) or "-",
                str(entry.get("document", "")) or "-",
                str(entry.get("workspace", "")) or "-",
                str(entry.get("document_type", "")) or "-",
                str(entry.get("outcome", "")),
                REASONS.get(reason, reason),
                " ".join(runs) or "-",
            ]
        )
    return table


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    data = kube.read_config_map_data(namespace, CONFIG_MAP) or {}
    entries = merged(data)
    if args.refused:
        entries = [e for e in entries if e.get("outcome") == "refused"]
    entries = entries[-max(args.limit, 1) :]
    if args.output:
        print_objects({"deliveries": entries}, args.output)
        return 0
    if not entries:
        print(f"no deliveries recorded for namespace {namespace}")
        return 0
    print_table(
        ["TIME", "EVENT", "DOCUMENT", "WORKSPACE", "DOCUMENT TYPE", "OUTCOME", "WHY", "RUNS"],
        rows(entries),
    )
    return 0
