"""Host-side mounts: the tmpfs that holds a pod's projected files, Memory emptyDirs, and
finding and removing what a previous run left mounted under the state directory."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def mount_tmpfs(target: Path, *, size: str | None = None, mode: int = 0o755) -> None:
    target.mkdir(parents=True, exist_ok=True)
    options = [f"mode={mode:o}"] + ([f"size={size}"] if size else [])
    _run(["mount", "-t", "tmpfs", "-o", ",".join(options), "localnode", str(target)])


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first (the order to unmount them)."""
    base = directory.resolve()
    found: list[Path] = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = Path(_unescape(line.split()[4]))
            if point == base or base in point.parents:
                found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(directory: Path) -> None:
    """Detach every mount under ``directory`` (lazily: a busy one goes when it is free)."""
    for point in mounts_under(directory):
        result = subprocess.run(["umount", "-l", str(point)], capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("could not unmount %s: %s", point, result.stderr.strip())


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {result.stderr.strip()}")
