"""The `docrelay` command (also `kubectl docrelay`): one module per command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from docrelay.cli import (
    accounts,
    agent_cmd,
    chat_cmd,
    code,
    console_cmd,
    deploy,
    events_cmd,
    gateway_cmd,
    keys,
    logs,
    operator_cmd,
    platform_cmd,
    replay,
    revisions,
    runs,
    seal,
    subscribe,
    switches,
    test_cmd,
)
from docrelay.cli.common import EXIT_ERROR, CliError, connection_options, output_options
from docrelay.kube import KubeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docrelay",
        description=(
            "docrelay: run document-AI integrations on Kubernetes. Also usable as "
            "`kubectl docrelay`."
        ),
        epilog="Exit codes: 0 success, 1 error, 2 bad usage or settings, 3 timed out.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    connection = connection_options()
    output = output_options()
    operator_cmd.add_parser(commands, [connection])
    revisions.add_parser(commands, [connection, output])
    code.add_parser(commands, [connection])
    deploy.add_parsers(commands, [connection, output])
    seal.add_parsers(commands, [connection])
    keys.add_parser(commands, [connection])
    runs.add_parser(commands, [connection, output])
    logs.add_parser(commands, [connection])
    test_cmd.add_parser(commands, [connection])
    replay.add_parsers(commands, [connection])
    switches.add_parsers(commands, [connection])
    agent_cmd.add_parsers(commands, [connection])
    chat_cmd.add_parser(commands, [connection])
    gateway_cmd.add_parser(commands, [connection])
    subscribe.add_parser(commands, [])
    platform_cmd.add_parsers(commands, [connection])
    events_cmd.add_parser(commands, [connection, output])
    accounts.add_parsers(commands, [connection, output])
    console_cmd.add_parser(commands, [connection])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
