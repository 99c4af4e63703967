"""python -m devkit.images build|archives|lock: the operator and runner images (make images).

build      build what changed (cached by content), save each image as a tar; prints
           ``<reference> <archive>`` per image on stdout, progress on stderr
archives   the up-to-date archives, ``<reference> <archive>`` per line, building nothing
lock       re-resolve images/requirements/*.txt (needs the package index; versions as this
           checkout's .venv has them), pinning each wheel by sha256
"""

from __future__ import annotations

import argparse
import sys

from devkit import engine, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.images", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the images (cached by content)")
    build.add_argument("--only", action="append", metavar="NAME",
                       help="operator, runner-<python>, runner-node-<major> (repeatable)")
    build.add_argument("--base", choices=images.BASES, default="auto",
                       help="public registry images, Debian-made bases, or whichever works "
                            "(default auto; DOCRELAY_IMAGE_BASE=public|debian)")
    sub.add_parser("archives", help="list the up-to-date image archives")
    lock = sub.add_parser("lock", help="re-pin images/requirements/ by hash")
    lock.add_argument("--python", action="append",
                      help="Python versions (default: RUNNER_PYTHONS)")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            result = images.build(args.only, args.base)
            for ref, archive in result.built.items():
                print(f"{ref} {archive}")
            if result.skipped:
                print(f"skipped {len(result.skipped)}: " + "; ".join(
                    f"{ref} ({why})" for ref, why in result.skipped.items()), file=sys.stderr)
        elif args.command == "archives":
            for ref, archive in images.archives().items():
                print(f"{ref} {archive}")
        else:
            pythons = args.python or images.runner_pythons()
            for path in images.lock(["operator", "build", "runner"], pythons):
                print(path.relative_to(images.REPO))
    except (images.ImageError, engine.EngineError) as exc:
        print(f"devkit.images: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
