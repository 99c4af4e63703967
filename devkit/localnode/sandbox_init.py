"""The init of one container: builds its root inside fresh mount and PID namespaces, runs the
command, forwards signals, reports how it ended.

Started by ``sandbox.py`` as ``unshare --mount --pid --fork --kill-child -- python -I -S
sandbox_init.py <status-fd>``, so this process is PID 1 of the container's PID namespace and
owns a private copy of the host's mounts. It runs as a script (standard library only): the
spec arrives as JSON on stdin (it may hold Secret values, which thus never touch the disk)
and events leave as JSON lines on the status fd:

    {"event": "running", "pid": <host pid of the command>}
    {"event": "start-error", "message": ...}     the command could not be executed
    {"event": "setup-error", "message": ...}     the root could not be built
    {"event": "exited", "exitCode": n, "signal": s | null}

Before anything else it joins the pod's network namespace (an fd the node passes) and the
container's and pod's cgroups. The root: an overlay whose lower layer is the host's ``/``
(upper and work directories per container, so writes never reach the host), fresh
``/proc``, a minimal ``/dev``, read-only ``/sys``, a private tmpfs ``/tmp``, an empty
read-only tmpfs over each hidden path (the checkout, the node's and the cluster's state),
the runtime directories bound back read-only, each volume bound at its ``mountPath``, the
termination-log file bound at its path, the interpreter's directories made traversable for
a non-root uid, then (``readOnlyRootFilesystem``) the overlay remounted read-only.
The command runs chrooted there, as ``runAsUser``/``runAsGroup``, in its own session; it is
not PID 1, so a SIGTERM forwarded to it has its default effect (like a pod with
``shareProcessNamespace``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
from typing import Any

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
CLONE_NEWNET = 0x40000000

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def join_network(fd: int) -> None:
    """Enter the pod's network namespace (the node holds it open; we get an fd to it)."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into the pod's network namespace: {os.strerror(err)}")
    os.close(fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(),
                   fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        what = fstype or ("bind " + (source or ""))
        raise OSError(err, f"mount {what} on {target}: {os.strerror(err)}")


def inside(root: str, path: str) -> str:
    """``path`` resolved inside ``root``, following symlinks as the container would see them
    (an absolute link such as /var/run -> /run restarts at ``root``, never at the host's /)."""
    parts = [p for p in path.split("/") if p and p != "."]
    current = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if current != root:
                current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks resolving {path}")
            link = os.readlink(candidate)
            if link.startswith("/"):
                current = root
            parts = [p for p in link.split("/") if p and p != "."] + parts
            continue
        current = candidate
    return current


def mount_point(root: str, path: str, is_dir: bool) -> str:
    target = inside(root, path)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            with open(target, "a"):
                pass
    return target


def bind(source: str, target: str, read_only: bool) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    if read_only:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def make_traversable(root: str, paths: list[str]) -> None:
    """Let any uid walk down to the interpreter (it may live under a 0700 home directory).

    Directories above a runtime path get search permission only (``/root`` becomes
    traversable, not listable); the runtime path itself becomes readable too. The chmod
    happens in this container's overlay (a copy-up of the directory's metadata), never on
    the host.
    """
    for path in paths:
        current = root
        parts = [p for p in path.split("/") if p]
        for index, part in enumerate(parts):
            current = os.path.join(current, part)
            if os.path.islink(current) or not os.path.isdir(current):
                break
            mode = os.stat(current).st_mode
            wanted = 0o005 if index == len(parts) - 1 else 0o001
            if mode & wanted != wanted:
                # A read-only bind (a runtime path under /tmp) cannot change; it is the
                # host's own directory, which the host already lets others traverse or not.
                with contextlib.suppress(OSError):
                    os.chmod(current, (mode & 0o7777) | wanted)


def hide(root: str, paths: list[str]) -> list[str]:
    """An empty tmpfs over each path the overlay shows (outer paths first; one inside an
    already hidden path is gone anyway). Returns the tmpfs mounts, to make read-only once
    the runtime directories are bound inside them."""
    hidden = []
    for path in sorted(paths, key=len):
        target = inside(root, path)
        if os.path.isdir(target) and not os.path.islink(target):
            mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "mode=755,size=16k")
            hidden.append(target)
    return hidden


