"""`docrelay chat INTEGRATION`: talk with the agent in a conversation (IntegrationConversation).

One thread per purpose, named for it: `INTEGRATION-build`, `INTEGRATION-change`, and
`RUN-fix` for "Fix in Chat" (`--fix RUN`). Each user turn is appended to the thread's spec
(guarded by resourceVersion); the operator's agent answers in its status. Without
`--message`, `--approve`, `--test`, `--live-test` or `--show`, an interactive conversation:
type a message (end it with an empty line), or a command: /approve, /test, /live-test, /diff,
/show, /quit. See docs/agent.md.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from typing import Any

from docrelay.actions import conversations
from docrelay.actions.conversations import get_thread
from docrelay.actions.revisions import revision_code
from docrelay.cli.common import EXIT_ERROR, EXIT_TIMEOUT, connect, get_integration
from docrelay.kube import Kube

POLL_SECONDS = 0.5
BUSY = ("Thinking", "Testing")
HELP = (
    "type a message and end it with an empty line; /approve, /test (dry), /live-test (sends "
    "for real), /diff, /show, /quit"
)
LIVE_WARNING = "a live test sends what the code sends, for real, to the downstream systems"


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    chat = commands.add_parser(
        "chat",
        parents=parents,
        help="talk with the agent about an integration: describe, answer, guide, approve",
        description=(
            "A conversation with the operator's agent about INTEGRATION: it asks when your "
            "words are ambiguous, proposes code as revisions (explained), reports their test "
            "runs and deploys a revision only when you approve it. Without --message, --approve "
            "or --show: an interactive conversation. Exit 1 if the agent failed, 3 on timeout."
        ),
    )
    chat.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    what = chat.add_mutually_exclusive_group()
    what.add_argument("--fix", metavar="RUN", help="the thread fixing this failed run")
    what.add_argument(
        "--change", action="store_true", help="the thread changing a deployed integration"
    )
    chat.add_argument("--message", "-m", help="say this (one turn) and print the answer")
    chat.add_argument("--approve", action="store_true", help="deploy the thread's proposal")
    test = chat.add_mutually_exclusive_group()
    test.add_argument(
        "--test", action="store_true", help="test the proposal again, dry (nothing is sent)"
    )
    test.add_argument(
        "--live-test",
        action="store_true",
        help="test the proposal for real: what it sends reaches the downstream systems",
    )
    chat.add_argument(
        "--revision",
        help="with --test, --live-test or --approve: this revision (default: the thread's "
        "latest proposal), e.g. one the one-shot generation made",
    )
    chat.add_argument("--show", action="store_true", help="print the thread and exit")
    chat.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for each answer (default 600)"
    )
    chat.set_defaults(run=run_chat)


def purpose_of(args: argparse.Namespace) -> str:
    return "Fix" if args.fix else "Change" if args.change else "Build"


def open_thread(kube: Kube, ns: str, args: argparse.Namespace) -> dict[str, Any]:
    """The thread for this purpose, created (owned by the Integration) if missing."""
    return conversations.open_thread(kube, ns, args.integration, purpose_of(args), args.fix)


def append_turn(kube: Kube, ns: str, name: str, **turn: Any) -> str:
    """Append one user turn as you; retried when someone else appended first. Its id."""
    return conversations.append_turn(kube, ns, name, kube.whoami(), **turn)


def render(turn: dict[str, Any]) -> str:
    if turn.get("role") == "User":
        head = f"{turn.get('by') or 'you'}"
        if turn.get("action") not in (None, "Say"):
            head += f" [{turn['action']}]"
    else:
        head = f"agent [{turn.get('kind')}]"
        if turn.get("revision"):
            head += f" {turn['revision']}"
        verdict = turn.get("verdict") or {}
        if verdict.get("verdict"):
            head += f" verdict {verdict['verdict']}"
    return f"{head}: {turn.get('text') or ''}".rstrip(": ")


def wait_answer(kube: Kube, ns: str, name: str, turn_id: str, seen: set[str], wait: float) -> int:
    """Print the thread's new turns until `turn_id` is answered and the agent rests."""
    deadline = time.monotonic() + wait
    shown_busy = None
    while time.monotonic() < deadline:
        thread = get_thread(kube, ns, name) or {}
        status = thread.get("status") or {}
        for turn in status.get("turns") or []:
            if turn["id"] not in seen and turn.get("role") == "Agent":
                seen.add(turn["id"])
                print(render(turn), flush=True)
        state = status.get("state")
        if status.get("answered") == turn_id and state not in BUSY:
            return EXIT_ERROR if state == "Failed" else 0
        busy = "testing ..." if state == "Testing" else "thinking ..."
        if busy != shown_busy:
            print(busy, file=sys.stderr, flush=True)
            shown_busy = busy
        time.sleep(POLL_SECONDS)
    print(f"error: no answer within {wait:g} s", file=sys.stderr)
    return EXIT_TIMEOUT


