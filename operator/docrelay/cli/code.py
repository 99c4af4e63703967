"""`docrelay code INTEGRATION [--revision R]`: print a revision's code (default: deployed)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docrelay.builders.revision import code_digest
from docrelay.cli.common import CliError, connect, get_integration
from docrelay.kube import REVISIONS
from docrelay.models.revision import CODE_KEY


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "code",
        parents=parents,
        help="print the code of a revision",
        description=(
            "Print the Python code of an integration's deployed revision, or of the revision "
            "named with --revision, exactly as stored."
        ),
    )
    parser.add_argument("integration", metavar="INTEGRATION", help="the Integration's name")
    parser.add_argument("--revision", help="a revision name (default: the deployed revision)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    integration = get_integration(kube, namespace, args.integration)
    name = args.revision or (integration.get("status") or {}).get("deployedRevision")
    if not name:
        raise CliError(
            f"integration {args.integration} has no deployed revision; name one with --revision"
        )
    revision = kube.get(REVISIONS, namespace, name)
    if revision is None or revision.get("spec", {}).get("integration") != args.integration:
        raise CliError(
            f"revision {name} of integration {args.integration} not found in namespace {namespace}"
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
