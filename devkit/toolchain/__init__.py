"""The control plane's binaries: found by environment variable, in the cache, or built.

Each component is a throwaway Go module in this folder whose committed ``go.mod`` and
``go.sum`` pin every dependency, so a build on a new machine is checked against the same
hashes. Binaries land in a cache outside the repository keyed by the pinned version and a
hash of ``go.sum``; a second build of the same pins is a cache hit and costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


class ToolchainError(RuntimeError):
    """A binary could not be found or built; the message says what to do."""


def _kubernetes_ldflags(version: str) -> list[str]:
    # Without these, /version and `kubectl version` report v0.0.0-master.
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return flags


def _helm_ldflags(version: str) -> list[str]:
    return [f"-X helm.sh/helm/v4/internal/version.version={version}"]


def _no_ldflags(version: str) -> list[str]:
    return []


def _containerd_ldflags(version: str) -> list[str]:
    pkg = "github.com/containerd/containerd/v2/version"
    return [f"-X {pkg}.Version={version}", f"-X {pkg}.Package=github.com/containerd/containerd/v2"]


def _runc_ldflags(version: str) -> list[str]:
    return [f"-X main.version={version.lstrip('v')}"]


def _kube_router_ldflags(version: str) -> list[str]:
    return [f"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={version}"]


@dataclass(frozen=True)
class Component:
    """One Go build module and the binaries it produces."""

    name: str
    pinned_module: str  # the module whose version in go.mod names this build
    binaries: dict[str, str]  # binary name -> Go package to build
    ldflags: Callable[[str], list[str]]
    cgo: bool = False  # runc links libseccomp (Debian's libseccomp-dev)
    tags: tuple[str, ...] = ()

    @property
    def module_dir(self) -> Path:
        return HERE / self.name

    @property
    def version(self) -> str:
        text = (self.module_dir / "go.mod").read_text()
        pattern = rf"^\s*(?:require\s+)?{re.escape(self.pinned_module)}\s+(v\S+)"
        match = re.search(pattern, text, re.M)
        if not match:
            raise ToolchainError(f"{self.module_dir}/go.mod does not require {self.pinned_module}")
        return match.group(1)

    @property
    def pins_digest(self) -> str:
        digest = hashlib.sha256()
        for name in ("go.mod", "go.sum"):
            digest.update((self.module_dir / name).read_bytes())
        for source in sorted(self.module_dir.glob("*.go")):  # a module's own main package
            digest.update(source.read_bytes())
        return digest.hexdigest()[:12]

    @property
    def cache_dir(self) -> Path:
        return cache_root() / "toolchain" / f"{self.name}-{self.version}-{self.pins_digest}"


COMPONENTS = {
    c.name: c
    for c in (
        Component(
            name="kubernetes",
            pinned_module="k8s.io/kubernetes",
            binaries={
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            ldflags=_kubernetes_ldflags,
        ),
        Component(
            name="etcd",
            pinned_module="go.etcd.io/etcd/server/v3",
            binaries={
                "etcd": "go.etcd.io/etcd/server/v3",
                "etcdctl": "go.etcd.io/etcd/etcdctl/v3",
            },
            ldflags=_no_ldflags,
        ),
        Component(
            name="helm",
            pinned_module="helm.sh/helm/v4",
            binaries={"helm": "helm.sh/helm/v4/cmd/helm"},
            ldflags=_helm_ldflags,
        ),
        Component(
            name="promtool",
            pinned_module="github.com/prometheus/prometheus",
            binaries={"promtool": "github.com/prometheus/prometheus/cmd/promtool"},
            ldflags=_no_ldflags,
        ),
        # The e2e tier's cluster tool (make e2e-kind; docs/development.md, "kind").
        Component(
            name="kind",
            pinned_module="sigs.k8s.io/kind",
            binaries={"kind": "sigs.k8s.io/kind"},
            ldflags=_no_ldflags,
        ),
        # The real node of `make e2e-node` (devkit.realnode); the control plane's binaries
        # above are built without them, so a machine that never runs that tier never builds them.
        Component(
            name="kubenode",
            pinned_module="k8s.io/kubernetes",
            binaries={
                "kubelet": "k8s.io/kubernetes/cmd/kubelet",
                "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
            },
            ldflags=_kubernetes_ldflags,
        ),
        Component(
            name="containerd",
            pinned_module="github.com/containerd/containerd/v2",
            binaries={
                "containerd": "github.com/containerd/containerd/v2/cmd/containerd",
                "ctr": "github.com/containerd/containerd/v2/cmd/ctr",
                "containerd-shim-runc-v2": (
                    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
                ),
            },
            ldflags=_containerd_ldflags,
            tags=("no_btrfs", "no_devmapper", "no_zfs"),
        ),
        Component(
            name="runc",
            pinned_module="github.com/opencontainers/runc",
            binaries={"runc": "github.com/opencontainers/runc"},
            ldflags=_runc_ldflags,
            cgo=True,
            tags=("seccomp", "urfave_cli_no_docs"),
        ),
        Component(
            name="coredns",
            pinned_module="github.com/coredns/coredns",
            # main.go in the module: only the plugins the real node uses.
            binaries={"coredns": "docrelay.dev/toolchain/coredns"},
            ldflags=_no_ldflags,
        ),
        Component(
            name="kube-router",
            pinned_module="github.com/cloudnativelabs/kube-router/v2",
            binaries={"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
            ldflags=_kube_router_ldflags,
        ),
    )
}

# Built only by the real-node tier (`make e2e-node`), never by `make toolchain`.
REALNODE_COMPONENTS = ("kubenode", "containerd", "runc", "coredns", "kube-router")

BINARY_COMPONENT = {binary: c for c in COMPONENTS.values() for binary in c.binaries}


def cache_root() -> Path:
    """Where built binaries live: outside the repository, shared by every checkout."""
    if explicit := os.environ.get("DOCRELAY_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "docrelay"


def env_var_for(binary: str) -> str:
    """``kube-apiserver`` -> ``DOCRELAY_KUBE_APISERVER``: an explicit path wins over all."""
    return "DOCRELAY_" + binary.upper().replace("-", "_")


def find(binary: str) -> Path | None:
    """A binary's path from its environment variable or the cache, without building."""
    if binary not in BINARY_COMPONENT:
        raise ToolchainError(f"unknown binary {binary!r}; known: {', '.join(BINARY_COMPONENT)}")
    if explicit := os.environ.get(env_var_for(binary)):
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise ToolchainError(f"{env_var_for(binary)}={explicit} is not an executable file")
        return path
    cached = BINARY_COMPONENT[binary].cache_dir / "bin" / binary
    return cached if os.access(cached, os.X_OK) else None


