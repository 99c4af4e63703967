"""The Node.js runner's overhead: process start to `handler` called, as a ratio to a bare
`node -e` that imports the same code and calls its handler. Prints figures; asserts nothing.

Three ways, each `--runs` times (default 15, interleaved), median and p90 in milliseconds:
- bare: `node -e` importing handler.mjs and calling handler (no runner);
- runner: `node operator/docrelay/runner/node/runner.mjs`, no secrets (no broker call);
- runner + secret: one sealed variable, the key from a local stand-in broker (HTTP on
  loopback), decrypted with node:crypto and the masker built before the handler runs.

    .venv/bin/python bench/bench_runner_node.py [--runs 15] [--nodejs 20|22]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runner_harness import measure, report, runner_envs, start_broker  # noqa: E402
from devkit.toolchain.node import ensure_node  # noqa: E402

RUNNER = REPO / "operator" / "docrelay" / "runner" / "node" / "runner.mjs"
# The handler writes the wall-clock time it was called (seconds since the epoch, as Python's
# time.time()).
HANDLER = """
import { writeFileSync } from "node:fs";
export async function handler(event, context) {
  const now = (performance.timeOrigin + performance.now()) / 1000;
  writeFileSync(process.env.BENCH_STAMP, String(now));
  return { summary: "ok" };
}
"""
BARE = (
    "import(require('node:url').pathToFileURL(process.argv[1]).href)"
    ".then((m) => m.handler({}, {}))"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--nodejs", choices=["20", "22"],
                        help="the pinned official Node.js of this line (devkit/toolchain/node.py) "
                        "instead of the node on PATH")
    args = parser.parse_args()
    node = str(ensure_node(args.nodejs) / "bin" / "node") if args.nodejs else shutil.which("node")
    if node is None:
        sys.exit("bench_runner_node: no node on PATH (Debian: apt-get install nodejs; "
                 "or --nodejs 22)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    broker = start_broker()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        code, stamp = tmp / "handler.mjs", tmp / "stamp"
        code.write_text(HANDLER)
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BENCH_STAMP": str(stamp),
                "TMPDIR": str(tmp)}
        runner_env, secret_env = runner_envs(base, tmp, code, broker)
        cases = {
            "bare node -e": ([node, "-e", BARE, str(code)], base),
            "runner": ([node, str(RUNNER)], runner_env),
            "runner + 1 secret": ([node, str(RUNNER)], secret_env),
        }
        results = measure(cases, stamp, args.runs)
    broker.shutdown()
    print(f"Node.js {version}, {args.runs} runs each: process start to handler called")
    report(results, "bare node -e")


if __name__ == "__main__":
    main()
