"""CPython builds that no Debian release ships (3.12), from python-build-standalone.

No Debian release ships Python 3.12 as its python3 (bookworm has 3.11, trixie 3.13), and here
no image registry holds the public ``python:3.12-slim-bookworm``. The Go module
``github.com/kluctl/go-embed-python`` carries python-build-standalone's CPython builds (the
builds uv installs; linux-amd64 is its ``x86_64-unknown-linux-gnu-pgo+lto-full`` build), and
the Go module proxy serves it. Its tree for one platform is
``python/internal/data/<os>-<arch>/``: ``files.json`` lists every file, directory and symbolic
link with its mode, and the binary files are gzip'ed one by one (``<name>.gz``). The module
leaves out what an embedded interpreter does not need: ``ensurepip``, ``idlelib``, ``lib2to3``,
``pydoc_data``, ``site-packages``, ``test``, ``turtledemo``, ``*.pyc`` and static libraries.

Each minor version is pinned to one module version, its ``go.sum`` hash (``h1:``) and its
zip's sha256. ``go mod download -json MODULE@VERSION`` fetches the zip through the Go module
proxy (``GOPROXY``) into Go's module cache, checked against Go's checksum database; it is
accepted only when both pins match. The tree is then unpacked (gunzip'ed, modes from
``files.json``: executable or not, writable by the owner only; ELF files stripped of their
debug information) once per pin into
``<cache>/toolchain/cpython-<version>-<release>-<platform>/``, outside the repository, and
checked to run and report the pinned version. Nothing is unpacked but that tree; the scripts
under ``bin/`` whose modules the module left out (pip, idle, 2to3, pydoc, python-config) are
dropped.

Used by ``devkit.images`` for the base of ``runner:3.12``. Newer 3.12 tags of the module
exist (``v0.0.0-3.12.8-20241219-1``), but the Go module proxy here answers 403 for every one
tried; 3.12.3 lacks later 3.12 security fixes (docs/development.md says so).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import posixpath
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devkit.filelock import file_lock
from devkit.toolchain import ToolchainError, _go_env, _say, cache_root

MODULE = "github.com/kluctl/go-embed-python"
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
# Go's fs.FileMode bits in files.json's "perm".
MODE_DIR = 1 << 31
MODE_SYMLINK = 1 << 27
# bin/ entries kept: the interpreter and its python/python3 links.
KEEP_BIN = ("python", "python3")


@dataclass(frozen=True)
class CPythonPin:
    """One CPython build: its version, python-build-standalone release and the module's pins."""

    version: str  # 3.12.3
    release: str  # python-build-standalone's release date, 20240415
    module_version: str  # the go-embed-python version carrying it
    go_sum: str  # the module zip's go.sum hash (h1:...)
    zip_sha256: str


PINS: dict[str, CPythonPin] = {
    "3.12": CPythonPin(
        version="3.12.3",
        release="20240415",
        module_version="v0.0.0-3.12.3-20240415-1",
        go_sum="h1:IX2O3LJUL0AjYsROGZ4aNENTEb3c/Ll/0b9Yb/8P61Q=",
        zip_sha256="cdf469d56ecf157cf920c8667ba235df787962409544bd8dfd6e96b7e77eca9e",
    ),
}


def minors() -> tuple[str, ...]:
    return tuple(PINS)


def pin(minor: str) -> CPythonPin:
    try:
        return PINS[minor]
    except KeyError:
        raise ToolchainError(
            f"no pinned standalone CPython {minor}; pinned: {', '.join(PINS)} "
            "(devkit/toolchain/cpython.py)"
        ) from None


def platform_dir(machine: str | None = None) -> str:
    """``linux-amd64`` on x86-64: the module's folder for this machine."""
    machine = (machine or platform.machine()).lower()
    if machine not in ARCHES:
        raise ToolchainError(f"no standalone CPython for this machine ({machine})")
    return f"linux-{ARCHES[machine]}"