def ensure(binary: str, log: Callable[[str], None] | None = None) -> Path:
    """A binary's path, building its component first if it is neither given nor cached."""
    path = find(binary)
    if path is None:
        build(BINARY_COMPONENT[binary], log=log)
        path = find(binary)
        if path is None:  # pragma: no cover - build() raises on failure
            raise ToolchainError(f"{binary} missing after a successful build")
    return path


def ensure_all(log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Every binary but the real node's (`ensure_realnode` builds those)."""
    return {binary: ensure(binary, log=log) for binary in BINARY_COMPONENT
            if BINARY_COMPONENT[binary].name not in REALNODE_COMPONENTS}


def realnode_binaries() -> list[str]:
    """The real node's binaries: kubelet, kube-proxy, containerd, runc, CoreDNS, kube-router."""
    return [binary for name in REALNODE_COMPONENTS for binary in COMPONENTS[name].binaries]


def ensure_realnode(log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Build, one component at a time, whatever the real node lacks; returns every path."""
    return {binary: ensure(binary, log=log) for binary in realnode_binaries()}


def bin_dir() -> Path:
    """One directory with every binary in use, for PATH (the Makefile puts it first)."""
    return cache_root() / "bin"


def link_bin_dir(paths: dict[str, Path]) -> Path:
    """Point ``bin_dir()``'s entries at the binaries in use; returns the directory."""
    directory = bin_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for binary, path in paths.items():
        link = directory / binary
        temporary = directory / f".{binary}.new"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(path)
        temporary.replace(link)  # atomic: a running make never sees a missing kubectl
    return directory


def _go_env() -> dict[str, str]:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "the `go` command is not on PATH; install Go 1.26 or newer, or point the "
            "DOCRELAY_<BINARY> environment variables at prebuilt binaries"
        )
    env = dict(os.environ)
    env.update(
        GOWORK="off",
        CGO_ENABLED="0",
        # Never fetch another toolchain; never let a build rewrite the pinned go.mod/go.sum.
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=readonly -trimpath -buildvcs=false",
    )
    return env


def _say(log: Callable[[str], None] | None, message: str) -> None:
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def build(component: Component, log: Callable[[str], None] | None = None) -> Path:
    """Build a component into its cache directory, printing progress; returns the bin dir."""
    env = _go_env()
    if component.cgo:
        env["CGO_ENABLED"] = "1"
    tag_args = ["-tags", ",".join(component.tags)] if component.tags else []
    version = component.version
    started = time.monotonic()
    _say(log, f"[toolchain] building {component.name} {version} (one time; cached afterwards)")

    _say(log, f"[toolchain] {component.name}: downloading modules pinned in go.sum")
    _run(["go", "mod", "download"], component, env)

    packages = list(component.binaries.values())
    listed = _run(["go", "list", *tag_args, "-deps", *packages], component, env)
    total = len(listed.splitlines())

    final = component.cache_dir / "bin"
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="bin.partial.", dir=final.parent))
    try:
        compiled = 0
        for binary, package in component.binaries.items():
            cmd = ["go", "build", "-v", *tag_args, "-o", str(staging / binary)]
            if flags := component.ldflags(version):
                cmd += ["-ldflags", " ".join(["-s", "-w", *flags])]
            compiled = _build_with_progress(
                [*cmd, package], component, env, log, compiled, total, started
            )
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    elapsed = time.monotonic() - started
    _say(log, f"[toolchain] {component.name} {version} built in {elapsed:.0f}s -> {final}")
    return final


