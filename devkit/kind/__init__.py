"""kind's node image, made on this machine from the toolchain's binaries and Debian's packages.

No image registry is reachable here, so nothing kind would download can be downloaded: its base
image (``kindest/base``), the node image (``kindest/node``) and the images a node image carries
(etcd, CoreDNS, pause, kindnetd, the storage provisioner). This module makes each of them:

1. **The base image** (``docrelay.dev/kind-base``): kind v0.33.0's ``images/base`` recipe
   re-done without Docker's build: a Debian root file system by ``debootstrap`` with the
   packages kind's Dockerfile installs, kind's own files from ``images/base/files`` (read from
   the kind module in the Go module cache), the steps of its ``RUN`` lines, and containerd 2,
   runc and crictl from the toolchain (``devkit/toolchain``) instead of kind's downloads;
   ``docker import`` with kind's ``ENV``, ``STOPSIGNAL`` and ``ENTRYPOINT``.
2. **The image archives**: kube-apiserver, kube-controller-manager, kube-scheduler and
   kube-proxy (the toolchain's v1.36.3 binaries), and the images kind would pull, named as
   kind and kubeadm ask for them: etcd and CoreDNS (the toolchain's), pause (compiled from
   Kubernetes' ``build/pause/linux/pause.c``), kindnetd (``modules/kindnetd``) and the
   local-path provisioner and its helper. ``kube-proxy.tar`` carries the extra ones, so
   ``kind build node-image`` counts them as built and imports them instead of pulling.
3. **A server tarball** (``kubernetes-server-linux-amd64.tar.gz``) in the layout of a
   Kubernetes release: ``kubernetes/version`` and ``kubernetes/server/bin`` with kubeadm,
   kubelet, kubectl and the four archives.
4. **The node image** (``docrelay.dev/kind-node:v1.36.3-<digest>``) by kind itself:
   ``kind build node-image --type file <tarball> --base-image <base>``.

Every product is cached by content: an image's tag ends in a digest of everything that went
into it, so a second run with the same inputs builds nothing. Images live in the container
engine (``devkit.engine``); files under ``<docrelay cache>/kind``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from devkit import toolchain
from devkit.toolchain import COMPONENTS, Component, cache_root

HERE = Path(__file__).resolve().parent
MODULES = HERE / "modules"
SUITE = "bookworm"
MIRROR = os.environ.get("DOCRELAY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Bump when a recipe below changes in a way its inputs' digests do not show.
RECIPE = "1"

# kind's images/base Dockerfile installs these (one line each there); nfs-common and
# open-iscsi (network storage for Kubernetes' own storage e2e tests) are left out, and
# containernetworking-plugins stands in for kind's CNI plugin download.
BASE_PACKAGES = (
    "systemd",
    "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux", "mount", "kmod",
    "libseccomp2", "pigz", "fuse-overlayfs",
    "e2fsprogs",
    "bash", "ca-certificates", "curl", "jq", "procps",
    "containernetworking-plugins",
)
# kube-proxy and kindnetd (upstream: distroless-iptables) and the storage helper (a shell).
NETBASE_PACKAGES = ("iptables", "nftables", "conntrack", "ipset", "kmod", "iproute2")
CNI_PLUGINS = ("host-local", "loopback", "ptp", "portmap")  # what kind's base image carries
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Log = Callable[[str], None]


class KindImageError(RuntimeError):
    """A part of the node image could not be made; the message says which and why."""


def _say(log: Log | None, message: str) -> None:
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(f"[kind-image] {message}")


def work_dir() -> Path:
    return cache_root() / "kind"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- Go builds owned by this module (same shape and cache as devkit/toolchain) -------------


@dataclass(frozen=True)
class _KindComponent(Component):
    """A build module under devkit/kind/modules instead of devkit/toolchain."""

    fixed_version: str = ""  # for kindnetd, whose go.mod is the program's own

    @property
    def module_dir(self) -> Path:
        return MODULES / self.name

    @property
    def version(self) -> str:
        return self.fixed_version or super().version

    @property
    def pins_digest(self) -> str:  # kindnetd's sources are under cmd/
        digest = hashlib.sha256()
        for path in sorted([self.module_dir / "go.mod", self.module_dir / "go.sum",
                            *self.module_dir.rglob("*.go")]):
            digest.update(path.read_bytes())
        return digest.hexdigest()[:12]


KIND_COMPONENTS = {
    c.name: c
    for c in (
        _KindComponent(
            name="crictl",
            pinned_module="sigs.k8s.io/cri-tools",
            binaries={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
            ldflags=lambda v: [f"-X sigs.k8s.io/cri-tools/pkg/version.Version={v}"],
        ),
        _KindComponent(
            name="local-path-provisioner",
            pinned_module="github.com/rancher/local-path-provisioner",
            binaries={"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
            ldflags=lambda v: [f"-X main.VERSION={v}"],
        ),
        _KindComponent(
            name="kubeadm",
            pinned_module="k8s.io/kubernetes",
            binaries={"kubeadm": "k8s.io/kubernetes/cmd/kubeadm"},
            ldflags=toolchain._kubernetes_ldflags,
        ),
        _KindComponent(
            name="coredns",
            pinned_module="github.com/coredns/coredns",
            binaries={"coredns": "docrelay.dev/kind/coredns"},  # main.go: kubeadm's plugins
            ldflags=lambda v: [],
        ),
        _KindComponent(
            name="kindnetd",
            pinned_module="sigs.k8s.io/kind/images/kindnetd",
            binaries={"kindnetd": "./cmd/kindnetd"},
            ldflags=lambda v: [],
            fixed_version="619609ae",  # modules/kindnetd/README.md
        ),
    )
}


def _build_component(component: Component, binary: str, log: Log | None) -> Path:
    path = component.cache_dir / "bin" / binary
    if not os.access(path, os.X_OK):
        toolchain.build(component, log=lambda m: _say(log, m))
    return path


def _kubeadm(log: Log | None) -> Path:
    return _build_component(KIND_COMPONENTS["kubeadm"], "kubeadm", log)


def _pause(log: Log | None) -> Path:
    """The pause binary, compiled (static) from Kubernetes' own pause.c at the pinned version."""
    component = COMPONENTS["kubernetes"]
    source = _module_dir("k8s.io/kubernetes", component) / "build" / "pause" / "linux" / "pause.c"
    out = cache_root() / "toolchain" / f"pause-{component.version}-{_file_digest(source)[:12]}"
    path = out / "bin" / "pause"
    if os.access(path, os.X_OK):
        return path
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise KindImageError("no C compiler (cc) for pause.c: apt-get install gcc libc6-dev")
    (out / "bin").mkdir(parents=True, exist_ok=True)
    version = f'"{component.version} (kubernetes build/pause/linux/pause.c)"'
    proc = subprocess.run(
        [cc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION={version}", "-o", str(path),
         str(source)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise KindImageError(f"compiling pause.c failed:\n{proc.stderr[-2000:]}")
    _say(log, f"pause compiled from {source.name} -> {path}")
    return path


def _module_dir(module: str, component: Component) -> Path:
    """Where the Go module cache holds ``module`` at the version ``component`` pins."""
    version = _required_version(component, module)
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=component.module_dir, env=toolchain._go_env(), capture_output=True, text=True,
        check=False,
    )
    info = json.loads(proc.stdout or "{}")
    if proc.returncode != 0 or not info.get("Dir"):
        why = info.get("Error", proc.stderr)
        raise KindImageError(f"go mod download {module}@{version}: {why}")
    return Path(info["Dir"])


def _required_version(component: Component, module: str) -> str:
    text = (component.module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise KindImageError(f"{component.module_dir}/go.mod does not require {module}")
    return match.group(1)


def kind_source() -> Path:
    """kind's own module (images/base/files, the node-image constants), from the module cache."""
    return _module_dir("sigs.k8s.io/kind", COMPONENTS["kind"])


def _kind_constant(name: str) -> str:
    """A string constant of kind's node-image build (the kindnetd and storage image names)."""
    for path in (kind_source() / "pkg" / "build" / "nodeimage").glob("*.go"):
        if match := re.search(rf'^const {name}\s*=\s*"([^"]+)"', path.read_text(), re.M):
            return match.group(1)
    raise KindImageError(f"kind's pkg/build/nodeimage defines no {name}")


# -- the container engine -----------------------------------------------------------------


def docker_env() -> dict[str, str]:
    """The engine DOCKER_HOST names, else devkit.engine's (started when needed)."""
    if os.environ.get("DOCKER_HOST"):
        return dict(os.environ) | {"DOCKER_BUILDKIT": "0"}
    from devkit import engine

    return engine.docker_env()


def _docker(*args: str, input: bytes | None = None, stdin: int | None = None) -> str:
    proc = subprocess.run(
        ["docker", *args], env=docker_env(), input=input, stdin=stdin,
        capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise KindImageError(f"docker {' '.join(args[:2])} failed: {proc.stderr.decode()[-2000:]}")
    return proc.stdout.decode().strip()


def _image_exists(tag: str) -> bool:
    proc = subprocess.run(
        ["docker", "image", "inspect", tag], env=docker_env(), capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def _import(tar_path: Path, tag: str, changes: Iterable[str]) -> None:
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    with tar_path.open("rb") as f:
        _docker(*args, "-", tag, stdin=f.fileno())


# -- root file systems --------------------------------------------------------------------


def _rootfs(name: str, packages: tuple[str, ...], log: Log | None) -> Path:
    """A Debian root file system (debootstrap minbase + packages), cached by its package list."""
    key = _digest(SUITE, MIRROR, *packages)
    target = work_dir() / f"rootfs-{name}-{SUITE}-{key}"
    if (target / ".complete").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise KindImageError("debootstrap is missing: apt-get install debootstrap")
    _say(log, f"debootstrap {SUITE} for {name} ({len(packages)} packages; about a minute)")
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
         str(partial), MIRROR],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise KindImageError(f"debootstrap failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    # Package caches and lists are not part of an image.
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (partial / sub).glob("*"):
            if entry.is_file():
                entry.unlink()
    (partial / ".complete").touch()
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    _say(log, f"{name} root file system in {time.monotonic() - started:.0f}s")
    return target


def _tar_dir(root: Path, out: Path) -> None:
    """A tar of a root file system as docker import wants it (numeric owners, no .complete)."""
    proc = subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "--exclude=./.complete",
         "-cf", str(out), "."],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise KindImageError(f"tar of {root} failed: {proc.stderr[-1000:]}")


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    work_dir().mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="build.", dir=work_dir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _copy_tree(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)


# -- 1. the base image --------------------------------------------------------------------


def _base_binaries(log: Log | None) -> dict[str, Path]:
    """Where each binary kind's base image builds itself comes from here (node path -> file)."""
    paths = {
        "/usr/local/bin/containerd": toolchain.ensure("containerd", log=lambda m: _say(log, m)),
        "/usr/local/bin/ctr": toolchain.ensure("ctr", log=lambda m: _say(log, m)),
        "/usr/local/bin/containerd-shim-runc-v2": toolchain.ensure(
            "containerd-shim-runc-v2", log=lambda m: _say(log, m)
        ),
        "/usr/local/sbin/runc": toolchain.ensure("runc", log=lambda m: _say(log, m)),
        "/usr/local/bin/crictl": _build_component(KIND_COMPONENTS["crictl"], "crictl", log),
    }
    return paths


def base_image(log: Log | None = None) -> str:
    """kind's base image, re-made from Debian packages and the toolchain; returns its tag."""
    files = kind_source() / "images" / "base" / "files"
    binaries = _base_binaries(log)
    rootfs = _rootfs("kind-base", BASE_PACKAGES, log)
    inputs = [RECIPE, rootfs.name, *sorted(f"{k}={_file_digest(v)}" for k, v in binaries.items())]
    for path in sorted(files.rglob("*")):
        if path.is_file():
            inputs.append(f"{path.relative_to(files)}={_file_digest(path)}")
    tag = f"docrelay.dev/kind-base:{COMPONENTS['kind'].version}-{_digest(*inputs)}"
    if _image_exists(tag):
        return tag
    started = time.monotonic()
    _say(log, f"making {tag} (kind's images/base recipe, from Debian packages)")
    with _scratch() as scratch:
        root = scratch / "root"
        root.mkdir()
        _copy_tree(rootfs, root)
        _install_kind_files(files, root)
        _base_run_steps(root)
        for node_path, source in binaries.items():
            dest = root / node_path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            dest.chmod(0o755)
        _install_cni_plugins(root)
        _write_cri_base_spec(root, binaries["/usr/local/bin/ctr"])
        tar = scratch / "rootfs.tar"
        _tar_dir(root, tar)
        imported = f"{tag}-import"
        _import(tar, imported, [])
        # docker import refuses STOPSIGNAL; a build with only metadata lines adds no layer.
        dockerfile = (
            f"FROM {imported}\n"
            "ENV container=docker\n"
            "STOPSIGNAL SIGRTMIN+3\n"
            'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]\n'
            f"LABEL dev.docrelay.recipe=kind-{COMPONENTS['kind'].version}-images-base\n"
        )
        _docker("build", "-q", "-t", tag, "-", input=dockerfile.encode())
        _docker("rmi", imported)
    _say(log, f"{tag} made in {time.monotonic() - started:.0f}s")
    return tag


def _install_kind_files(files: Path, root: Path) -> None:
    """The COPY lines of kind's Dockerfile: scripts 0755, everything else 0644."""
    for src in files.rglob("*"):
        rel = src.relative_to(files)
        dest = root / rel
        if src.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            dest.chmod(0o755)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        executable = rel.parts[:3] == ("usr", "local", "bin") or rel.parts[:2] == ("kind", "bin")
        dest.chmod(0o755 if executable else 0o644)


def _chroot(root: Path, script: str) -> None:
    proc = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-euc", script], capture_output=True, text=True,
        check=False, env={"PATH": PATH_ENV.split("=", 1)[1], "LANG": "C"},
    )
    if proc.returncode != 0:
        raise KindImageError(f"in the base root file system, {script!r} failed: {proc.stderr}")


def _base_run_steps(root: Path) -> None:
    """The RUN lines of kind's Dockerfile after clean-install (the packages came with
    debootstrap)."""
    _chroot(root, """
        find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
        rm -f /lib/systemd/system/multi-user.target.wants/*
        rm -f /etc/systemd/system/*.wants/*
        rm -f /lib/systemd/system/local-fs.target.wants/*
        rm -f /lib/systemd/system/sockets.target.wants/*udev*
        rm -f /lib/systemd/system/sockets.target.wants/*initctl*
        rm -f /lib/systemd/system/basic.target.wants/*
        echo ReadKMsg=no >> /etc/systemd/journald.conf
        ln -sf /usr/lib/systemd/systemd /sbin/init
        systemctl enable kubelet.service containerd.service undo-mount-hacks.service
        systemctl mask systemd-binfmt.service
        mkdir -p /etc/kubernetes/manifests
        """)


def _install_cni_plugins(root: Path) -> None:
    """kind's four CNI plugins, from Debian's containernetworking-plugins, into /opt/cni/bin."""
    source = root / "usr" / "lib" / "cni"
    dest = root / "opt" / "cni" / "bin"
    dest.mkdir(parents=True, exist_ok=True)
    for plugin in CNI_PLUGINS:
        shutil.copy2(source / plugin, dest / plugin)
    shutil.rmtree(source)  # the other plugins are not in kind's image either


def _write_cri_base_spec(root: Path, ctr: Path) -> None:
    """/etc/containerd/cri-base.json as kind's Dockerfile makes it: ``ctr oci spec`` with kind's
    createContainer hook and without rlimits."""
    spec = json.loads(subprocess.run([str(ctr), "oci", "spec"], capture_output=True,
                                     check=True).stdout)
    hooks = spec.setdefault("hooks", {}).setdefault("createContainer", [])
    hooks.append({"path": "/kind/bin/mount-product-files.sh"})
    spec.get("process", {}).pop("rlimits", None)
    (root / "etc" / "containerd" / "cri-base.json").write_text(json.dumps(spec, indent=4))


# -- 2. the images ------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image for the node: its name as kind/kubeadm ask for it, and what is inside."""

    name: str
    files: dict[str, Path]  # path in the image -> file on this machine
    entrypoint: list[str]
    base: str = ""  # "" = only the files (static binaries); "netbase" = Debian + iptables
    note: str = ""  # what is inside when the name's version differs

    def recipe(self) -> list[str]:
        return [
            self.name, self.base, json.dumps(self.entrypoint),
            *sorted(f"{k}={_file_digest(v)}" for k, v in self.files.items()),
        ]


def kubeadm_images(kubeadm: Path, version: str) -> dict[str, str]:
    """The images kubeadm asks for (component -> name), from ``kubeadm config images list``."""
    out = subprocess.run(
        [str(kubeadm), "config", "images", "list", "--kubernetes-version", version],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    named = {}
    for name in out:
        base = name.rsplit("/", 1)[-1].split(":", 1)[0]
        named[base] = name
    return named


def _sandbox_image() -> str:
    config = (kind_source() / "images" / "base" / "files" / "etc" / "containerd" / "config.toml")
    match = re.search(r'sandbox_image\s*=\s*"([^"]+)"', config.read_text())
    if not match:
        raise KindImageError("kind's containerd config names no sandbox_image")
    return match.group(1)


def images(log: Log | None = None) -> tuple[list[Image], list[Image]]:
    """The four images a Kubernetes server tarball carries, and those kind would pull."""
    say = lambda m: _say(log, m)  # noqa: E731
    version = COMPONENTS["kubernetes"].version
    kubeadm = _kubeadm(log)
    wanted = kubeadm_images(kubeadm, version)
    tb = "/usr/local/bin/"
    kube = [
        Image(f"registry.k8s.io/{b}:{version}", {tb + b: toolchain.ensure(b, log=say)}, [tb + b])
        for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ]
    kube.append(Image(
        f"registry.k8s.io/kube-proxy:{version}",
        {tb + "kube-proxy": toolchain.ensure("kube-proxy", log=say)},
        [tb + "kube-proxy"], base="netbase",
    ))
    etcd_version = COMPONENTS["etcd"].version
    coredns = KIND_COMPONENTS["coredns"]
    helper = _kind_constant("storageHelperImage")
    extra = [
        Image(wanted["etcd"], {tb + "etcd": toolchain.ensure("etcd", log=say),
                               tb + "etcdctl": toolchain.ensure("etcdctl", log=say)},
              [tb + "etcd"], note=f"etcd {etcd_version} (the toolchain's)"),
        Image(wanted["coredns"], {"/coredns": _build_component(coredns, "coredns", log)},
              ["/coredns"], note=f"CoreDNS {coredns.version} with kubeadm's Corefile plugins"),
        Image(_sandbox_image(), {"/pause": _pause(log)}, ["/pause"],
              note=f"pause.c of Kubernetes {version}"),
        Image(_kind_constant("kindnetdImage"),
              {"/bin/kindnetd": _build_component(KIND_COMPONENTS["kindnetd"], "kindnetd", log)},
              ["/bin/kindnetd"], base="netbase", note="kindnetd of kind commit 619609ae"),
        Image(_kind_constant("storageProvisionerImage"),
              {tb + "local-path-provisioner": _build_component(
                  KIND_COMPONENTS["local-path-provisioner"], "local-path-provisioner", log)},
              [tb + "local-path-provisioner"],
              note="local-path-provisioner "
              + KIND_COMPONENTS["local-path-provisioner"].version),
        # kind's helper image is sh, rm and mkdir on distroless; Debian's minbase has them.
        Image(helper, {}, ["/bin/sh"], base="netbase"),
        # Not pulled by kind: the NetworkPolicy enforcer where kindnetd's cannot run
        # (kube_router_manifests).
        Image(kube_router_image(), {tb + "kube-router": toolchain.ensure("kube-router", log=say)},
              [tb + "kube-router"], base="netbase"),
    ]
    return kube, extra


def kube_router_image() -> str:
    return f"docrelay.dev/kube-router:{COMPONENTS['kube-router'].version}"


def nft_queue_missing() -> bool:
    """True where the kernel lacks nftables' ``queue`` expression (nft_queue): kindnetd's
    NetworkPolicy enforcer (kube-network-policies) sends packets to user space with it, and
    without it installs no rule at all ("netlink receive: no such file or directory")."""
    script = (
        "add table inet docrelay_probe\n"
        "add chain inet docrelay_probe c { type filter hook forward priority 0 ; }\n"
        "add rule inet docrelay_probe c queue num 100 bypass\n"
    )
    if not (shutil.which("nft") and shutil.which("unshare")):
        return False
    proc = subprocess.run(["unshare", "--net", "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, check=False)
    return proc.returncode != 0 and "No such file or directory" in proc.stderr


def kube_router_manifests(image: str, service_cidr: str = "10.96.0.0/16") -> list[dict]:
    """kube-router's NetworkPolicy controller alone (iptables and ipsets; no routing, no
    service proxy) as a DaemonSet, for kind clusters where kindnetd's enforcer cannot run."""
    name, namespace = "kube-router", "kube-system"
    labels = {"k8s-app": name}
    read = ["get", "list", "watch"]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [
             {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes",
                                               "endpoints"], "verbs": read},
             {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
              "verbs": read},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": name, "namespace": namespace, "labels": labels},
         "spec": {
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "serviceAccountName": name,
                     "hostNetwork": True,
                     "priorityClassName": "system-node-critical",
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{
                         "name": name,
                         "image": image,
                         "imagePullPolicy": "Never",
                         "args": [
                             "--run-firewall=true", "--run-router=false",
                             "--run-service-proxy=false", "--enable-ipv4=true",
                             "--enable-ipv6=false",
                             f"--service-cluster-ip-range={service_cidr}",
                             "--hostname-override=$(NODE_NAME)",
                             "--metrics-port=0", "--health-port=20244", "--v=1",
                         ],
                         "env": [{"name": "NODE_NAME", "valueFrom": {
                             "fieldRef": {"fieldPath": "spec.nodeName"}}}],
                         "securityContext": {"privileged": True},
                         "volumeMounts": [
                             {"name": "lib-modules", "mountPath": "/lib/modules",
                              "readOnly": True},
                             {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                         ],
                     }],
                     "volumes": [
                         {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                         {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock",
                                                               "type": "FileOrCreate"}},
                     ],
                 },
             },
         }},
    ]


_PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
)
_GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"