def show(thread: dict[str, Any]) -> None:
    status = thread.get("status") or {}
    if status.get("trimmed"):
        print(f"({status['trimmed']} older turns not shown)")
    for turn in status.get("turns") or []:
        print(render(turn))
    tokens = status.get("tokens") or {}
    print(
        f"state: {status.get('state') or 'new'}; revision: {status.get('revision') or '-'}; "
        f"tokens: {tokens.get('inputTokens', 0)} in, {tokens.get('outputTokens', 0)} out"
    )


def run_chat(args: argparse.Namespace) -> int:
    kube, ns = connect(args)
    thread = open_thread(kube, ns, args)
    name = thread["metadata"]["name"]
    if args.show:
        show(thread)
        return 0
    seen = {t["id"] for t in (thread.get("status") or {}).get("turns") or []}
    if args.message is not None or args.approve or args.test or args.live_test:
        code = 0
        if args.message is not None:
            turn = append_turn(kube, ns, name, text=args.message)
            code = wait_answer(kube, ns, name, turn, seen, args.wait)
        if (args.test or args.live_test) and code == 0:
            if args.live_test:
                print(f"note: {LIVE_WARNING}", file=sys.stderr)
            action = "LiveTest" if args.live_test else "Test"
            turn = append_turn(kube, ns, name, action=action, **_named(args.revision))
            code = wait_answer(kube, ns, name, turn, seen, args.wait)
        if args.approve and code == 0:
            turn = append_turn(kube, ns, name, action="Approve", **_named(args.revision))
            code = wait_answer(kube, ns, name, turn, seen, args.wait)
        return code
    return interactive(kube, ns, name, seen, args.wait)


def _named(revision: str | None) -> dict[str, str]:
    return {"revision": revision} if revision else {}


def interactive(kube: Kube, ns: str, name: str, seen: set[str], wait: float) -> int:
    print(f"conversation {name} ({HELP})", flush=True)
    thread = get_thread(kube, ns, name) or {}
    for turn in (thread.get("status") or {}).get("turns") or []:
        print(render(turn))
    lines: list[str] = []
    while True:
        print("> " if not lines else ". ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            return 0
        line = line.rstrip("\n")
        if not lines and line.startswith("/"):
            command = line.strip()
            if command == "/quit":
                return 0
            if command == "/show":
                show(get_thread(kube, ns, name) or {})
            elif command == "/approve":
                turn = append_turn(kube, ns, name, action="Approve")
                wait_answer(kube, ns, name, turn, seen, wait)
            elif command in ("/test", "/live-test"):
                if command == "/live-test":
                    print(f"note: {LIVE_WARNING}", flush=True)
                action = "LiveTest" if command == "/live-test" else "Test"
                turn = append_turn(kube, ns, name, action=action)
                wait_answer(kube, ns, name, turn, seen, wait)
            elif command == "/diff":
                print_diff(kube, ns, name)
            else:
                print(HELP)
            continue
        if line.strip() or not lines:
            if line.strip():
                lines.append(line)
            continue
        turn = append_turn(kube, ns, name, text="\n".join(lines))
        lines = []
        wait_answer(kube, ns, name, turn, seen, wait)


def print_diff(kube: Kube, ns: str, name: str) -> None:
    """The thread's proposal against the integration's deployed revision."""
    thread = get_thread(kube, ns, name) or {}
    proposal = (thread.get("status") or {}).get("revision")
    integration = get_integration(kube, ns, thread["spec"]["integration"])
    deployed = (integration.get("status") or {}).get("deployedRevision")
    if not proposal:
        print("no proposal yet")
        return
    old = revision_code(kube, ns, deployed)[1] if deployed else ""
    new = revision_code(kube, ns, proposal)[1]
    diff = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=deployed or "(nothing deployed)",
        tofile=proposal,
    )
    print("".join(diff) or "no difference")
