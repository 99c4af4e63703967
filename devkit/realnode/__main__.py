"""python -m devkit.realnode run [--logs DIR] [--keep-state] -- COMMAND [ARG...]

Builds (once, cached) the node's binaries and its two own images, then, in a fresh private
network + mount + PID namespace (``unshare``), starts the devkit control plane and a real
node, runs COMMAND there with ``KUBECONFIG`` and ``DOCRELAY_E2E_CONTEXT`` set, writes the
cluster's state and every log to DIR when COMMAND fails, and tears it all down: the
namespace's last process takes every container, mount, interface and iptables rule with it;
the node's cgroups and the state directory are removed afterwards. Exit status: COMMAND's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit import toolchain
from devkit.cluster import kubeconfig
from devkit.cluster.controlplane import Cluster
from devkit.realnode import images, node

INSIDE = "DOCRELAY_REALNODE_STATE"
# Namespaces whose objects are the harness's own: a failure dump lists them, not their logs.
SYSTEM_NAMESPACES = {"default", "kube-node-lease", "kube-public", "kube-system"}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def missing_tools() -> list[str]:
    """What this machine lacks, as sentences ([] when nothing)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root: the node needs namespaces, mounts, cgroups and iptables")
    for tool, package in (
        ("unshare", "util-linux"), ("ip", "iproute2"), ("iptables", "iptables"),
        ("ipset", "ipset"), ("gcc", "gcc"), ("go", "Go 1.26 or newer"),
    ):
        if shutil.which(tool) is None:
            problems.append(f"`{tool}` not found ({package})")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not Path("/usr/lib/cni", plugin).exists():
            problems.append(f"/usr/lib/cni/{plugin} missing (Debian's containernetworking-plugins)")
    if not Path("/usr/include/seccomp.h").exists():
        problems.append("seccomp.h missing (Debian's libseccomp-dev, for runc)")
    return problems


def product_archives() -> dict[str, Path]:
    """`make images`' archives (devkit.images), or none where that module is absent."""
    try:
        from devkit import images as product
    except ImportError:
        say("[realnode] devkit.images is not here: only the node's own images are loaded")
        return {}
    return {name: Path(path) for name, path in product.archives().items()}


def missing_runner_images(archives: dict[str, Path]) -> list[str]:
    """The runner images `make images` builds (devkit.images: RUNNER_PYTHONS, RUNNER_NODES, or
    the Makefile's defaults) with no archive here: runs of their runtime cannot start on this
    node (no registry to pull from). None where devkit.images is absent (product_archives
    said so)."""
    try:
        from devkit import images as product
    except ImportError:
        return []
    repo = product.image_repo()
    wanted = [
        *(f"{repo}/runner:{python}" for python in product.runner_pythons()),
        *(f"{repo}/runner-node:{node}" for node in product.runner_nodes()),
    ]
    return [ref for ref in wanted if ref not in archives]


def outside(args: argparse.Namespace) -> int:
    if problems := missing_tools():
        say("devkit.realnode: cannot run here; nothing was started:")
        for problem in problems:
            say(f"  - {problem}")
        return 3
    started = time.monotonic()
    # Everything that needs the network (Go module proxy) happens here, before the namespace.
    binaries = toolchain.ensure_realnode(log=say)
    toolchain.ensure("kubectl", log=say)
    toolchain.ensure("helm", log=say)
    archives = {**images.node_archives(binaries, log=say), **product_archives()}
    if args.archives_from:
        # `python -m devkit.images build` prints `<reference> <archive>` per image it built.
        for line in args.archives_from.read_text().splitlines():
            if len(parts := line.split()) == 2:
                archives[parts[0]] = Path(parts[1])
    for given in args.archive:
        ref, _, path = given.partition("=")
        if not Path(path).is_file():
            say(f"devkit.realnode: --archive {given}: no such file")
            return 2
        archives[ref] = Path(path).resolve()
    operator = f"{os.environ.get('IMAGE_REPO', 'ghcr.io/docrelay')}/docrelay:" + os.environ.get(
        "IMAGE_TAG", "0.1.0"
    )
    if operator not in archives and not args.without_images:
        say(f"devkit.realnode: no up-to-date archive of {operator} (make images builds it, "
            "or give one with --archive; --without-images runs without); nothing was started")
        return 3
    if not args.without_images:
        for ref in missing_runner_images(archives):
            say(f"[realnode] no archive of {ref} (make images builds it): runs of its "
                "runtime cannot start on this node")
    say(f"[realnode] binaries and images ready in {time.monotonic() - started:.0f}s")
    state = Path(tempfile.mkdtemp(prefix="docrelay-realnode-"))
    (state / "archives.json").write_text(json.dumps({k: str(v) for k, v in archives.items()}))
    argv = [
        "unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child",
        "--propagation", "private",
        sys.executable, "-m", "devkit.realnode", "run",
        "--logs", str(args.logs), "--", *args.command,
    ]
    try:
        env = {**os.environ, INSIDE: str(state)}
        code = subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        code = 130
    # The namespace's processes die with its PID 1, but the kernel may take a moment to
    # empty their cgroups: try again for a few seconds.
    cgroup = node.cgroup_name(state / "node")
    for _ in range(40):
        if not node.remove_cgroups(cgroup):
            break
        time.sleep(0.5)
    else:
        say(f"[realnode] some cgroups under {cgroup} are still in use; left in place")
    if args.keep_state:
        say(f"[realnode] state kept in {state}")
    else:
        shutil.rmtree(state, ignore_errors=True)
    say(f"[realnode] torn down; {time.monotonic() - started:.0f}s in all")
    return code


