"""Run one container as local processes, in its own mount and PID namespaces and its pod's
network namespace.

Process tree per container::

    local node
      └─ setpriv --pdeathsig KILL unshare --mount --pid --fork --kill-child   (host)
           └─ python sandbox_init.py     PID 1 of the container's PID namespace
                └─ the container's command (chrooted, as runAsUser)

``--pdeathsig`` and ``--kill-child`` chain the lifetimes: if the local node dies, unshare
gets SIGKILL, its child (the init) too, and with the init the whole PID namespace goes. A
clean stop is SIGTERM to the init (forwarded to every process of the container), then
SIGKILL. The mounts live only in the container's mount namespace and vanish with it.

The host pid of the command is written to ``<pod dir>/pids/<container>`` (tests use it to
prove a process is gone). stdout and stderr go through pipes into a CRI-format log file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devkit.localnode import logs, sandbox_init
from devkit.localnode.cgroups import Cgroups
from devkit.localnode.volumes import Mount

log = logging.getLogger(__name__)

INIT_SCRIPT = Path(sandbox_init.__file__).resolve()
START_ERROR_EXIT_CODE = 128


@dataclass
class ContainerSpec:
    name: str
    cgroup_name: str  # unique on the machine, e.g. <pod uid>_<container>_<attempt>
    state_dir: Path  # this run's rootfs, upper, work and termination-log
    log_path: Path
    pid_file: Path
    argv: list[str]
    env: dict[str, str]
    working_dir: str | None = None
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    read_only_root: bool = False
    termination_message_path: str | None = None
    memory_limit: int | None = None
    pod_cgroup: Path | None = None  # the pod's group (PIDs limit), from Cgroups.create_pod
    netns_fd: int | None = None  # the pod's network namespace; None: the host's
    hidden: list[str] = field(default_factory=list)  # host paths the container must not see
    # What the container's image would hold, found on the host and offered read-only at
    # its own path (the Node.js of a runner-node:<major> image: devkit/toolchain/node.py).
    image_runtime: list[str] = field(default_factory=list)


REPO_ROOT = Path(__file__).resolve().parents[2]
# What a run image holds at a fixed path, offered at that path in every container as the
# runtime is (read-only): the Node.js runner (images/Dockerfile.runner-node), so the Job's
# command `node /opt/docrelay/node/runner.mjs` runs here as it does from the image.
IMAGE_PATHS = {"/opt/docrelay/node": REPO_ROOT / "operator" / "docrelay" / "runner" / "node"}


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def editable_paths() -> list[Path]:
    """Directories that ``.pth`` files of this Python's site-packages add to ``sys.path``: the
    editable install's source (the checkout's ``operator/``, not the whole checkout)."""
    found = []
    for site_dir in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for pth in sorted(Path(site_dir).glob("*.pth")):
            with contextlib.suppress(OSError):
                for line in pth.read_text().splitlines():
                    line = line.strip()
                    if line.startswith("/") and Path(line).is_dir():
                        found.append(Path(line))
    return found


def runtime_paths() -> list[str]:
    """Directories every container runs with: this Python's executable, its virtualenv and
    base interpreter, and the editable install's source directory."""
    paths = {Path(sys.executable).parent, Path(sys.executable).resolve().parent,
             Path(sys.prefix), Path(sys.base_prefix), *editable_paths()}
    return sorted(str(p) for p in paths)


