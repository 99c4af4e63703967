"""python -m devkit.cluster up|down|status: a persistent local cluster for people.

Tests start their own cluster; this one is for exploring with kubectl and docrelay.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from devkit import toolchain
from devkit.cluster.controlplane import REPO_ROOT, Cluster, ClusterError

DEFAULT_STATE_DIR = REPO_ROOT / ".devkit" / "cluster"


def _export_line(cluster: Cluster) -> str:
    return f"export KUBECONFIG={cluster.kubeconfig}"


def _cmd_up(args: argparse.Namespace) -> int:
    running = Cluster.attach(args.state_dir)
    if running is not None and running.healthy():
        print(_export_line(running))
        return 0
    if running is not None:
        print("[cluster] a previous cluster is not healthy; replacing it", file=sys.stderr)
        running.stop()
    # A fresh cluster every time: old etcd data would hold objects of an earlier API.
    shutil.rmtree(args.state_dir, ignore_errors=True)
    cluster = Cluster(args.state_dir, with_node=not args.no_node)
    cluster.start(detach=True, timeout=args.timeout)
    print(f"[cluster] kubectl: {toolchain.ensure('kubectl')} (also in {toolchain.bin_dir()}: "
          f'export PATH="{toolchain.bin_dir()}:$PATH")', file=sys.stderr)
    print(f"[cluster] component logs: {cluster.log_dir}", file=sys.stderr)
    print(_export_line(cluster))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    cluster = Cluster.attach(args.state_dir)
    if cluster is None:
        print("[cluster] no local cluster is running", file=sys.stderr)
        return 0
    cluster.stop()
    print("[cluster] stopped", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cluster = Cluster.attach(args.state_dir)
    if cluster is None:
        print("no local cluster is running (make cluster-up starts one)")
        return 1
    for name, alive in cluster.alive().items():
        print(f"{name:<24} {'running' if alive else 'EXITED'}   {cluster.log_dir / name}.log")
    print(_export_line(cluster))
    return 0 if cluster.healthy() else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.cluster",
        description="A persistent local Kubernetes cluster: the real control plane built from "
        "source plus the local node, all as processes on loopback.",
    )
    parser.add_argument(
        "--state-dir", type=Path,
        default=Path(os.environ.get("DOCRELAY_CLUSTER_DIR", DEFAULT_STATE_DIR)),
        help="where PKI, kubeconfig, etcd data and logs live (default: .devkit/cluster)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start (or find) the cluster; prints `export KUBECONFIG=...`")
    p.add_argument("--no-node", action="store_true", help="control plane only, no local node")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
    p.set_defaults(func=_cmd_up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=_cmd_down)
    sub.add_parser("status", help="show each component").set_defaults(func=_cmd_status)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (ClusterError, toolchain.ToolchainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