def build_root(spec: dict[str, Any]) -> str:
    root = spec["rootfs"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks to the host
    os.makedirs(root, exist_ok=True)
    mount("overlay", root, "overlay", 0,
          f"lowerdir=/,upperdir={spec['upper']},workdir={spec['work']}")

    mount("proc", mount_point(root, "/proc", True), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = mount_point(root, "/dev", True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name in DEVICES:
        bind(f"/dev/{name}", mount_point(root, f"/dev/{name}", False), False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("ptmx", "pts/ptmx")):
        os.symlink(target, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, "shm"))
    mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    os.mkdir(os.path.join(dev, "pts"))
    with contextlib.suppress(OSError):  # no ptys then; nothing we run needs one
        mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620")
    with contextlib.suppress(OSError):
        mount("sysfs", mount_point(root, "/sys", True), "sysfs",
              MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", mount_point(root, "/tmp", True), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # The checkout, the node's state (other pods' files, logs) and the cluster's (PKI, etcd
    # data, component logs) vanish; what the runtime needs of them is bound back below.
    hidden = hide(root, spec.get("hidden") or [])

    for item in spec["mounts"]:
        source = item["source"]
        target = mount_point(root, item["target"], os.path.isdir(source))
        bind(source, target, item["readOnly"])

    # The interpreter, virtualenv and product package must stay visible even when they live
    # under /tmp (a CI clone), a hidden path (the checkout) or on another filesystem;
    # read-only, like an image's layers. Bound last, so neither the private /tmp nor a
    # volume mounted there (an emptyDir) hides them.
    for path in spec.get("runtimeBinds") or []:
        bind(path, mount_point(root, path, True), True)
    for target in hidden:
        mount(None, target, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    log = spec.get("terminationLog")
    if log:
        bind(log["source"], mount_point(root, log["target"], False), False)
    if spec.get("workingDir"):
        mount_point(root, spec["workingDir"], True)  # runc creates a missing workingDir
    if spec["uid"] != 0:
        make_traversable(root, spec.get("traverse") or [])
    if spec.get("readOnlyRoot"):
        mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    return root


def send(fd: int, event: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the node is gone; its death kills us soon enough
        os.write(fd, (json.dumps(event) + "\n").encode())


def run_command(spec: dict[str, Any], root: str, report: int) -> None:
    """In the forked child: become the container's command, or say why not."""
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()
        # /proc here is still the host's, so /proc/self is our host pid (for the node).
        os.write(report, f"pid:{os.readlink('/proc/self')}\n".encode())
        os.chroot(root)
        os.chdir(spec.get("workingDir") or "/")
        os.setgroups(spec.get("groups") or [])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"cannot run {spec['argv'][0]!r}: {detail}"
        try:
            os.write(report, f"err:{message}\n".encode())
        finally:
            os._exit(128)


def supervise(child: int) -> int:
    """Reap every process until the command exits; return its wait status."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == child:
            return status


def main() -> None:
    status_fd = int(sys.argv[1])
    os.set_inheritable(status_fd, False)
    spec = json.loads(sys.stdin.buffer.read())
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.umask(0o022)
    try:
        if spec.get("netnsFd") is not None:
            join_network(int(spec["netnsFd"]))
        for procs_file in spec.get("cgroupProcs") or []:
            with open(procs_file, "w") as procs:
                procs.write("0")
        root = build_root(spec)
    except Exception as exc:
        send(status_fd, {"event": "setup-error", "message": str(exc)})
        sys.exit(128)

    # Signals stay blocked across fork until the child has reset them and we have handlers.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(FORWARDED))
    read_end, write_end = os.pipe()  # close-on-exec: EOF means the exec succeeded
    child = os.fork()
    if child == 0:
        os.close(read_end)
        run_command(spec, root, write_end)
    os.close(write_end)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signum)  # from PID 1: every process in the namespace but us

    for sig in FORWARDED:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, set(FORWARDED))

    report = b""
    while chunk := os.read(read_end, 4096):
        report += chunk
    os.close(read_end)
    host_pid = None
    error = None
    for line in report.decode(errors="replace").splitlines():
        kind, _, value = line.partition(":")
        if kind == "pid":
            host_pid = int(value)
        elif kind == "err":
            error = value
    if error is not None:
        supervise(child)
        send(status_fd, {"event": "start-error", "message": error})
        sys.exit(128)
    send(status_fd, {"event": "running", "pid": host_pid})

    status = supervise(child)
    code = os.waitstatus_to_exitcode(status)
    with_signal = -code if code < 0 else None
    send(status_fd, {"event": "exited", "exitCode": 128 + with_signal if with_signal else code,
                     "signal": with_signal})
    # Leaving ends the namespace: the kernel kills whatever the command left behind.
    sys.exit(0)


if __name__ == "__main__":
    main()
