"""python -m devkit.engine up|down|status|env: the private-namespace container engine.

``env`` starts the engine when needed and prints one line for ``eval``:
``export DOCKER_HOST=unix:///.../docker.sock``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

from devkit import engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.engine", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    try:
        if args.command in ("up", "env"):
            host = engine.up()
            print(f"export DOCKER_HOST={host}" if args.command == "env" else host)
        elif args.command == "down":
            if not engine.down():
                print("the engine was not running", file=sys.stderr)
        else:
            for key, value in engine.status().items():
                print(f"{key:<12} {value}")
            return 0 if engine.running() else 3
    except engine.EngineError as exc:
        print(f"devkit.engine: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
