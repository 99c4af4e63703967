"""`docrelay code REVISION` or `docrelay code INTEGRATION [--revision R]`: print a revision's
code (default: the integration's deployed revision)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docrelay.actions.revisions import revision_code
from docrelay.cli import revref
from docrelay.cli.common import CliError, connect
from docrelay.kube import REVISIONS


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "code",
        parents=parents,
        help="print the code of a revision",
        description=(
            "Print the Python code of a revision, exactly as stored: NAME is a revision, or an "
            "integration (its deployed revision, or the one named with --revision)."
        ),
    )
    revref.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    target = revref.resolve(kube, namespace, args.name, args.revision)
    name = revref.deployed(target)
    if not name:
        raise CliError(
            f"integration {target.integration} has no deployed revision; name one with --revision"
        )
    revision = target.revision_object or kube.get(REVISIONS, namespace, name)
    if revision is None or revision.get("spec", {}).get("integration") != target.integration:
        raise CliError(
            f"revision {name} of integration {target.integration} not found in namespace "
            f"{namespace}"
        )
    _, code = revision_code(kube, namespace, name)  # checked against its codeHash
    sys.stdout.write(code if code.endswith("\n") else code + "\n")
    return 0
