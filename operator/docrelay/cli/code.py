"""`docrelay code REVISION` or `docrelay code INTEGRATION [--revision R]`: print a revision's
code (default: the integration's deployed revision)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docrelay.builders.revision import code_digest
from docrelay.cli import revref
from docrelay.cli.common import CliError, connect
from docrelay.kube import REVISIONS
from docrelay.models.revision import CODE_KEY


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
    reference = revision["spec"]["codeConfigMap"]
    data = kube.read_config_map_data(namespace, reference["name"])
    key = reference.get("key", CODE_KEY)
    if data is None or key not in data:
        raise CliError(f"the code of revision {name} (ConfigMap {reference['name']}) is missing")
    code = data[key]
    if code_digest(code) != revision["spec"]["codeHash"]:
        raise CliError(f"the code of revision {name} does not match its codeHash; not printed")
    sys.stdout.write(code if code.endswith("\n") else code + "\n")
    return 0
