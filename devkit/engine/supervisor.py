"""The engine's supervisor: ``python -m devkit.engine.supervisor [--inside] STATE``.

Outside (started by ``devkit.engine.up`` as a session leader): records its pid, starts
``unshare --net --mount --fork --kill-child`` running this module ``--inside``, and on SIGTERM
asks the inside half to stop, then waits for it.

Inside the new namespaces: brings ``lo`` up, mounts a fresh tmpfs on ``/run`` (containerd's
socket and shim sockets, Docker's exec root and pid file live there and nowhere else), starts
containerd and dockerd with their data under STATE and the Docker socket at STATE/docker.sock,
and on SIGTERM stops dockerd (which stops its containers) and then containerd. If either
daemon exits on its own the other is stopped too, so the engine is whole or gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from devkit.engine import bounded_runc

STOP_TIMEOUT = 25.0


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} supervisor[{os.getpid()}]: {message}", flush=True)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not create {path} within {timeout:.0f} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    _log(f"stopping {what} (pid {proc.pid})")
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _log(f"{what} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it")
        proc.kill()
        proc.wait()


def containerd_config(state: Path) -> str:
    # /run/containerd (the default state and socket) is the namespace's own tmpfs; the image
    # store and snapshots persist under STATE. The CRI plugin is for kubelets, not dockerd.
    return "\n".join([
        "version = 2",
        f'root = "{state}/containerd"',
        'state = "/run/containerd"',
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        "[grpc]",
        '  address = "/run/containerd/containerd.sock"',
        "",
    ])


def daemon_config(state: Path) -> str:
    """dockerd's config: runc behind bounded_runc, so a privileged container (kind's nodes)
    gets the capabilities this machine's bounding set holds instead of failing."""
    runtime = bounded_runc.install(state)
    return json.dumps(
        {"runtimes": {"bounded-runc": {"path": str(runtime)}}, "default-runtime": "bounded-runc"}
    ) + "\n"


def inside(state: Path) -> int:
    (state / "namespace.pid").write_text(f"{os.getpid()}\n")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    config = state / "containerd.toml"
    config.write_text(containerd_config(state))
    daemon_json = state / "daemon.json"
    daemon_json.write_text(daemon_config(state))
    stopping = False
    containerd: subprocess.Popen[bytes] | None = None
    dockerd: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        with open(state / "containerd.log", "ab") as log:
            containerd = subprocess.Popen(
                ["containerd", "--config", str(config)], stdout=log, stderr=log,
                stdin=subprocess.DEVNULL,
            )
        _wait_for(Path("/run/containerd/containerd.sock"), containerd, "containerd", 30)
        _log(f"containerd up (pid {containerd.pid})")
        sock = state / "docker.sock"
        sock.unlink(missing_ok=True)
        with open(state / "dockerd.log", "ab") as log:
            dockerd = subprocess.Popen(
                [
                    "dockerd",
                    "--config-file", str(daemon_json),
                    "--host", f"unix://{sock}",
                    "--containerd", "/run/containerd/containerd.sock",
                    "--data-root", str(state / "docker"),
                    "--exec-root", "/run/docker",
                    "--pidfile", "/run/docker.pid",
                    "--exec-opt", "native.cgroupdriver=cgroupfs",
                    "--storage-driver", "overlay2",
                ],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        _wait_for(sock, dockerd, "dockerd", 60)
        _log(f"dockerd up (pid {dockerd.pid}), socket {sock}")
        while not stopping:
            for proc, what in ((containerd, "containerd"), (dockerd, "dockerd")):
                if proc.poll() is not None:
                    _log(f"{what} exited on its own ({proc.returncode}); stopping the engine")
                    stopping = True
            time.sleep(0.5)
    finally:
        _stop(dockerd, "dockerd")
        _stop(containerd, "containerd")
        (state / "docker.sock").unlink(missing_ok=True)
    _log("stopped")
    return 0


def outside(state: Path) -> int:
    pid_file = state / "supervisor.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    child = subprocess.Popen(
        [
            "unshare", "--net", "--mount", "--propagation", "private", "--fork", "--kill-child",
            "--", sys.executable, "-m", "devkit.engine.supervisor", "--inside", str(state),
        ],
        stdin=subprocess.DEVNULL,
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        try:
            inner = int((state / "namespace.pid").read_text().strip())
            os.kill(inner, signal.SIGTERM)
        except (OSError, ValueError):
            child.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return child.wait()
    finally:
        (state / "namespace.pid").unlink(missing_ok=True)
        if pid_file.read_text().strip() == str(os.getpid()):
            pid_file.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--inside":
        return inside(Path(argv[1]))
    return outside(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