def cache_dir(minor: str) -> Path:
    pinned = pin(minor)
    return (cache_root() / "toolchain"
            / f"cpython-{pinned.version}-{pinned.release}-{platform_dir()}")


def find(minor: str) -> Path | None:
    """The unpacked tree (``bin/python3`` under it) when cached, without fetching."""
    directory = cache_dir(minor)
    return directory if os.access(directory / "bin" / "python3", os.X_OK) else None


def ensure(minor: str, log: Callable[[str], None] | None = None) -> Path:
    """The unpacked tree of the pinned CPython ``minor``, fetched and checked when missing."""
    found = find(minor)
    if found is not None:
        return found
    final = cache_dir(minor)
    with file_lock(final.with_name(f".{final.name}.lock")):
        found = find(minor)
        if found is not None:
            return found
        return install(minor, log=log)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_download(answer: dict[str, Any], pinned: CPythonPin) -> Path:
    """The module zip ``go mod download -json`` answered with, once both pins match."""
    if answer.get("Error"):
        raise ToolchainError(f"go mod download {MODULE}@{pinned.module_version}: "
                             f"{answer['Error']}")
    if answer.get("Sum") != pinned.go_sum:
        raise ToolchainError(f"{MODULE}@{pinned.module_version}: go.sum hash "
                             f"{answer.get('Sum')!r}, not the pinned {pinned.go_sum}: refusing it")
    zip_path = Path(str(answer.get("Zip") or ""))
    if not zip_path.is_file():
        raise ToolchainError(f"go mod download named no module zip ({zip_path})")
    actual = sha256_of(zip_path)
    if actual != pinned.zip_sha256:
        raise ToolchainError(f"{zip_path.name}: sha256 {actual[:16]}..., not the pinned "
                             f"{pinned.zip_sha256[:16]}...: refusing it")
    return zip_path


def module_zip(pinned: CPythonPin, log: Callable[[str], None] | None = None) -> Path:
    """The module's zip from Go's module cache, downloaded through the Go module proxy first
    when missing (about 110 MB, once)."""
    env = _go_env()
    env["GOFLAGS"] = "-mod=mod"  # outside any module: nothing to keep read-only
    _say(log, f"[toolchain] go mod download {MODULE}@{pinned.module_version} "
              "(about 110 MB the first time; Go's module cache keeps it)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cpython-download-") as empty:
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{pinned.module_version}"],
            cwd=empty, env=env, capture_output=True, text=True, check=False,
        )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise ToolchainError(f"go mod download failed: {done.stderr.strip()[-1000:]}") from None
    zip_path = check_download(answer, pinned)
    _say(log, f"[toolchain] {zip_path.name}: go.sum hash and sha256 match the pins "
              f"({time.monotonic() - started:.0f}s)")
    return zip_path


def _safe_name(name: str) -> str:
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal.startswith("..") or normal in (".", ""):
        raise ToolchainError(f"files.json names {name!r}, outside its tree: refusing it")
    return normal


def _kept(name: str) -> bool:
    parts = name.split("/")
    return not (parts[0] == "bin" and len(parts) == 2 and parts[1] not in KEEP_BIN
                and not (parts[1].startswith("python3.") and parts[1][8:].isdigit()))