def hidden_paths(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host paths no container sees: the checkout (beyond the runtime bound back into it)
    and ``extra`` (the node's state directory, the cluster's)."""
    return sorted({str(REPO_ROOT), *(str(Path(p).resolve()) for p in extra)})


def runtime_paths_to_bind(
    hidden: list[str] | tuple[str, ...] = (), extra: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """Runtime paths (and ``extra`` ones) the overlay of the host root would not show: those
    under /tmp (the container gets a private one), under a hidden path, or on another
    filesystem than the root's."""
    root_device = os.stat("/").st_dev
    wanted = []
    for path in [*runtime_paths(), *extra]:
        covered = any(_under(path, h) for h in ["/tmp", *hidden])
        if covered or os.stat(path).st_dev != root_device:
            wanted.append(path)
    # Outer paths first, so a nested path is bound on top of its parent, not under it.
    return sorted(wanted, key=len)


@dataclass(frozen=True)
class Exit:
    exit_code: int
    signal: int | None = None
    oom_killed: bool = False
    start_error: str | None = None  # the command could not start (exit code 128)


class Container:
    """A started container; ``exited`` is set (and ``on_exit`` called) once it is gone."""

    def __init__(self, spec: ContainerSpec, cgroups: Cgroups | None,
                 on_exit: Callable[[Container], None]) -> None:
        self.spec = spec
        self._cgroups = cgroups
        self._on_exit = on_exit
        self.pid: int | None = None  # the command's host pid, once running
        self.running = threading.Event()
        self.exited = threading.Event()
        self.result: Exit | None = None
        self.termination_file = b""
        self._group: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log = logs.LogWriter(spec.log_path)
        self._error: str | None = None
        self._pumps: list[threading.Thread] = []

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        spec = self.spec
        for sub in ("upper", "work", "rootfs"):
            (spec.state_dir / sub).mkdir(parents=True, exist_ok=True)
        termination = spec.state_dir / "termination-log"
        termination.touch()
        termination.chmod(0o666)  # whatever uid the command runs as may write it
        if self._cgroups is not None:
            self._group = self._cgroups.create(spec.cgroup_name, spec.memory_limit,
                                               spec.pod_cgroup)
        elif spec.memory_limit is not None:
            log.warning("%s: no memory cgroup; limit %d not enforced", spec.name,
                        spec.memory_limit)

        init_spec = {
            "rootfs": str(spec.state_dir / "rootfs"),
            "upper": str(spec.state_dir / "upper"),
            "work": str(spec.state_dir / "work"),
            "readOnlyRoot": spec.read_only_root,
            "mounts": [{"source": str(m.source), "target": m.target, "readOnly": m.read_only}
                       for m in spec.mounts]
                      + [{"source": str(source), "target": target, "readOnly": True}
                         for target, source in IMAGE_PATHS.items() if source.is_dir()],
            "terminationLog": (
                {"source": str(termination), "target": spec.termination_message_path}
                if spec.termination_message_path else None
            ),
            "workingDir": spec.working_dir,
            "cgroupProcs": ([str(f) for f in self._cgroups.procs_files(self._group,
                                                                         spec.pod_cgroup)]
                            if self._group is not None and self._cgroups is not None else []),
            "netnsFd": spec.netns_fd,
            "hidden": spec.hidden,
            "argv": spec.argv,
            "env": spec.env,
            "uid": spec.uid,
            "gid": spec.gid,
            "groups": spec.groups,
            "traverse": [*runtime_paths(), *spec.image_runtime],
            "runtimeBinds": runtime_paths_to_bind(spec.hidden, spec.image_runtime),
        }
        status_read, status_write = os.pipe()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--",
                 "unshare", "--mount", "--pid", "--fork", "--kill-child",
                 "--propagation", "private", "--",
                 sys.executable, "-I", "-S", str(INIT_SCRIPT), str(status_write)],
                stdin=subprocess.PIPE, stdout=out_write, stderr=err_write,
                pass_fds=(status_write,) + ((spec.netns_fd,) if spec.netns_fd is not None
                                             else ()),
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                # Not in the node's process group: the node decides how its containers end.
                start_new_session=True,
            )
        finally:
            for fd in (status_write, out_write, err_write):
                os.close(fd)
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(init_spec).encode())
            self._process.stdin.close()
        except BrokenPipeError:
            pass  # the init died at once; the monitor reports it
        for fd, stream in ((out_read, "stdout"), (err_read, "stderr")):
            pump = threading.Thread(target=self._pump, args=(fd, stream), daemon=True,
                                    name=f"log-{spec.name}-{stream}")
            pump.start()
            self._pumps.append(pump)
        threading.Thread(target=self._monitor, args=(status_read,), daemon=True,
                         name=f"ctr-{spec.name}").start()

    def _pump(self, fd: int, stream: str) -> None:
        with os.fdopen(fd, "rb", buffering=0) as source:
            self._log.copy(source, stream)

    # -- follow it ------------------------------------------------------------------------

    def _monitor(self, fd: int) -> None:
        exit_code: int | None = None
        exit_signal: int | None = None
        with os.fdopen(fd, "rb") as events:
            for raw in events:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                kind = event.get("event")
                if kind == "running":
                    self.pid = int(event["pid"])
                    with contextlib.suppress(OSError):
                        self.spec.pid_file.parent.mkdir(parents=True, exist_ok=True)
                        self.spec.pid_file.write_text(f"{self.pid}\n")
                    self.running.set()
                elif kind in ("start-error", "setup-error"):
                    self._error = str(event.get("message"))
                elif kind == "exited":
                    exit_code = int(event["exitCode"])
                    exit_signal = event.get("signal")
        assert self._process is not None
        returncode = self._process.wait()
        if exit_code is None and self._error is None:
            # The init itself was killed (SIGKILL from us, or the OOM killer chose it).
            exit_code = 128 - returncode if returncode < 0 else 137
            exit_signal = -returncode if returncode < 0 else int(signal.SIGKILL)
        oom = False
        if self._group is not None and self._cgroups is not None:
            oom = self._cgroups.oom_kills(self._group) > 0
            self._cgroups.remove(self._group)
        if self._error is not None:
            self.result = Exit(START_ERROR_EXIT_CODE, start_error=self._error)
        else:
            assert exit_code is not None
            self.result = Exit(exit_code, exit_signal, oom_killed=oom)
        with contextlib.suppress(OSError):
            self.termination_file = (self.spec.state_dir / "termination-log").read_bytes()[-4096:]
        # The pipes close when the last process of the namespace is gone; give the pumps a
        # moment to drain them, then close the log (followers stop there).
        for pump in self._pumps:
            pump.join(timeout=2)
        self._log.close()
        shutil.rmtree(self.spec.state_dir, ignore_errors=True)
        self.running.set()
        self.exited.set()
        try:
            self._on_exit(self)
        except Exception:
            log.exception("exit callback of %s failed", self.spec.name)

    @property
    def log_open(self) -> bool:
        return not self._log.closed.is_set()

    # -- stop it --------------------------------------------------------------------------

    def _init_pid(self) -> int | None:
        """The host pid of the container's init (the child of unshare)."""
        if self._process is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children")
            text = children.read_text().split()
            if text:
                return int(text[0])
        return None

    def signal(self, sig: int) -> None:
        init = self._init_pid()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, sig)
        elif sig == signal.SIGKILL and self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()  # --kill-child takes the init down with it

    def stop(self, grace: float) -> None:
        """SIGTERM every process of the container; SIGKILL after ``grace`` seconds."""
        if self.exited.is_set():
            return
        if grace > 0:
            self.signal(signal.SIGTERM)
            if self.exited.wait(grace):
                return
        self.kill()

    def kill(self) -> None:
        """SIGKILL the init: the kernel then kills every process in the PID namespace."""
        self.signal(signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        if self._group is not None and self._cgroups is not None:
            for pid in self._cgroups.pids(self._group):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.exited.wait(10)


def kill_leftovers(state_dir: Path) -> None:
    """Kill containers a crashed node left behind, found through their pid files.

    A pid counts as ours only if the process is chrooted into this state directory, so a
    reused pid is never touched. Killing its parent, the namespace's init, ends them all.
    """
    pods = (state_dir / "pods").resolve()
    for pid_file in pods.glob("*/pids/*"):
        with contextlib.suppress(OSError, ValueError, StopIteration):
            pid = int(pid_file.read_text().strip())
            if pods not in Path(os.readlink(f"/proc/{pid}/root")).parents:
                continue
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            parent = int(next(x for x in status if x.startswith("PPid:")).split()[1])
            for victim in (parent, pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
