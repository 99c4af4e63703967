"""``python -m devkit.localnode``: start the local node; SIGTERM or SIGINT stops it cleanly.

Start-up: clean what a crashed run left in ``--state-dir``, find the memory cgroups, issue
the log server's certificate, serve logs, register the Node, watch pods. Shutdown: kill
every pod's processes, unmount everything, mark the Node NotReady (it is not deleted).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from kubernetes import config

from devkit.localnode import certs, env, mounts, sandbox
from devkit.localnode.cgroups import Cgroups
from devkit.localnode.kube import Kube
from devkit.localnode.logserver import LogServer
from devkit.localnode.node import Machine, NodeAgent
from devkit.localnode.pods import PodManager
from devkit.localnode.worker import NodeContext

log = logging.getLogger("devkit.localnode")

DEFAULT_POD_PIDS_LIMIT = 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devkit.localnode", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--ca-cert", type=Path, required=True,
                        help="cluster CA: signs the log server's certificate, checks clients")
    parser.add_argument("--ca-key", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True,
                        help="pods' files, logs and pid files; cleaned at start-up")
    parser.add_argument("--node-name", default="local-node")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-port", type=int, default=0,
                        help="port of the container-log endpoint on 127.0.0.1 (0: any free)")
    parser.add_argument("--pod-pids-limit", type=int, default=DEFAULT_POD_PIDS_LIMIT,
                        help="most processes and threads a pod may have (the kubelet's "
                             "podPidsLimit; -1: unlimited)")
    parser.add_argument("--never-forward", type=int, action="append", default=[],
                        metavar="PORT",
                        help="a loopback port no pod gets relayed, whatever its env says "
                             "(repeatable); the API server's and the log endpoint's never are")
    parser.add_argument("--hide-path", type=Path, action="append", default=[],
                        help="a host directory no container may see (repeatable); the "
                             "checkout and --state-dir always are")
    return parser.parse_args(argv)


def clean_stale_state(state_dir: Path, cgroups: Cgroups | None) -> None:
    """Kill and unmount whatever a previous run (perhaps a crash) left behind."""
    sandbox.kill_leftovers(state_dir)
    if cgroups is not None:
        cgroups.remove_all()
    mounts.unmount_all(state_dir)
    shutil.rmtree(state_dir / "pods", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.geteuid() != 0:
        log.error("the local node needs root (namespaces, mounts, cgroups)")
        return 2
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    instance = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    cgroups = Cgroups.detect(instance)
    log.info("memory cgroups: %s", f"v{cgroups.version} at {cgroups.parent}" if cgroups
             else "unavailable (memory limits not enforced)")
    pids_limit = args.pod_pids_limit if args.pod_pids_limit >= 0 else None
    log.info("pod PIDs limit: %s", "unavailable (not enforced)"
             if cgroups is None or cgroups.pids_parent is None else pids_limit or "none")
    clean_stale_state(state_dir, cgroups)

    kube = Kube(config.new_client_from_config(config_file=str(args.kubeconfig)))
    machine = Machine.read(state_dir)
    api_host, api_port = kube.server
    ctx = NodeContext(
        kube=kube,
        node_name=args.node_name,
        state_dir=state_dir,
        cgroups=cgroups,
        allocatable=machine.allocatable(),
        service_env=env.service_env(api_host, api_port),
        pids_limit=pids_limit,
        never_forwarded={api_port, *args.never_forward},
        hidden=tuple(sandbox.hidden_paths([str(state_dir), *map(str, args.hide_path)])),
    )
    manager = PodManager(ctx)

    cert, key = certs.issue_serving_cert(args.ca_cert, args.ca_key, state_dir / "pki",
                                         args.node_name, [machine.hostname])
    server = LogServer(manager, certs.server_context(cert, key, args.ca_cert),
                       port=args.log_port)
    ctx.never_forwarded.add(server.port)
    server.start()
    log.info("container logs served on https://127.0.0.1:%d", server.port)

    agent = NodeAgent(kube, args.node_name, machine, server.port)
    try:
        agent.register()
        agent.start()
        manager.start()
        log.info("node %s is ready", args.node_name)
        while not stop.wait(1):
            pass
    finally:
        manager.shutdown()
        server.stop()
        agent.leave()
        if cgroups is not None:
            cgroups.remove_all(including_parent=True)
        mounts.unmount_all(state_dir)
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
