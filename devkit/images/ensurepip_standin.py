"""``ensurepip`` for the Debian-made base of runner:3.12 (not imported by devkit itself).

``devkit.images`` copies this file to ``/usr/local/lib/python3.12/ensurepip/__init__.py`` of
that base, beside ``_bundled/pip-<version>-py3-none-any.whl`` (pinned by sha256 in
``images/requirements/ensurepip-3.12.txt``). The base's CPython (python-build-standalone,
``devkit.toolchain.cpython``) comes without CPython's own ensurepip, and ``python -m venv``,
which Dockerfile.runner's build stage runs, calls ``python -m ensurepip --upgrade
--default-pip`` to put pip into the new environment. This does what ensurepip does there: run
pip from the bundled wheel to install that wheel, from that folder only, never an index. The
runner image's final stage deletes it, as it deletes every base's ensurepip.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

BUNDLED = Path(__file__).resolve().parent / "_bundled"


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ensurepip")
    parser.add_argument("--upgrade", action="store_true")
    parser.add_argument("--default-pip", action="store_true")  # pip installs pip3 and pip3.X
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    wheels = sorted(BUNDLED.glob("pip-*-py3-none-any.whl"))
    if len(wheels) != 1:
        print(f"ensurepip: expected one pip wheel in {BUNDLED}, found {len(wheels)}",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(wheels[0]))
    sys.argv = ["pip", "install", "--no-cache-dir", "--no-index", "--find-links", str(BUNDLED),
                *(["--upgrade"] if args.upgrade else []), *(["-v"] * args.verbose), "pip"]
    try:
        runpy.run_module("pip", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
