"""A container engine for this machine: Debian's ``docker.io`` in a private namespace.

No container engine runs on these machines, and the network rule forbids bridges or
private-range addresses in the machine's own network namespace. So ``containerd`` and
``dockerd`` (Debian's ``docker.io`` 20.10) run inside a network + mount namespace of their own,
created by ``unshare --net --mount --fork``, with only ``lo`` up:

    python -m devkit.engine.supervisor STATE        (host: the supervisor, a session leader)
      └─ unshare --net --mount --fork --kill-child
           └─ python -m devkit.engine.supervisor --inside STATE
                ├─ containerd   (root, state, socket under STATE)
                └─ dockerd      (cgroupfs driver, overlay2; data, exec root, socket under STATE)

The Docker socket is a file (``STATE/docker.sock``), so the docker CLI in the machine's own
namespace talks to it: ``DOCKER_HOST=unix://STATE/docker.sock``. The bridges Docker makes (and
every container's address) exist only inside the private namespace; ``netns()`` names it for
code that must reach a container's port (``nsenter --net=... --``). ``/run`` is a fresh tmpfs
inside the mount namespace, so containerd's shim sockets and Docker's mounts never appear on
the machine. ``up`` is idempotent; ``down`` stops both daemons and the namespace with them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from devkit.filelock import file_lock
from devkit.toolchain import cache_root

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("docker.io",)  # Debian's: dockerd 20.10, containerd 1.6, runc, iptables
START_TIMEOUT = 60.0


class EngineError(RuntimeError):
    """The engine could not be started, reached or stopped; the message says what to do."""


def state_dir() -> Path:
    """Everything the engine keeps: ``<docrelay cache>/engine`` (DOCRELAY_ENGINE_DIR wins)."""
    if explicit := os.environ.get("DOCRELAY_ENGINE_DIR"):
        return Path(explicit)
    return cache_root() / "engine"


def socket_path() -> Path:
    return state_dir() / "docker.sock"


def docker_host() -> str:
    return f"unix://{socket_path()}"


def _pid_file() -> Path:
    return state_dir() / "supervisor.pid"


def _inner_pid_file() -> Path:
    return state_dir() / "namespace.pid"


def _log(message: str) -> None:
    print(f"[engine] {message}", file=sys.stderr, flush=True)


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def ping(timeout: float = 2.0) -> bool:
    """True when dockerd answers ``GET /_ping`` on the socket."""
    path = socket_path()
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def running() -> bool:
    return _read_pid(_pid_file()) is not None and ping()


def netns() -> Path:
    """The private network namespace (``/proc/PID/ns/net``); the engine must be running."""
    pid = _read_pid(_inner_pid_file())
    if pid is None or not running():
        raise EngineError("the engine is not running (python -m devkit.engine up)")
    return Path(f"/proc/{pid}/ns/net")


def nsenter_prefix(mount: bool = False) -> list[str]:
    """``nsenter`` arguments that run a command inside the engine's network namespace (and,
    with ``mount``, its mount namespace, where ``/run`` is the engine's own)."""
    net = netns()
    prefix = ["nsenter", f"--net={net}"]
    if mount:
        prefix.append(f"--mount={net.parent / 'mnt'}")
    return [*prefix, "--"]


def missing_tools() -> list[str]:
    return [t for t in ("dockerd", "containerd", "runc", "unshare", "ip") if not shutil.which(t)]


def install() -> None:
    """apt-get install Debian's docker.io when its daemons are missing (root only)."""
    if not missing_tools():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineError(
            f"missing {', '.join(missing_tools())}: install Debian's docker.io "
            "(apt-get install docker.io) or set DOCKER_HOST to an engine that answers"
        )
    _log("installing Debian's docker.io (apt-get) ...")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env)
    if missing := missing_tools():
        raise EngineError(f"still missing after apt-get install docker.io: {', '.join(missing)}")


def up(timeout: float = START_TIMEOUT) -> str:
    """Start the engine unless it answers already; return the DOCKER_HOST value."""
    if running():
        return docker_host()
    with file_lock(state_dir() / "up.lock"):
        return _start(timeout)


def _start(timeout: float) -> str:
    if running():  # another process started it while this one waited for the lock
        return docker_host()
    if os.geteuid() != 0:
        raise EngineError("the engine needs root (namespaces, mounts, cgroups)")
    install()
    stale = _read_pid(_pid_file())
    if stale is not None:
        _log(f"a supervisor (pid {stale}) runs but dockerd does not answer; restarting it")
        down()
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    socket_path().unlink(missing_ok=True)
    _log(f"starting containerd and dockerd in a private network namespace (state: {state})")
    started = time.monotonic()
    log = open(state / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    env = os.environ | {"PYTHONPATH": str(REPO)}
    env.pop("DOCKER_HOST", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devkit.engine.supervisor", str(state)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        start_new_session=True,
    )
    log.close()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(
                f"the engine's supervisor exited ({proc.returncode}); see {state}/supervisor.log, "
                f"{state}/containerd.log and {state}/dockerd.log"
            )
        if ping():
            _log(f"engine up in {time.monotonic() - started:.1f} s: DOCKER_HOST={docker_host()}")
            return docker_host()
        time.sleep(0.2)
    raise EngineError(f"dockerd did not answer within {timeout:.0f} s; see {state}/dockerd.log")


def ensure() -> str:
    """The DOCKER_HOST value of a running engine, started when it is not."""
    return up()


def down(timeout: float = 30.0) -> bool:
    """Stop the engine (both daemons, the namespace with them). False when none ran."""
    pid = _read_pid(_pid_file())
    if pid is None:
        socket_path().unlink(missing_ok=True)
        return False
    _log(f"stopping the engine (supervisor pid {pid}) ...")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _read_pid(_pid_file()) == pid:
        time.sleep(0.2)
    if _read_pid(_pid_file()) == pid:
        _log("the supervisor did not stop in time; killing its process group")
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    _pid_file().unlink(missing_ok=True)
    _inner_pid_file().unlink(missing_ok=True)
    socket_path().unlink(missing_ok=True)
    return True


def selected_host() -> str:
    """The engine to use: the one DOCKER_HOST names, else this one (started when needed)."""
    named = os.environ.get("DOCKER_HOST", "")
    if named and named != docker_host():
        return named
    return ensure()


def docker_env() -> dict[str, str]:
    """The environment for a docker CLI talking to the selected engine. BuildKit is off: the
    classic builder needs no frontend image from a registry (`# syntax=` lines are ignored)."""
    return os.environ | {"DOCKER_HOST": selected_host(), "DOCKER_BUILDKIT": "0"}


def docker(
    *args: str, check: bool = True, capture: bool = False, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the docker CLI against the selected engine; ``capture`` collects stdout, stderr."""
    cli = shutil.which("docker")
    if cli is None:
        raise EngineError("no docker CLI on PATH (Debian's docker.io ships one)")
    return subprocess.run(
        [cli, *args], env=docker_env(), check=check, input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )


def docker_out(*args: str) -> str:
    """A docker command's stdout, stripped; raises EngineError with its stderr on failure."""
    done = docker(*args, check=False, capture=True)
    if done.returncode != 0:
        raise EngineError(f"docker {' '.join(args[:2])} failed: {done.stderr.decode().strip()}")
    return done.stdout.decode().strip()


def status() -> dict[str, str]:
    pid = _read_pid(_pid_file())
    return {
        "state": str(state_dir()),
        "supervisor": f"pid {pid}" if pid else "not running",
        "dockerd": "answering" if ping() else "not answering",
        "DOCKER_HOST": docker_host(),
    }
