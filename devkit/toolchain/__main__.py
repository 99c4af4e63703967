"""python -m devkit.toolchain: build, locate or re-pin the control plane's binaries."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from devkit.toolchain import (
    BINARY_COMPONENT,
    COMPONENTS,
    REALNODE_COMPONENTS,
    ToolchainError,
    _go_env,
    ensure,
    env_var_for,
    find,
    link_bin_dir,
    realnode_binaries,
)


def _cmd_ensure(args: argparse.Namespace) -> int:
    default = [b for b, c in BINARY_COMPONENT.items() if c.name not in REALNODE_COMPONENTS]
    binaries = args.binaries or (realnode_binaries() if args.node else default)
    paths = {binary: ensure(binary) for binary in binaries}
    for binary, path in paths.items():
        print(f"{binary}: {path}")
    print(f"linked into {link_bin_dir(paths)} (first on the Makefile's PATH)")
    return 0


def _cmd_paths(args: argparse.Namespace) -> int:
    for binary, component in BINARY_COMPONENT.items():
        path = find(binary)
        where = str(path) if path else f"not built (cache: {component.cache_dir / 'bin'})"
        print(f"{binary:<24} {component.version:<10} {where}   [{env_var_for(binary)}]")
    return 0


def _cmd_pin_kubernetes(args: argparse.Namespace) -> int:
    """Write the kubernetes build module for VERSION (references.md §6 explains the replaces)."""
    version = args.version if args.version.startswith("v") else f"v{args.version}"
    component = COMPONENTS["kubernetes"]
    env = _go_env() | {"GOFLAGS": "-mod=mod"}
    module_dir = component.module_dir
    info = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        cwd=module_dir, env=env, capture_output=True, text=True, check=True,
    ).stdout
    gomod_path = re.search(r'"GoMod":\s*"([^"]+)"', info)
    if not gomod_path:
        raise ToolchainError(f"could not download k8s.io/kubernetes@{version}")
    upstream = Path(gomod_path.group(1)).read_text()
    # k8s.io/kubernetes replaces its staging modules with ./staging paths, which only work
    # inside its own repository; outside it, each must point at the published v0.X.Y.
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", upstream, re.M)
    go_line = re.search(r"^go\s+(\S+)", upstream, re.M)
    staging_version = "v0." + version.lstrip("v").split(".", 1)[1]
    lines = [
        "// Build module for the Kubernetes control plane used by docrelay's tests"
        " (not product code).",
        "// Regenerate with: python -m devkit.toolchain pin-kubernetes VERSION",
        "module docrelay.dev/toolchain/kubernetes",
        "",
        f"go {go_line.group(1) if go_line else '1.26.0'}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{m} => {m} {staging_version}" for m in staging],
        ")",
        "",
    ]
    (module_dir / "go.mod").write_text("\n".join(lines))
    (module_dir / "go.sum").unlink(missing_ok=True)
    tools = [f"{pkg}@{version}" for pkg in component.binaries.values()]
    subprocess.run(["go", "get", "-tool", *tools], cwd=module_dir, env=env, check=True)
    print(f"pinned kubernetes {version} with {len(staging)} staging modules; commit go.mod/go.sum")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.toolchain",
        description="Build (once, cached by version) or locate etcd, the Kubernetes control "
        "plane, kubectl and helm. An environment variable DOCRELAY_<BINARY> (for example "
        "DOCRELAY_KUBE_APISERVER) overrides the cache.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="build whatever is missing and print the paths")
    p.add_argument(
        "binaries", nargs="*", help="only these binaries (default: all but the real node's)"
    )
    p.add_argument(
        "--node", action="store_true",
        help="the real node's binaries instead (kubelet, kube-proxy, containerd, runc, "
        "CoreDNS, kube-router)",
    )
    p.set_defaults(func=_cmd_ensure)
    p = sub.add_parser("paths", help="print where each binary is, without building")
    p.set_defaults(func=_cmd_paths)
    p = sub.add_parser("pin-kubernetes", help="re-pin the kubernetes build module to VERSION")
    p.add_argument("version", help="a Kubernetes release, e.g. v1.36.3")
    p.set_defaults(func=_cmd_pin_kubernetes)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
