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
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.runner_harness import measure, report, runner_envs, start_broker  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    broker = start_broker()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        code, stamp = tmp / "handler.py", tmp / "stamp"
        code.write_text(HANDLER)
        base = {
            **os.environ,
            # BENCH_OPERATOR_SRC: another checkout's operator/ (an older runner, same bench)
            "PYTHONPATH": os.environ.get("BENCH_OPERATOR_SRC") or str(REPO / "operator"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "BENCH_STAMP": str(stamp),
        }
        runner_env, secret_env = runner_envs(base, tmp, code, broker)
        cases = {
            "bare interpreter": ([sys.executable, "-c", BARE, str(code)], base),
            "runner": ([sys.executable, "-m", "docrelay.runner"], runner_env),
            "runner + 1 secret": ([sys.executable, "-m", "docrelay.runner"], secret_env),
        }
        results = measure(cases, stamp, args.runs)
    broker.shutdown()
    report(results, "bare interpreter")
    bare, runner = (statistics.median(results[k]) for k in ("bare interpreter", "runner"))
    # The row of issue #17's table, beside its floor (the bare start) from the same run.
    print(
        f"runner start -> handler called / bare `python -c` start: {runner / bare:.2f}x "
        f"({runner:.0f} ms vs {bare:.0f} ms)"
    )


if __name__ == "__main__":
    main()