def _files_tar(image: Image, out: Path) -> None:
    """A root file system of only the image's files (plus /etc/passwd, /etc/group, /tmp)."""
    with tarfile.open(out, "w") as tar:
        dirs: set[str] = set()

        def add_dir(path: str, mode: int = 0o755) -> None:
            if path in dirs or path in ("", "."):
                return
            add_dir(os.path.dirname(path))
            info = tarfile.TarInfo(path)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
            dirs.add(path)

        add_dir("tmp", 0o1777)
        add_dir("etc")
        for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for inside, source in sorted(image.files.items()):
            rel = inside.lstrip("/")
            add_dir(os.path.dirname(rel))
            info = tar.gettarinfo(str(source), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o755
            with source.open("rb") as f:
                tar.addfile(info, f)


def _make_image(image: Image, netbase: Path, scratch: Path, tag_digest: str) -> None:
    """Create ``image.name`` in the engine unless an image of the same recipe is there."""
    label = f"dev.docrelay.recipe={tag_digest}"
    with contextlib.suppress(KindImageError):
        if _docker("image", "inspect", "-f", "{{index .Config.Labels \"dev.docrelay.recipe\"}}",
                   image.name) == tag_digest:
            return
    changes = [f"ENV {PATH_ENV}", f"ENTRYPOINT {json.dumps(image.entrypoint)}", f"LABEL {label}"]
    if image.note:
        changes.append(f"LABEL dev.docrelay.contents={json.dumps(image.note)}")
    tar = scratch / "image.tar"
    if image.base == "netbase":
        root = scratch / "root"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        _copy_tree(netbase, root)
        for inside, source in image.files.items():
            dest = root / inside.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest)
            dest.chmod(0o755)
        _tar_dir(root, tar)
        shutil.rmtree(root)
    else:
        _files_tar(image, tar)
    _import(tar, image.name, changes)
    tar.unlink()


