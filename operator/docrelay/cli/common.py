"""What every CLI command shares: kubectl-style options, connecting, output, errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from docrelay.actions import Refused
from docrelay.actions import get_integration as get_integration
from docrelay.kube import Kube, kubeconfig_namespace

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3


# One error for a request refused with a message for the person, whichever front end asked:
# `docrelay.actions` (shared with the console) raises it too.
CliError = Refused


def connection_options() -> argparse.ArgumentParser:
    """--kubeconfig, --context, -n: accepted after the command, as kubectl does."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("cluster connection")
    group.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)"
    )
    group.add_argument("--context", help="kubeconfig context (default: the current context)")
    group.add_argument(
        "-n",
        "--namespace",
        help="namespace (default: the namespace of the kubeconfig context, else 'default')",
    )
    return parser


def output_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "-o", "--output", choices=("yaml", "json"), help="print objects as YAML or JSON"
    )
    return parser


def connect(args: argparse.Namespace) -> tuple[Kube, str]:
    kube = Kube.connect(args.kubeconfig, args.context)
    namespace = args.namespace or kubeconfig_namespace(args.kubeconfig, args.context) or "default"
    return kube, namespace


def print_objects(data: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        line = "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