def _run(cmd: list[str], component: Component, env: dict[str, str]) -> str:
    proc = subprocess.run(
        cmd, cwd=component.module_dir, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ToolchainError(
            f"`{' '.join(cmd)}` failed in {component.module_dir} (exit {proc.returncode}):\n"
            + proc.stderr[-4000:]
        )
    return proc.stdout


def _build_with_progress(
    cmd: list[str],
    component: Component,
    env: dict[str, str],
    log: Callable[[str], None] | None,
    compiled: int,
    total: int,
    started: float,
) -> int:
    """Run `go build -v`, which names each package as it compiles it, and report counts."""
    proc = subprocess.Popen(
        cmd,
        cwd=component.module_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    count = [compiled]
    errors: list[str] = []
    done = threading.Event()

    def report() -> None:
        while not done.wait(15):
            elapsed = time.monotonic() - started
            _say(
                log,
                f"[toolchain] {component.name}: {count[0]}/{total} packages compiled "
                f"({elapsed / 60:.1f} min; cached packages are skipped)",
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    for line in proc.stderr:
        line = line.rstrip()
        # Package paths have no spaces; anything else is a compiler or go command message.
        if line and " " not in line and not line.startswith("#"):
            count[0] += 1
        else:
            errors.append(line)
    code = proc.wait()
    done.set()
    if code != 0:
        raise ToolchainError(
            f"`{' '.join(cmd)}` failed (exit {code}):\n" + "\n".join(errors[-60:])
        )
    return count[0]
