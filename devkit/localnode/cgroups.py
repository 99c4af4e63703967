"""Memory cgroups: one per container under ``docrelay-localnode/<node instance>``, v1 or v2,
found at start-up.

A container's cgroup carries its ``resources.limits.memory``; the kernel's OOM killer acts
inside it and leaves a count (v1 ``memory.oom_control``, v2 ``memory.events``) that tells
``OOMKilled`` apart from other kills. The cgroup also lists every process of the container,
which makes "kill everything" and "clean up after a crash" reliable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PARENT = "docrelay-localnode"


@dataclass(frozen=True)
class Cgroups:
    version: int  # 1 or 2
    parent: Path  # .../docrelay-localnode

    @classmethod
    def detect(cls, instance: str, root: Path = Path("/sys/fs/cgroup")) -> Cgroups | None:
        """The memory hierarchy to use, or None (limits then go unenforced, with a warning).

        ``instance`` names this node's own group under ``docrelay-localnode``, so two local
        nodes on one machine (a dev cluster and a test run) never clean up each other's.
        """
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        if "memory" in controllers:
            try:
                # v2 hands the memory controller down only where subtree_control enables it.
                (root / "cgroup.subtree_control").write_text("+memory")
                parent = root / PARENT
                for level in (parent, parent / instance):
                    level.mkdir(exist_ok=True)
                    (level / "cgroup.subtree_control").write_text("+memory")
                return cls(2, parent / instance)
            except OSError as exc:
                log.warning("cgroup v2 memory controller unusable (%s): memory limits off", exc)
                return None
        v1 = root / "memory"
        if (v1 / "memory.limit_in_bytes").exists():
            try:
                (v1 / PARENT / instance).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create %s (%s): memory limits off", v1 / PARENT, exc)
                return None
            return cls(1, v1 / PARENT / instance)
        log.warning("no memory cgroup controller found under %s: memory limits off", root)
        return None

    def create(self, name: str, memory_limit: int | None) -> Path:
        group = self.parent / name
        group.mkdir(exist_ok=True)
        if memory_limit is not None:
            limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (group / limit_file).write_text(str(memory_limit))
            if self.version == 1 and (group / "memory.memsw.limit_in_bytes").exists():
                # memory+swap at the same limit: no swapping past it (as runc does).
                (group / "memory.memsw.limit_in_bytes").write_text(str(memory_limit))
            if self.version == 2:
                with contextlib.suppress(OSError):  # no swap beyond the limit, as the kubelet
                    (group / "memory.swap.max").write_text("0")
        return group

    @staticmethod
    def procs_file(group: Path) -> Path:
        return group / "cgroup.procs"

    def oom_kills(self, group: Path) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (group / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    @staticmethod
    def pids(group: Path) -> list[int]:
        try:
            return [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, group: Path, timeout: float = 5.0) -> None:
        """SIGKILL whatever is left in the group, then remove it."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids(group):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                group.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", group, exc)
                    return
                time.sleep(0.05)

    def remove_all(self, *, including_parent: bool = False) -> None:
        """Kill and remove every container cgroup (start-up after a crash; shutdown)."""
        if not self.parent.exists():
            return
        for group in self.parent.iterdir():
            if group.is_dir():
                self.remove(group)
        if including_parent:
            with contextlib.suppress(OSError):
                self.parent.rmdir()