def unpack(zip_path: Path, module_version: str, target: Path, platform_name: str) -> int:
    """Write the module's ``platform_name`` tree under ``target`` as ``files.json`` lists it;
    returns the number of regular files written."""
    prefix = f"{MODULE}@{module_version}/python/internal/data/{platform_name}/"
    written = 0
    with zipfile.ZipFile(zip_path) as archive:
        try:
            listing = json.loads(archive.read(prefix + "files.json"))
        except KeyError:
            raise ToolchainError(f"{zip_path.name} holds no {prefix}files.json") from None
        entries = listing.get("files") or []
        for entry in sorted(entries, key=lambda e: str(e["name"])):
            name = _safe_name(str(entry["name"]))
            if not _kept(name):
                continue
            mode = int(entry["perm"])
            path = target / name
            if mode & MODE_DIR:
                path.mkdir(mode=0o755, parents=True, exist_ok=True)
                path.chmod(0o755)
                continue
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if mode & MODE_SYMLINK:
                link = str(entry.get("symlink") or "")
                if not link or link.startswith("/") or posixpath.normpath(
                        posixpath.join(posixpath.dirname(name), link)).startswith(".."):
                    raise ToolchainError(f"{name}: link to {link!r} leaves its tree: refusing it")
                path.symlink_to(link)
                continue
            member = prefix + name + (".gz" if entry.get("compressed") else "")
            data = archive.read(member)
            if entry.get("compressed"):
                data = gzip.decompress(data)
            if len(data) != int(entry["size"]):
                raise ToolchainError(f"{name}: {len(data)} bytes, files.json says "
                                     f"{entry['size']}: refusing the tree")
            path.write_bytes(data)
            path.chmod(0o755 if mode & 0o111 else 0o644)
            written += 1
    return written


def strip_debug_info(tree: Path, log: Callable[[str], None] | None = None) -> None:
    """``strip --strip-debug`` each ELF file: the build carries its debug information
    (libpython alone 204 MB, 39 MB without), as python-build-standalone's ``stripped``
    distributions leave out too."""
    strip = shutil.which("strip")
    if strip is None:
        _say(log, "[toolchain] `strip` not found (binutils): CPython keeps its debug "
                  "information (about 165 MB more in the image)")
        return
    def is_elf(path: Path) -> bool:
        if not path.is_file() or path.is_symlink():
            return False
        with open(path, "rb") as data:
            return data.read(4) == b"\x7fELF"

    elves = [path for path in sorted(tree.rglob("*")) if is_elf(path)]
    if elves:
        subprocess.run([strip, "--strip-debug", *map(str, elves)], check=True)


def version_of(python: Path) -> str:
    """What the interpreter reports, after importing the modules a runner leans on (ssl,
    ctypes, sqlite3, venv, zoneinfo): a missing extension fails here, not in an image build."""
    probe = ("import ssl, ctypes, sqlite3, venv, zoneinfo, platform; "
             "print(platform.python_version())")
    try:
        done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True,
                              timeout=120, check=False)
    except OSError as exc:
        raise ToolchainError(f"{python} does not run: {exc}") from None
    if done.returncode != 0:
        raise ToolchainError(f"{python} fails: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def install(minor: str, log: Callable[[str], None] | None = None) -> Path:
    """Fetch, verify and unpack the pinned CPython ``minor`` into its cache directory."""
    pinned = pin(minor)
    zip_path = module_zip(pinned, log=log)
    final = cache_dir(minor)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial.", dir=final.parent))
    try:
        staging.chmod(0o755)
        count = unpack(zip_path, pinned.module_version, staging, platform_dir())
        strip_debug_info(staging, log=log)
        reported = version_of(staging / "bin" / "python3")
        if reported != pinned.version:
            raise ToolchainError(f"the unpacked CPython reports {reported!r}, "
                                 f"not {pinned.version}")
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(log, f"[toolchain] CPython {pinned.version} (python-build-standalone "
              f"{pinned.release}, {platform_dir()}): {count} files -> {final}")
    return final


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.toolchain.cpython",
        description="Fetch (once, pinned, through the Go module proxy) and unpack the "
        "python-build-standalone CPython of a minor version Debian does not ship.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ensure", help="fetch whatever is missing and print the directories")
    p.add_argument("minors", nargs="*", help="only these (default: all pinned)")
    sub.add_parser("paths", help="print where each pinned CPython is, without fetching")
    args = parser.parse_args(argv)
    try:
        for minor in getattr(args, "minors", None) or minors():
            if args.command == "ensure":
                print(f"cpython {minor}: {ensure(minor)}")
            else:
                where = find(minor)
                print(f"cpython {minor} {pin(minor).version} "
                      f"{where or f'not fetched (cache: {cache_dir(minor)})'}")
        return 0
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
