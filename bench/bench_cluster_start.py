"""How long the local cluster takes from start to ready, once the binaries are built.

Prints figures; asserts nothing. Usage: python bench/bench_cluster_start.py [ROUNDS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from devkit.cluster import Cluster  # noqa: E402


def measure(with_node: bool, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-cluster-") as state:
            cluster = Cluster(Path(state), with_node=with_node)
            started = time.monotonic()
            cluster.start(log=lambda _message: None)
            times.append(time.monotonic() - started)
            cluster.stop()
    return times


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for label, with_node in (("control plane", False), ("control plane + local node", True)):
        times = measure(with_node, rounds)
        print(
            f"start to ready, {label:<28} rounds={rounds} "
            f"min={min(times):.1f}s median={statistics.median(times):.1f}s "
            f"max={max(times):.1f}s"
        )


if __name__ == "__main__":
    main()