def _save(names: list[str], out: Path) -> None:
    """``docker save`` the images into one archive whose tags are fully qualified: kind
    compares them with the names it would pull (``docker.io/kindest/...``), and docker writes
    short names for Docker Hub's. ``repositories`` goes first: kind reads the tags of the
    first of ``repositories`` (every image's) and ``manifest.json`` (only the first image's)."""
    raw = out.with_suffix(".raw")
    _docker("save", "-o", str(raw), *names)
    requalify(raw, out)
    raw.unlink()


def requalify(raw: Path, out: Path) -> None:
    """Copy a ``docker save`` archive with fully qualified tags and ``repositories`` first."""
    with tarfile.open(raw) as src, tarfile.open(out, "w") as dst:
        members = src.getmembers()
        members.sort(key=lambda m: m.name != "repositories")  # stable: the rest keep order
        for member in members:
            data = src.extractfile(member) if member.isfile() else None
            if member.name in ("manifest.json", "repositories") and data is not None:
                content = _qualify(member.name, json.loads(data.read()))
                member.size = len(content)
                dst.addfile(member, io.BytesIO(content))
            else:
                dst.addfile(member, data)


def _qualified(name: str) -> str:
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def _qualify(member: str, doc: object) -> bytes:
    if member == "manifest.json" and isinstance(doc, list):
        for entry in doc:
            entry["RepoTags"] = [_qualified(t) for t in entry.get("RepoTags") or []]
    elif member == "repositories" and isinstance(doc, dict):
        doc = {_qualified(repo): tags for repo, tags in doc.items()}
    return json.dumps(doc).encode()


