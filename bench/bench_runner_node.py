"""The Node.js runner's overhead: process start to `handler` called, as a ratio to a bare
`node -e` that imports the same code and calls its handler. Prints figures; asserts nothing.

Three ways, each `--runs` times (default 15, interleaved), median and p90 in milliseconds:
- bare: `node -e` importing handler.mjs and calling handler (no runner);
- runner: `node operator/docrelay/runner/node/runner.mjs`, no secrets (no broker call);
- runner + secret: one sealed variable, the key from a local stand-in broker (HTTP on
  loopback), decrypted with node:crypto and the masker built before the handler runs.

    .venv/bin/python bench/bench_runner_node.py [--runs 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from docrelay.runner.envcrypt import encrypt_value  # noqa: E402

RUNNER = REPO / "operator" / "docrelay" / "runner" / "node" / "runner.mjs"
KEY = os.urandom(32)
RUN_UID = "bench-run-uid"
# The handler writes the wall-clock time it was called (ms since the epoch, as Python reads it).
HANDLER = """
import { writeFileSync } from "node:fs";
export async function handler(event, context) {
  writeFileSync(process.env.BENCH_STAMP, String(performance.timeOrigin + performance.now()));
  return { summary: "ok" };
}
"""
BARE = (
    "import(require('node:url').pathToFileURL(process.argv[1]).href)"
    ".then((m) => m.handler({}, {}))"
)


class Broker(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.dumps(
            {"key": base64.urlsafe_b64encode(KEY).decode(), "runUid": RUN_UID, "attempt": 1}
        ).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def once(argv: list[str], env: dict[str, str], stamp: Path) -> float:
    stamp.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return float(stamp.read_text()) - started * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None:
        sys.exit("bench_runner_node: no node on PATH (Debian: apt-get install nodejs)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        code, stamp, token = tmp / "handler.mjs", tmp / "stamp", tmp / "token"
        code.write_text(HANDLER)
        token.write_text("bench-token")
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BENCH_STAMP": str(stamp)}
        runner_env = {
            **base,
            "TMPDIR": str(tmp),
            "DOCRELAY_CODE_PATH": str(code),
            "DOCRELAY_TERMINATION_MESSAGE_PATH": str(tmp / "termination"),
            "DOCRELAY_EVENT": json.dumps({"document_identifier": "doc"}),
            "DOCRELAY_TIMEOUT_SECONDS": "30",
        }
        secret_env = {
            **runner_env,
            "DOCRELAY_BROKER_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "DOCRELAY_BROKER_TOKEN_PATH": str(token),
            "DOCRELAY_SEALED_KEYS": "API_KEY",
            "API_KEY": encrypt_value(KEY, RUN_UID, 1, "API_KEY", b"sk-bench-value"),
        }
        cases = {
            "bare node -e": ([node, "-e", BARE, str(code)], base),
            "runner": ([node, str(RUNNER)], runner_env),
            "runner + 1 secret": ([node, str(RUNNER)], secret_env),
        }
        results: dict[str, list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift hits every case alike
            for name, (argv, env) in cases.items():
                results.setdefault(name, []).append(once(argv, env, stamp))
    server.shutdown()
    bare = statistics.median(results["bare node -e"])
    print(f"Node.js {version}, {args.runs} runs each: process start to handler called")
    print(f"{'case':<20} {'median ms':>10} {'p90 ms':>8} {'overhead ms':>12} {'x bare':>7}")
    for name, samples in results.items():
        samples.sort()
        median = statistics.median(samples)
        p90 = samples[int(0.9 * (len(samples) - 1))]
        print(
            f"{name:<20} {median:>10.1f} {p90:>8.1f} {median - bare:>12.1f} {median / bare:>7.2f}"
        )


if __name__ == "__main__":
    main()
