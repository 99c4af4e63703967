"""The two images the node needs for itself, made here without a registry or an engine.

- the pause image: Kubernetes' own ``build/pause/linux/pause.c`` from the pinned
  ``k8s.io/kubernetes`` module (already in the Go module cache for the kubelet's build),
  compiled statically with gcc;
- CoreDNS: the static binary the toolchain built, alone in its image.

Both are OCI archives (``devkit.realnode.oci``) cached by content under the toolchain's cache.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from devkit import toolchain
from devkit.realnode import oci

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
COREDNS_IMAGE = "docrelay.local/coredns:{version}"


def _pause_source() -> Path:
    component = toolchain.COMPONENTS["kubenode"]
    env = toolchain._go_env()
    info = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{component.version}"],
        cwd=component.module_dir, env=env, capture_output=True, text=True, check=True,
    ).stdout
    return Path(json.loads(info)["Dir"]) / "build" / "pause" / "linux" / "pause.c"


def _cached(name: str, digest: str) -> Path:
    return toolchain.cache_root() / "realnode-images" / f"{name}-{digest[:12]}.tar"


def pause_archive(log: Callable[[str], None]) -> Path:
    source = _pause_source()
    text = source.read_bytes()
    target = _cached("pause", hashlib.sha256(text).hexdigest())
    if target.exists():
        return target
    log(f"[realnode] compiling the pause image from {source.name}")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "pause"
        subprocess.run(
            ["gcc", "-Os", "-static", "-Wall", "-DVERSION=docrelay", "-o", str(binary),
             str(source)],
            check=True, capture_output=True,
        )
        subprocess.run(["strip", str(binary)], check=False)
        return oci.write_archive(
            target, name=PAUSE_IMAGE, files=[oci.File("pause", binary.read_bytes())],
            entrypoint=["/pause"], user="65535:65535",
        )


def coredns_image() -> str:
    return COREDNS_IMAGE.format(version=toolchain.COMPONENTS["coredns"].version)


def coredns_archive(binary: Path, log: Callable[[str], None]) -> Path:
    data = binary.read_bytes()
    target = _cached("coredns", hashlib.sha256(data).hexdigest())
    if target.exists():
        return target
    log("[realnode] writing the CoreDNS image")
    return oci.write_archive(
        target, name=coredns_image(), files=[oci.File("coredns", data)],
        entrypoint=["/coredns"],
    )


def node_archives(binaries: dict[str, Path], log: Callable[[str], None]) -> dict[str, Path]:
    """Image name -> archive, for the node's own images."""
    return {
        PAUSE_IMAGE: pause_archive(log),
        coredns_image(): coredns_archive(binaries["coredns"], log),
    }


def archive_names(path: Path) -> list[str]:
    """The image names an archive carries: docker-save's RepoTags or OCI's annotations."""
    with tarfile.open(path) as tar:
        names = tar.getnames()
        if "manifest.json" in names:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            return [tag for entry in manifest for tag in entry.get("RepoTags") or []]
        if "index.json" in names:
            index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            return [
                m["annotations"]["io.containerd.image.name"]
                for m in index.get("manifests", [])
                if "io.containerd.image.name" in (m.get("annotations") or {})
            ]
    return []