# -- 3. the server tarball and 4. the node image ------------------------------------------


def node_image(log: Log | None = None) -> str:
    """The kind node image made here (built once per content); returns its tag."""
    started = time.monotonic()
    version = COMPONENTS["kubernetes"].version
    base = base_image(log)
    kube, extra = images(log)
    say = lambda m: _say(log, m)  # noqa: E731
    node_bins = {
        "kubeadm": _kubeadm(log),
        "kubelet": toolchain.ensure("kubelet", log=say),
        "kubectl": toolchain.ensure("kubectl", log=say),
    }
    netbase = _rootfs("netbase", NETBASE_PACKAGES, log)
    recipes = {image.name: _digest(RECIPE, netbase.name, *image.recipe())
               for image in (*kube, *extra)}
    inputs = [RECIPE, base, *sorted(f"{k}={_file_digest(v)}" for k, v in node_bins.items()),
              *sorted(f"{k}={v}" for k, v in recipes.items())]
    tag = f"docrelay.dev/kind-node:{version}-{_digest(*inputs)}"
    if _image_exists(tag):
        _say(log, f"{tag} is cached")
        return tag
    kind = toolchain.ensure("kind", log=say)
    with _scratch() as scratch:
        for image in (*kube, *extra):
            _say(log, f"image {image.name}" + (f" ({image.note})" if image.note else ""))
            _make_image(image, netbase, scratch, recipes[image.name])
        bindir = scratch / "kubernetes" / "server" / "bin"
        bindir.mkdir(parents=True)
        (scratch / "kubernetes" / "version").write_text(version + "\n")
        for name, path in node_bins.items():
            shutil.copy2(path, bindir / name)
        for image in kube:
            component = image.name.rsplit("/", 1)[-1].split(":", 1)[0]
            names = [image.name] + ([e.name for e in extra] if component == "kube-proxy" else [])
            _save(names, bindir / f"{component}.tar")
            (bindir / f"{component}.docker_tag").write_text(version + "\n")
        tarball = scratch / "kubernetes-server-linux-amd64.tar.gz"
        _say(log, f"server tarball {tarball.name}")
        with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
            tar.add(scratch / "kubernetes", arcname="kubernetes")
        _say(log, f"kind build node-image --type file ... --image {tag}")
        proc = subprocess.run(
            [str(kind), "build", "node-image", "--type", "file", str(tarball),
             "--base-image", base, "--image", tag],
            env=docker_env() | {"TMPDIR": str(scratch)}, capture_output=True,
            text=True, check=False,
        )
        if proc.returncode != 0 or not _image_exists(tag):
            raise KindImageError(
                f"kind build node-image failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
    _say(log, f"{tag} made in {time.monotonic() - started:.0f}s")
    return tag


__all__ = [
    "KindImageError",
    "base_image",
    "images",
    "kind_source",
    "node_image",
]
