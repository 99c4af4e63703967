"""Cgroups for pods and containers under ``docrelay-localnode/<node instance>``, v1 or v2,
found at start-up.

Memory: one group per container, carrying its ``resources.limits.memory``; the kernel's OOM
killer acts inside it and leaves a count (v1 ``memory.oom_control``, v2 ``memory.events``)
that tells ``OOMKilled`` apart from other kills. The group also lists every process of the
container, which makes "kill everything" and "clean up after a crash" reliable.

PIDs: one group per pod with ``pids.max`` (the kubelet's pod PIDs limit), shared by the
pod's containers, so a fork bomb stops at the limit instead of exhausting the machine.
Under v1 it lives in the ``pids`` hierarchy (``pids/docrelay-localnode/<instance>/<pod uid>``);
under v2 the container groups nest in it (``<instance>/<pod uid>/<container group>``).
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
    parent: Path  # .../docrelay-localnode/<instance> (v1: in the memory hierarchy)
    pids_parent: Path | None = None  # where pod groups live; None: no pids controller

    @classmethod
    def detect(cls, instance: str, root: Path = Path("/sys/fs/cgroup")) -> Cgroups | None:
        """The hierarchy to use, or None (limits then go unenforced, with a warning).

        ``instance`` names this node's own group under ``docrelay-localnode``, so two local
        nodes on one machine (a dev cluster and a test run) never clean up each other's.
        """
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError:
            controllers = []
        if "memory" in controllers:
            wanted = " ".join(f"+{c}" for c in ("memory", "pids") if c in controllers)
            try:
                # v2 hands a controller down only where subtree_control enables it.
                (root / "cgroup.subtree_control").write_text(wanted)
                parent = root / PARENT
                for level in (parent, parent / instance):
                    level.mkdir(exist_ok=True)
                    (level / "cgroup.subtree_control").write_text(wanted)
            except OSError as exc:
                log.warning("cgroup v2 memory controller unusable (%s): memory limits off", exc)
                return None
            if "pids" not in controllers:
                log.warning("no pids controller under %s: pod PIDs limits off", root)
            return cls(2, parent / instance,
                       parent / instance if "pids" in controllers else None)
        v1 = root / "memory"
        if (v1 / "memory.limit_in_bytes").exists():
            try:
                (v1 / PARENT / instance).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("cannot create %s (%s): memory limits off", v1 / PARENT, exc)
                return None
            pids: Path | None = root / "pids" / PARENT / instance
            try:
                if not (root / "pids" / "cgroup.procs").exists():
                    raise OSError("no pids hierarchy")
                pids.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            except OSError as exc:
                log.warning("no usable pids cgroup (%s): pod PIDs limits off", exc)
                pids = None
            return cls(1, v1 / PARENT / instance, pids)
        log.warning("no memory cgroup controller found under %s: memory limits off", root)
        return None

    def create_pod(self, uid: str, pids_limit: int | None) -> Path | None:
        """The pod's group with its PIDs limit (None or negative: unlimited); None without a
        pids controller (v1). Under v2 the pod's container groups go inside it."""
        if self.pids_parent is None:
            if self.version == 2:
                group = self.parent / uid
                group.mkdir(exist_ok=True)
                (group / "cgroup.subtree_control").write_text("+memory")
                return group
            return None
        group = self.pids_parent / uid
        group.mkdir(exist_ok=True)
        limit = "max" if pids_limit is None or pids_limit < 0 else str(pids_limit)
        (group / "pids.max").write_text(limit)
        if self.version == 2:
            (group / "cgroup.subtree_control").write_text("+memory +pids")
        return group

    def create(self, name: str, memory_limit: int | None, pod: Path | None = None) -> Path:
        """A container's group (under v2 inside its pod's group, when there is one)."""
        group = (pod if self.version == 2 and pod is not None else self.parent) / name
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

    def procs_files(self, group: Path, pod: Path | None) -> list[Path]:
        """Where a container's init writes itself: its group, and (v1) its pod's."""
        files = [self.procs_file(group)]
        if self.version == 1 and pod is not None:
            files.append(self.procs_file(pod))
        return files

    @staticmethod
    def procs_file(group: Path) -> Path:
        return group / "cgroup.procs"

    @staticmethod
    def pids_limit(pod: Path) -> str | None:
        try:
            return (pod / "pids.max").read_text().strip()
        except OSError:
            return None

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
        """SIGKILL whatever is left in the group (and groups nested in it), then remove it."""
        if group.is_dir():
            for child in group.iterdir():
                if child.is_dir():
                    self.remove(child, timeout)
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
        """Kill and remove every pod and container group (start-up after a crash; shutdown)."""
        for parent in {self.parent, self.pids_parent} - {None}:
            assert parent is not None
            if not parent.exists():
                continue
            for group in parent.iterdir():
                if group.is_dir():
                    self.remove(group)
            if including_parent:
                with contextlib.suppress(OSError):
                    parent.rmdir()