def inside(args: argparse.Namespace, state: Path) -> int:
    archives = {k: Path(v) for k, v in json.loads((state / "archives.json").read_text()).items()}
    cluster = Cluster(state / "cluster", with_node=False, advertise_address=node.NODE_IP)
    real = node.RealNode(state / "node", cluster)
    code = 1
    try:
        real.prepare()
        cluster.start(log=say, timeout=120)
        real.start(log=say, archives=archives)
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "DOCRELAY_E2E_CONTEXT": kubeconfig.CONTEXT,
            "DOCRELAY_E2E_NODE": "realnode",
            "PATH": os.pathsep.join([str(toolchain.bin_dir()), os.environ.get("PATH", "")]),
        }
        env.pop(INSIDE, None)
        say(f"[realnode] running: {' '.join(args.command)}")
        code = subprocess.call(args.command, env=env)
        if code != 0:
            logs = args.logs.resolve()
            namespaces = _namespaces(cluster.kubeconfig)
            node.dump(cluster.kubeconfig, logs, namespaces)
            node.copy_logs(cluster.log_dir, real.state_dir, logs)
            say(f"[realnode] COMMAND failed (exit {code}): logs are in {logs}")
    except Exception as exc:
        say(f"[realnode] {type(exc).__name__}: {exc}")
        node.copy_logs(cluster.log_dir, real.state_dir, args.logs.resolve())
        say(f"[realnode] component logs are in {args.logs.resolve()}")
        code = 1
    finally:
        real.stop()
        cluster.stop()
    return code


def _namespaces(kubeconfig_path: Path) -> list[str]:
    out = subprocess.run(
        [str(toolchain.ensure("kubectl")), f"--kubeconfig={kubeconfig_path}", "get", "ns",
         "-o", "jsonpath={.items[*].metadata.name}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    return [n for n in out if n not in SYSTEM_NAMESPACES] + ["kube-system"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.realnode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command_name", required=True)
    p = sub.add_parser("run", help="start the control plane and a real node, run COMMAND")
    p.add_argument("--logs", type=Path, default=Path("e2e-logs"),
                   help="where a failing COMMAND's logs go (default ./e2e-logs)")
    p.add_argument("--keep-state", action="store_true",
                   help="keep the state directory (etcd data, PKI, container layers)")
    p.add_argument("--archive", action="append", default=[], metavar="REF=TAR",
                   help="also import this image archive as REF (repeatable; wins over "
                   "make images' archive of the same name)")
    p.add_argument("--archives-from", type=Path, metavar="FILE",
                   help="import the archives `python -m devkit.images build` printed "
                   "(one `<reference> <archive>` a line); they win over the newest up-to-date ones")
    p.add_argument("--without-images", action="store_true",
                   help="start even when make images' operator image is missing")
    p.add_argument("command", nargs="+", help="what to run against the cluster")
    args = parser.parse_args(argv)
    if state := os.environ.get(INSIDE):
        return inside(args, Path(state))
    return outside(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
