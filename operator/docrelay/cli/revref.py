"""One way to name a revision in every command: a revision name alone (`docrelay code
orders-3f9a1c2b7d`), or an integration with `--revision` (`docrelay code orders --revision
orders-3f9a1c2b7d`). Without `--revision`, a name that is not a revision is an integration, and
its deployed revision is meant where the command has a default.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any

from docrelay.cli.common import CliError, get_integration
from docrelay.kube import REVISIONS, Kube

NAME_HELP = "a revision's name, or an integration's name (then --revision, or its deployed one)"
REVISION_HELP = "the revision, when NAME is an integration (default: the deployed revision)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help=NAME_HELP)
    parser.add_argument("--revision", help=REVISION_HELP)


@dataclass(frozen=True)
class Target:
    integration: str
    revision: str | None  # None: the integration's deployed revision (there may be none)
    integration_object: dict[str, Any]
    revision_object: dict[str, Any] | None


def resolve(kube: Kube, namespace: str, name: str, revision: str | None) -> Target:
    """Which integration and revision NAME (and --revision) mean; the revision, when named,
    exists and belongs to the integration."""
    if revision is None:
        found = kube.get(REVISIONS, namespace, name)
        if found is not None:
            integration = str(found.get("spec", {}).get("integration", ""))
            return Target(integration, name, get_integration(kube, namespace, integration), found)
        integration_object = _integration(kube, namespace, name)
        return Target(name, None, integration_object, None)
    integration_object = get_integration(kube, namespace, name)
    found = kube.get(REVISIONS, namespace, revision)
    if found is None or found.get("spec", {}).get("integration") != name:
        raise CliError(
            f"revision {revision} of integration {name} not found in namespace {namespace} "
            f"(list them with: docrelay revisions {name} -n {namespace})"
        )
    return Target(name, revision, integration_object, found)


def _integration(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    try:
        return get_integration(kube, namespace, name)
    except CliError:
        raise CliError(
            f"no revision or integration named {name} in namespace {namespace}"
        ) from None


def deployed(target: Target) -> str | None:
    """The revision meant: the named one, else the integration's deployed one."""
    return target.revision or (target.integration_object.get("status") or {}).get(
        "deployedRevision"
    )


def old_form_note(old: str, new: str) -> None:
    """Say, on stderr, that a command was given in its old form and what the form is now."""
    print(f"note: `{old}` is the old form; use `{new}`", file=sys.stderr)
