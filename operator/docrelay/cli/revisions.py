"""`docrelay revisions INTEGRATION`: the integration's revisions, oldest first."""

from __future__ import annotations

import argparse
from typing import Any

from docrelay.cli.common import connect, get_integration, print_objects, print_table
from docrelay.kube import Kube
from docrelay.reconcile.revision import revision_info


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "revisions",
        parents=parents,
        help="list an integration's revisions",
        description=(
            "List the IntegrationRevisions of an integration, oldest first: where the code came "
            "from, when, whether it is valid, whether its test runs passed (TESTED: yes, no, "
            "or - when none ran), the agent's judgement of them against the instructions in a "
            "conversation (VERDICT: pass, fail, overridden, or -), and which one is deployed "
            "(marked *)."
        ),
    )
    parser.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    integration = get_integration(kube, namespace, args.integration)
    revisions = kube.list_revisions(namespace, args.integration)
    if args.output:
        print_objects({"apiVersion": "v1", "kind": "List", "items": revisions}, args.output)
        return 0
    deployed = (integration.get("status") or {}).get("deployedRevision")
    print_table(
        ["NAME", "SOURCE", "CREATED", "VALID", "TESTED", "VERDICT", "DEPLOYED"],
        [_row(kube, r, deployed) for r in revisions],
    )
    return 0


def mark_tested(tested: bool | None) -> str:
    """The TESTED column: the revision's Tested condition (its test runs), "-" when unknown."""
    return {True: "yes", False: "no", None: "-"}[tested]


VERDICTS = {"JudgedPassed": "pass", "JudgedFailed": "fail", "Overridden": "overridden"}


def mark_verdict(revision: dict[str, Any]) -> str:
    """The VERDICT column: the Tested condition's reason when a conversation judged the tests
    (docs/agent.md), "-" otherwise."""
    for condition in (revision.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Tested":
            return VERDICTS.get(str(condition.get("reason")), "-")
    return "-"


def _row(kube: Kube, revision: dict[str, Any], deployed: str | None) -> list[str]:
    info = revision_info(revision)
    source = revision.get("spec", {}).get("source", {})
    origin = source.get("type", "")
    if source.get("fixOfRun"):
        origin += f" (fix of {source['fixOfRun']})"
    valid = {True: "yes", False: f"no: {info.problem}", None: "unchecked"}[info.valid]
    return [
        info.name,
        origin,
        revision["metadata"]["creationTimestamp"],
        valid,
        mark_tested(info.tested),
        mark_verdict(revision),
        "*" if info.name == deployed else "",
    ]
