"""`docrelay test REVISION --document ID` or `docrelay test INTEGRATION --document ID
[--revision R]`: one test run, followed to the end.

A test run is never retried and does not count in the integration's status; it may run a
revision that is not deployed. Exit 0 if it succeeded, 1 if not, 3 if it did not finish in time.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from docrelay.actions.runs import FINISHED, new_test_run, stored_log
from docrelay.cli import revref
from docrelay.cli.common import EXIT_ERROR, EXIT_TIMEOUT, CliError, connect
from docrelay.kube import runs as kube_runs

POLL_SECONDS = 0.5


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "test",
        parents=parents,
        help="test-run an integration on one document",
        description=(
            "Create a test run for one document, follow it, print its log and result: NAME is "
            "a revision, or an integration (its deployed revision, or --revision). Exit 0 if it "
            "succeeded, 1 if it failed, 3 if it did not finish in time."
        ),
    )
    revref.add_arguments(parser)
    parser.add_argument("--document", required=True, help="the document's identifier")
    parser.add_argument(
        "--trigger", default=None, help="the trigger (default: the integration's own)"
    )
    parser.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for the result (default 600)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    target = revref.resolve(kube, namespace, args.name, args.revision)
    args.integration, args.revision = target.integration, target.revision
    integration = target.integration_object
    trigger = args.trigger or integration["spec"]["trigger"]
    body = new_test_run(namespace, args.integration, args.document, trigger, args.revision)
    name = body["metadata"]["name"]
    kube.create_or_get(kube_runs.RUNS, namespace, body)
    print(f"test run {name} created", file=sys.stderr)
    deadline = time.monotonic() + args.wait
    seen = None
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = kube.get(kube_runs.RUNS, namespace, name)
        if obj is None:
            raise CliError(f"test run {name} was deleted")
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase != seen:
            print(f"phase: {phase or 'Queued'}", file=sys.stderr)
            seen = phase
        if phase in FINISHED:
            break
        time.sleep(POLL_SECONDS)
    else:
        print(f"error: test run {name} did not finish in {args.wait:g} s", file=sys.stderr)
        return EXIT_TIMEOUT
    attempt = int(status.get("attempt") or 0)
    log = stored_log(kube, namespace, name, attempt) if attempt else None
    if log:
        print("--- log ---")
        sys.stdout.write(log if log.endswith("\n") else log + "\n")
        print("--- end of log ---")
    if status.get("phase") == "Succeeded":
        print(f"Succeeded: {status.get('resultSummary') or '(no result summary)'}")
        return 0
    print(f"{status.get('phase')}: {status.get('errorClass')}: {status.get('errorMessage') or ''}")
    return EXIT_ERROR
