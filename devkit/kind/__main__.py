"""python -m devkit.kind base-image|node-image: make kind's images here (docs/development.md)."""

from __future__ import annotations

import argparse
import sys

from devkit import kind
from devkit.toolchain import ToolchainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.kind", description=__doc__)
    parser.add_argument("command", choices=["base-image", "node-image"])
    args = parser.parse_args(argv)
    try:
        tag = kind.base_image() if args.command == "base-image" else kind.node_image()
    except (kind.KindImageError, ToolchainError) as exc:
        print(f"devkit.kind: {exc}", file=sys.stderr)
        return 1
    print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
