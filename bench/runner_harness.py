"""What the runner benchmarks share (bench_runner.py for Python, bench_runner_node.py for
Node.js): a stand-in broker on loopback that hands out one run key, the runner's environment
without and with one sealed secret, one timed start (process start to the handler's stamp),
cases run interleaved, and the table of medians against the bare start."""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from docrelay.runner.envcrypt import encrypt_value  # noqa: E402

KEY = os.urandom(32)
RUN_UID = "bench-run-uid"
SECRET = b"sk-bench-value"

Case = tuple[list[str], Mapping[str, str]]  # argv, environment


class Broker(BaseHTTPRequestHandler):
    """`POST /v1/broker/key`, whatever the token: the run's key."""

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


def start_broker() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Broker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def runner_envs(
    base: Mapping[str, str], tmp: Path, code: Path, broker: ThreadingHTTPServer
) -> tuple[dict[str, str], dict[str, str]]:
    """The runner's environment without secrets, and with API_KEY sealed to the broker's key."""
    token = tmp / "token"
    token.write_text("bench-token")
    runner_env = {
        **base,
        "DOCRELAY_CODE_PATH": str(code),
        "DOCRELAY_TERMINATION_MESSAGE_PATH": str(tmp / "termination"),
        "DOCRELAY_EVENT": json.dumps({"document_identifier": "doc"}),
        "DOCRELAY_TIMEOUT_SECONDS": "30",
    }
    secret_env = {
        **runner_env,
        "DOCRELAY_BROKER_URL": f"http://127.0.0.1:{broker.server_address[1]}",
        "DOCRELAY_BROKER_TOKEN_PATH": str(token),
        "DOCRELAY_SEALED_KEYS": "API_KEY",
        "API_KEY": encrypt_value(KEY, RUN_UID, 1, "API_KEY", SECRET),
    }
    return runner_env, secret_env


def once(argv: list[str], env: Mapping[str, str], stamp: Path) -> float:
    """Milliseconds from starting ``argv`` to the handler writing ``stamp`` (epoch seconds)."""
    stamp.unlink(missing_ok=True)
    started = time.time()
    subprocess.run(argv, env=dict(env), check=True, stdout=subprocess.DEVNULL)
    return (float(stamp.read_text()) - started) * 1000


def measure(cases: Mapping[str, Case], stamp: Path, runs: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    for _ in range(runs):  # interleaved, so drift hits every case alike
        for name, (argv, env) in cases.items():
            results.setdefault(name, []).append(once(argv, env, stamp))
    return results


def report(results: Mapping[str, list[float]], bare: str) -> None:
    """Median and p90 of each case, its overhead over ``bare`` and the ratio to it."""
    bare_median = statistics.median(results[bare])
    print(f"{'case':<20} {'median ms':>10} {'p90 ms':>8} {'overhead ms':>12} {'x bare':>7}")
    for name, samples in results.items():
        ordered = sorted(samples)
        median = statistics.median(ordered)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"{name:<20} {median:>10.1f} {p90:>8.1f} {median - bare_median:>12.1f} "
              f"{median / bare_median:>7.2f}")
