"""`docrelay generate INTEGRATION`, `docrelay fix RUN`, `docrelay diff REV1 [REV2]` (or
`docrelay diff INTEGRATION --revision REV`: the deployed revision against REV).

`generate` writes a request annotation (agent.docrelay.io/generate on the Integration) that
the operator's agent serves once, then follows status.agent until there is an outcome. `fix`
says one turn in the run's fix thread (RUN-fix, as `docrelay chat --fix` and the console) and
prints the answers; `fix --one-shot` writes agent.docrelay.io/fix on the run and follows its
status.fix. None edits an Integration's or a run's spec. Deploying
stays `docrelay deploy` (or deployPolicy Automatic), and only after the revision's test runs
passed. See docs/agent.md.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from docrelay.actions import conversations
from docrelay.actions.revisions import revision_code
from docrelay.cli import revref
from docrelay.cli.chat_cmd import wait_answer
from docrelay.cli.common import EXIT_ERROR, EXIT_TIMEOUT, CliError, connect, get_integration
from docrelay.kube import INTEGRATIONS, REVISIONS, Kube
from docrelay.kube import runs as kube_runs
from docrelay.reconcile.agent import (
    FIX_REQUEST_ANNOTATION,
    GENERATE_REQUEST_ANNOTATION,
    AgentRequest,
)

POLL_SECONDS = 0.5
# States that end a generation or a fix as far as the CLI waits.
DONE = {"Failed", "TestPassed", "TestFailed", "Deployed"}
GOOD = {"TestPassed", "Deployed"}


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    generate = commands.add_parser(
        "generate",
        parents=parents,
        help="ask the agent to write an integration's code from its instructions",
        description=(
            "Ask the operator's agent to write INTEGRATION's code from spec.instructions (again). "
            "The result is an IntegrationRevision (source Agent) that is test-run; it is deployed "
            "by `docrelay deploy` or, with deployPolicy Automatic, once its test runs pass. Exit "
            "0 if the revision passed its tests (or was deployed), 1 if not, 3 on timeout."
        ),
    )
    generate.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    generate.set_defaults(run=run_generate)

    fix = commands.add_parser(
        "fix",
        parents=parents,
        help="ask the agent to fix a failed run (starts or continues its fix thread)",
        description=(
            "Hand a failed run to the agent in its fix thread (RUN-fix, the one `docrelay chat "
            "INTEGRATION --fix RUN` and the console's Fix in Chat use): it gets the revision's "
            "code, the error, the run's masked log (last 10,000 characters) and the document "
            "type's schema, and proposes a revision (source Fix) that is test-run, dry, on the "
            "run's document and judged. Again with --message: your guidance, in the same "
            "thread. Exit 0 if the proposal passed (or was deployed), 1 if not, 3 on timeout."
        ),
    )
    fix.add_argument("run_name", metavar="RUN", help="the IntegrationRun's name")
    fix.add_argument(
        "--message",
        "-m",
        help="what to tell the agent (default for a new thread: 'Fix this run.')",
    )
    fix.add_argument(
        "--one-shot",
        action="store_true",
        help="no thread: one proposal through the run's agent.docrelay.io/fix annotation, "
        "followed in the run's status.fix (deployed by itself with deployPolicy Automatic)",
    )
    fix.set_defaults(run=run_fix)

    for parser in (generate, fix):
        parser.add_argument(
            "--wait",
            type=float,
            default=600.0,
            help="seconds to follow the agent's work (default 600; 0: only ask)",
        )

    diff = commands.add_parser(
        "diff",
        parents=parents,
        help="show how the code of two revisions differs",
        description=(
            "A unified diff of the code of two revisions: REV1 and REV2; or, with one revision "
            "(REV1, or INTEGRATION --revision REV), its integration's deployed revision "
            "against it."
        ),
    )
    diff.add_argument("old", metavar="REV1", help=revref.NAME_HELP)
    diff.add_argument("new", metavar="REV2", nargs="?", help="another revision")
    diff.add_argument("--revision", help="the revision, when the first name is an integration")
    diff.set_defaults(run=run_diff)


def _request(kube: Kube) -> AgentRequest:
    return AgentRequest(
        id=uuid.uuid4().hex,
        requested_by=kube.whoami(),
        requested_at=datetime.now(UTC).replace(microsecond=0),
    )


def _say(task: dict[str, Any], last: str | None) -> str:
    line = f"{task.get('state')}: {task.get('message') or ''}".rstrip(": ")
    if line != last:
        print(line, file=sys.stderr)
    return line


def run_generate(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    integration = get_integration(kube, namespace, args.integration)
    spec = integration.get("spec") or {}
    if not spec.get("instructions"):
        raise CliError(f"integration {args.integration} has no spec.instructions to generate from")
    if spec.get("code"):
        raise CliError(
            f"integration {args.integration} has spec.code, which wins over generated code; "
            "remove it to let the agent write the code"
        )
    request = _request(kube)
    kube.patch_annotations(
        INTEGRATIONS, namespace, args.integration, {GENERATE_REQUEST_ANNOTATION: request.encode()}
    )
    print(f"integration {args.integration}: generation requested", file=sys.stderr)
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    last = None
    while time.monotonic() < deadline:
        obj = get_integration(kube, namespace, args.integration)
        agent = (obj.get("status") or {}).get("agent") or {}
        task = agent.get("generation") or {}
        if agent.get("handledGenerateRequest") == request.id and task.get("requestId") == (
            request.id
        ):
            last = _say(task, last)
            if task.get("state") in DONE:
                if task.get("revision"):
                    print(f"revision: {task['revision']}")
                return 0 if task.get("state") in GOOD else EXIT_ERROR
        time.sleep(POLL_SECONDS)
    print(f"error: no outcome within {args.wait:g} s", file=sys.stderr)
    return EXIT_TIMEOUT


def run_fix(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    run = kube.get(kube_runs.RUNS, namespace, args.run_name)
    if run is None:
        raise CliError(f"run {args.run_name} not found in namespace {namespace}")
    phase = (run.get("status") or {}).get("phase")
    if phase not in ("Failed", "TimedOut", "DeadLettered"):
        raise CliError(
            f"run {args.run_name} is {phase or 'not started'}: only a failed, timed-out or "
            "dead-lettered run can be fixed"
        )
    if not args.one_shot:
        return fix_in_thread(kube, namespace, run, args)
    request = _request(kube)
    kube.patch_annotations(
        kube_runs.RUNS, namespace, args.run_name, {FIX_REQUEST_ANNOTATION: request.encode()}
    )
    print(f"run {args.run_name}: fix requested", file=sys.stderr)
    if args.wait <= 0:
        return 0
    deadline = time.monotonic() + args.wait
    last = None
    while time.monotonic() < deadline:
        obj = kube.get(kube_runs.RUNS, namespace, args.run_name)
        if obj is None:
            raise CliError(f"run {args.run_name} was deleted")
        fix = (obj.get("status") or {}).get("fix") or {}
        history = fix.get("history") or []
        if history and history[-1].get("requestId") == request.id:
            last = _say(fix, last)
            if fix.get("state") in DONE:
                if fix.get("revision"):
                    print(f"proposal: {fix['revision']}")
                if fix.get("testRun"):
                    print(f"test run: {fix['testRun']}")
                return 0 if fix.get("state") in GOOD else EXIT_ERROR
        time.sleep(POLL_SECONDS)
    print(f"error: no outcome within {args.wait:g} s", file=sys.stderr)
    return EXIT_TIMEOUT


def fix_in_thread(kube: Kube, namespace: str, run: dict[str, Any], args: argparse.Namespace) -> int:
    """Start or continue the run's fix thread with one Say turn; print the agent's answers,
    then the proposal and its test runs."""
    integration = str(run["spec"]["integration"])
    thread = conversations.open_thread(kube, namespace, integration, "Fix", args.run_name)
    name = thread["metadata"]["name"]
    text = args.message
    if text is None and (thread.get("spec") or {}).get("turns"):
        raise CliError(
            f"the fix thread {name} has begun: say what to change with --message, or talk in "
            f"it: docrelay chat {integration} --fix {args.run_name}"
        )
    seen = {t["id"] for t in (thread.get("status") or {}).get("turns") or []}
    turn = conversations.append_turn(
        kube, namespace, name, kube.whoami(), text=text or "Fix this run."
    )
    print(f"conversation {name}: {turn} said", file=sys.stderr)
    if args.wait <= 0:
        return 0
    code = wait_answer(kube, namespace, name, turn, seen, args.wait)
    status = (conversations.get_thread(kube, namespace, name) or {}).get("status") or {}
    if status.get("revision"):
        print(f"proposal: {status['revision']}")
    for test_run in status.get("testRuns") or []:
        print(f"test run: {test_run}")
    if code != 0:
        return code
    verdicts = [
        (t.get("verdict") or {}).get("verdict")
        for t in status.get("turns") or []
        if t.get("kind") == "TestVerdict" and t.get("revision") == status.get("revision")
    ]
    passed = status.get("state") == "Deployed" or (verdicts and verdicts[-1] == "Pass")
    return 0 if passed else EXIT_ERROR


def run_diff(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    if args.new is None:  # one revision: the deployed one against it
        if args.revision is None and kube.get(REVISIONS, namespace, args.old) is None:
            get_integration(kube, namespace, args.old)  # says which name is unknown
            raise CliError(
                f"{args.old} is an integration: name the revision, e.g. docrelay diff "
                f"{args.old} --revision REVISION",
                2,
            )
        target = revref.resolve(kube, namespace, args.old, args.revision)
        current = (target.integration_object.get("status") or {}).get("deployedRevision")
        if not current:
            raise CliError(f"integration {target.integration} has no deployed revision")
        args.old, args.new = current, target.revision
    elif args.revision is not None:
        raise CliError("give two revisions, or one integration with --revision", 2)
    old, old_code = revision_code(kube, namespace, args.old)
    new, new_code = revision_code(kube, namespace, args.new)
    if old["spec"]["integration"] != new["spec"]["integration"]:
        print(f"note: {args.old} and {args.new} belong to different integrations", file=sys.stderr)
    lines = difflib.unified_diff(
        old_code.splitlines(keepends=True),
        new_code.splitlines(keepends=True),
        fromfile=f"{args.old} ({old['spec']['source']['type']})",
        tofile=f"{args.new} ({new['spec']['source']['type']})",
    )
    for line in lines:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
    return 0
