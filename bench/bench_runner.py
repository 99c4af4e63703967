"""The runner's overhead: process start to `lambda_handler` called, against a bare interpreter
running the same code (exec the file, call the handler). Prints figures; asserts nothing.

Three ways, each `--runs` times (default 15), median and p90 in milliseconds:
- bare: `python -c` that execs handler.py and calls lambda_handler;
- runner: `python -m docrelay.runner`, no secrets (no broker call);
- runner + secret: one sealed variable, the key from a local stand-in broker (HTTP on
  loopback), decrypted before the handler runs (imports cryptography, one HTTP round trip).

    .venv/bin/python bench/bench_runner.py [--runs 15]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
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

KEY = os.urandom(32)
RUN_UID = "bench-run-uid"
HANDLER = """
import os, time
def lambda_handler(event, context):
    with open(os.environ["BENCH_STAMP"], "w") as out:
        out.write(repr(time.time()))
    return {"summary": "ok"}
"""
BARE = (
    "import sys; ns = {'__name__': 'integration'}; "
    "exec(compile(open(sys.argv[1]).read(), 'handler.py', 'exec'), ns); "
    "ns['lambda_handler']({}, None)"
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
    return (float(stamp.read_text()) - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        code, stamp, token = tmp / "handler.py", tmp / "stamp", tmp / "token"
        code.write_text(HANDLER)
        token.write_text("bench-token")
        base = {
            **os.environ,
            "PYTHONPATH": str(REPO / "operator"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "BENCH_STAMP": str(stamp),
        }
        runner_env = {
            **base,
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
            "bare interpreter": ([sys.executable, "-c", BARE, str(code)], base),
            "runner": ([sys.executable, "-m", "docrelay.runner"], runner_env),
            "runner + 1 secret": ([sys.executable, "-m", "docrelay.runner"], secret_env),
        }
        results: dict[str, list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift hits every case alike
            for name, (argv, env) in cases.items():
                results.setdefault(name, []).append(once(argv, env, stamp))
    server.shutdown()
    bare = statistics.median(results["bare interpreter"])
    print(f"{'case':<20} {'median ms':>10} {'p90 ms':>8} {'overhead ms':>12}")
    for name, samples in results.items():
        samples.sort()
        median = statistics.median(samples)
        p90 = samples[int(0.9 * (len(samples) - 1))]
        print(f"{name:<20} {median:>10.1f} {p90:>8.1f} {median - bare:>12.1f}")


if __name__ == "__main__":
    main()
