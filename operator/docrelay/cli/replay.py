"""`docrelay replay INTEGRATION`: run failed or dead-lettered runs again, as new runs.

Each replay is a new IntegrationRun (a new event id, so a new name) that names the run it
replays in `spec.replayOf`, keeps its document, trigger and idempotency key (the downstream
system can still drop a duplicate), and runs the deployed revision (default: the fix you just
deployed) or, with `--revision pinned`, the revision the original ran.
Runs are created at a bounded rate.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from docrelay.actions.runs import REPLAYABLE, replay_manifest
from docrelay.cli.common import CliError, connect, get_integration
from docrelay.kube import runs as kube_runs

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    add_replay_parser(commands, parents)


def add_replay_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        parents=parents,
        help="run failed or dead-lettered runs again",
        description=(
            "Create a new run for each selected finished run of INTEGRATION (default: the "
            "dead-lettered ones), naming the run it replays."
        ),
    )
    parser.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    parser.add_argument(
        "--phase",
        action="append",
        choices=REPLAYABLE,
        help="replay runs in this phase (repeatable; default: DeadLettered)",
    )
    parser.add_argument("--since", help="only runs created within this long, e.g. 2h, 3d")
    parser.add_argument("--until", help="only runs created more than this long ago, e.g. 10m")
    parser.add_argument(
        "--revision",
        choices=("current", "pinned"),
        default="current",
        help="run the deployed revision (current, the default) or the one the original ran "
        "(pinned)",
    )
    parser.add_argument(
        "--rate", type=float, default=2.0, help="at most this many runs per second (default 2)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would be replayed")
    parser.set_defaults(run=run)


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise CliError(f"not a duration: {text!r} (use e.g. 30s, 10m, 2h, 3d)", 2)
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _created(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


def select(
    runs: list[dict[str, Any]],
    integration: str,
    phases: tuple[str, ...],
    since: timedelta | None,
    until: timedelta | None,
    now: datetime,
) -> list[dict[str, Any]]:
    chosen = []
    for item in runs:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        if spec.get("integration") != integration or spec.get("test"):
            continue
        if status.get("phase") not in phases:
            continue
        created = _created(item)
        if since is not None and created < now - since:
            continue
        if until is not None and created > now - until:
            continue
        chosen.append(item)
    return sorted(chosen, key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"]))


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise CliError("--rate must be positive", 2)
    kube, namespace = connect(args)
    integration = get_integration(kube, namespace, args.integration)
    deployed = (integration.get("status") or {}).get("deployedRevision")
    chosen = select(
        kube_runs.list_runs(kube, namespace),
        args.integration,
        tuple(args.phase or ("DeadLettered",)),
        parse_duration(args.since) if args.since else None,
        parse_duration(args.until) if args.until else None,
        datetime.now(UTC),
    )
    if not chosen:
        print("nothing to replay")
        return 0
    for index, original in enumerate(chosen):
        body = replay_manifest(original, args.revision)
        if args.dry_run:
            revision = body["spec"].get("revision")
            which = (
                f"pinned revision {revision}"
                if revision
                else f"deployed revision {deployed}"
                if deployed
                else "the deployed revision (none yet: it waits in Queued)"
            )
            print(f"would replay {original['metadata']['name']} with {which}")
            continue
        if index:
            time.sleep(1.0 / args.rate)
        created = kube.create_or_get(kube_runs.RUNS, namespace, body)
        print(f"{original['metadata']['name']} replayed as {created['metadata']['name']}")
    sys.stdout.flush()
    return 0
