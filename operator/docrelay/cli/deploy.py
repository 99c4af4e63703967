"""`docrelay deploy REVISION` (or `INTEGRATION --revision REVISION`) and `docrelay revert
INTEGRATION`. The old form `docrelay deploy INTEGRATION REVISION` still works, with a note.

Neither edits the Integration's spec: the CLI writes a request annotation
(deploy.docrelay.io/request) and waits until the operator has acted on it (status
handledDeployRequest). The operator records who, when and from which revision in
status.history and posts an Event. See docs/operator.md, "Deploy and revert".
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from docrelay.actions.revisions import check_deployable, request_deploy, revert_target
from docrelay.cli import revref
from docrelay.cli.common import (
    EXIT_TIMEOUT,
    CliError,
    connect,
    get_integration,
    print_objects,
)
from docrelay.kube import INTEGRATIONS, Kube, latest_event_message
from docrelay.reconcile.deploy import DeployAction
from docrelay.reconcile.integration import Reason

POLL_SECONDS = 0.5


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    deploy = commands.add_parser(
        "deploy",
        parents=parents,
        help="deploy a revision of an integration",
        description=(
            "Make a revision its integration's deployed revision, without editing its spec: "
            "NAME is the revision, or the integration with --revision. The operator records "
            "the deploy (who, when, replacing which revision) in status.history and an Event. "
            "Note: when spec.code changes later, its new revision is deployed and replaces "
            "this one. The old form, deploy INTEGRATION REVISION, still works."
        ),
    )
    deploy.add_argument("name", metavar="NAME", help="the revision (or the integration)")
    deploy.add_argument(
        "old_revision", metavar="REVISION", nargs="?", help=argparse.SUPPRESS
    )  # the old form, INTEGRATION REVISION
    deploy.add_argument("--revision", help="the revision, when NAME is the integration")
    deploy.set_defaults(run=run_deploy)

    revert = commands.add_parser(
        "revert",
        parents=parents,
        help="go back to the previously deployed revision",
        description=(
            "Deploy the revision that was deployed before the current one (from "
            "status.history). Reverting twice returns to where you started."
        ),
    )
    revert.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    revert.set_defaults(run=run_revert)

    for parser in (deploy, revert):
        parser.add_argument(
            "--timeout",
            type=float,
            default=30.0,
            help="seconds to wait for the operator to act (default: 30; 0: do not wait)",
        )


def run_deploy(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    if args.old_revision is not None:
        if args.revision is not None:
            raise CliError("name the revision once: NAME --revision REVISION", 2)
        revref.old_form_note(
            "docrelay deploy INTEGRATION REVISION", f"docrelay deploy {args.old_revision}"
        )
        args.revision = args.old_revision
    target = revref.resolve(kube, namespace, args.name, args.revision)
    if target.revision is None:
        raise CliError(
            f"{args.name} is an integration: name the revision to deploy, e.g. "
            f"docrelay deploy {args.name} --revision REVISION (list them with: docrelay "
            f"revisions {args.name} -n {namespace})",
            2,
        )
    args.integration, args.revision = target.integration, target.revision
    integration = target.integration_object
    check_deployable(kube, namespace, args.integration, args.revision)
    if (integration.get("status") or {}).get("deployedRevision") == args.revision:
        print(f"integration {args.integration}: revision {args.revision} is already deployed")
        return 0
    return _request(kube, namespace, args, DeployAction.DEPLOY, args.revision)


def run_revert(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    integration = get_integration(kube, namespace, args.integration)
    target = revert_target(integration)
    check_deployable(kube, namespace, args.integration, target)
    return _request(kube, namespace, args, DeployAction.REVERT, target)


def _request(
    kube: Kube, namespace: str, args: argparse.Namespace, action: DeployAction, revision: str
) -> int:
    request = request_deploy(kube, namespace, args.integration, action, revision, kube.whoami())
    if args.timeout <= 0:
        print(f"integration {args.integration}: {action.value} of revision {revision} requested")
        return 0
    status = _wait_until_handled(kube, namespace, args.integration, request.id, args.timeout)
    if status is None:
        raise CliError(
            f"the {action.value} request is recorded on integration {args.integration}, but the "
            f"operator has not acted on it within {args.timeout:g}s; is the operator running "
            f"for namespace {namespace}?",
            EXIT_TIMEOUT,
        )
    if status.get("deployedRevision") != revision:
        why = latest_event_message(kube, namespace, args.integration, Reason.DEPLOY_REJECTED)
        raise CliError(why or f"the operator refused to {action.value} revision {revision}")
    record = (status.get("history") or [{}])[-1]
    if getattr(args, "output", None):
        print_objects(record, args.output)
        return 0
    previous = record.get("previousRevision")
    verb = "reverted to" if action is DeployAction.REVERT else "deployed"
    was = f" (was {previous})" if previous else ""
    print(f"integration {args.integration}: {verb} revision {revision}{was}")
    return 0


def _wait_until_handled(
    kube: Kube, namespace: str, name: str, request_id: str, timeout: float
) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        integration = kube.get(INTEGRATIONS, namespace, name)
        if integration is None:
            raise CliError(f"integration {name} was deleted in namespace {namespace}")
        status = integration.get("status") or {}
        if status.get("handledDeployRequest") == request_id:
            return dict(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_SECONDS)
