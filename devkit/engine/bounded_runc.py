"""runc, given only the capabilities this machine's processes can hold.

Docker 20.10 (Debian's docker.io) gives a ``--privileged`` container every capability it
knows, whatever the machine allows. Where the bounding set lacks one (here CAP_SYS_RESOURCE:
``grep CapBnd /proc/self/status``), runc then fails every privileged container with
"unable to apply caps: operation not permitted", and kind's node containers are privileged.
The engine registers this as its default runtime: before ``runc create``/``run``/``exec`` it
removes from the container's (or the exec'd process's) capability sets those the bounding set
lacks, so a privileged container gets all the machine has, and then execs runc. Nothing else
changes; where the bounding set is full it is a pass-through.

Written into the engine's state directory with this interpreter as its ``#!`` line
(``install()``), since containerd's shim runs it by path.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Linux capability numbers (include/uapi/linux/capability.h), as runc's config names them.
CAPS = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]
REAL_RUNC = "runc"


def missing(status: str) -> set[str]:
    """Capabilities (``CAP_X``) the bounding set in ``/proc/self/status`` text lacks."""
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return {f"CAP_{n}" for i, n in enumerate(CAPS) if not bounding & (1 << i)}
    return set()


def filtered(process: dict, lacking: set[str]) -> bool:
    """Drop ``lacking`` from an OCI process's capability sets; True when any was there."""
    changed = False
    for key, names in (process.get("capabilities") or {}).items():
        kept = [n for n in names if n not in lacking]
        if len(kept) != len(names):
            process["capabilities"][key] = kept
            changed = True
    return changed


def _value(args: list[str], *flags: str) -> str | None:
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def rewrite(args: list[str], lacking: set[str]) -> None:
    """Filter the config (create/run: ``--bundle``) or process file (exec: ``--process``)."""
    if not lacking:
        return
    commands = [a for a in args if a in ("create", "run", "exec")]
    if not commands:
        return
    if commands[0] == "exec":
        target = _value(args, "--process", "-p")
        path = Path(target) if target else None
        key = None
    else:
        bundle = _value(args, "--bundle", "-b") or "."
        path, key = Path(bundle) / "config.json", "process"
    if path is None or not path.exists():
        return
    doc = json.loads(path.read_text())
    process = doc.get(key, {}) if key else doc
    if filtered(process, lacking):
        path.write_text(json.dumps(doc))


def main() -> None:
    args = sys.argv[1:]
    rewrite(args, missing(Path("/proc/self/status").read_text()))
    real = os.environ.get("DOCRELAY_REAL_RUNC", REAL_RUNC)
    os.execvp(real, [real, *args])


def install(directory: Path) -> Path:
    """Write the runtime (this file behind this interpreter) into ``directory``."""
    path = directory / "bounded-runc"
    path.write_text(f"#!{sys.executable} -IS\n" + Path(__file__).read_text())
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    main()
