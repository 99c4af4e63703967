"""The container sandbox on this machine's kernel: no API server, but root, namespaces,
overlayfs and cgroups. Skipped where those are not available."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.localnode import logs
from devkit.localnode.cgroups import Cgroups
from devkit.localnode.sandbox import (
    REPO_ROOT,
    Container,
    ContainerSpec,
    hidden_paths,
    kill_leftovers,
    runtime_paths,
    runtime_paths_to_bind,
)
from devkit.localnode.volumes import Mount

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
    reason="the sandbox needs root and util-linux's unshare and setpriv",
)

PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


@pytest.fixture
def cgroups(tmp_path: Path) -> Iterator[Cgroups | None]:
    found = Cgroups.detect(f"unit-{tmp_path.name}")
    yield found
    if found is not None:
        found.remove_all(including_parent=True)


def run(tmp_path: Path, cgroups: Cgroups | None, argv: list[str], **options: object
        ) -> Container:
    spec = ContainerSpec(
        name="main", cgroup_name=f"{tmp_path.name}-main",
        state_dir=tmp_path / "pods" / "uid" / "containers" / "main-0",
        log_path=tmp_path / "logs" / "0.log", pid_file=tmp_path / "pods" / "uid" / "pids" / "main",
        argv=argv, **{"env": {"PATH": PATH}, **options},  # type: ignore[arg-type]
    )
    container = Container(spec, cgroups, lambda _c: None)
    container.start()
    return container


def _runtime_entries_in_tmp() -> list[str]:
    """A private /tmp is empty but for the checkout or virtualenv, when they live there."""
    return sorted({p.split("/")[2] for p in runtime_paths_to_bind() if p.startswith("/tmp/")})


def output(tmp_path: Path) -> str:
    return "".join(logs.content_lines(tmp_path / "logs" / "0.log"))


def test_volumes_read_only_root_private_tmp_user_and_termination_file(
    tmp_path: Path, cgroups: Cgroups | None
) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "key").write_text("from-the-volume")
    script = "\n".join([
        "import os",
        "print(open('/var/run/cfg/key').read(), os.getuid(), os.getgid(), os.getgroups())",
        "print(os.getpid() != 1, sorted(os.listdir('/tmp')), os.getcwd())",
        "for path in ('/etc/x', '/var/run/cfg/y'):",
        "    try: open(path, 'w')",
        "    except OSError as e: print(path, e.strerror)",
        "open('/tmp/scratch', 'w').write('ok')",
        "open('/dev/termination-log', 'w').write('done here')",
        "raise SystemExit(4)",
    ])
    container = run(tmp_path, cgroups, ["python", "-c", script],
                    mounts=[Mount(volume, "/var/run/cfg", True)], uid=1000, gid=1000,
                    groups=[2000], read_only_root=True, working_dir="/work/here",
                    termination_message_path="/dev/termination-log")
    assert container.exited.wait(30)
    assert container.result is not None and container.result.exit_code == 4
    assert container.termination_file == b"done here"
    assert output(tmp_path) == (
        "from-the-volume 1000 1000 [2000]\n"
        f"True {_runtime_entries_in_tmp()} /work/here\n"
        "/etc/x Read-only file system\n"
        "/var/run/cfg/y Read-only file system\n"
    )
    assert not Path("/var/run/cfg").exists()  # the mount point lives in the overlay only
    assert not Path("/tmp/scratch").exists()


def test_sigterm_reaches_the_command_and_sigkill_follows_the_grace(
    tmp_path: Path, cgroups: Cgroups | None
) -> None:
    script = ("import signal, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)")
    container = run(tmp_path, cgroups, ["python", "-c", script])
    assert container.running.wait(10) and container.pid is not None
    pid_file = tmp_path / "pods" / "uid" / "pids" / "main"
    assert int(pid_file.read_text()) == container.pid
    deadline = time.monotonic() + 10
    while "ready" not in output(tmp_path):  # the handler is in place
        assert time.monotonic() < deadline
        time.sleep(0.02)
    container.stop(grace=0.5)
    assert container.result is not None
    assert (container.result.exit_code, container.result.signal) == (137, 9)
    assert not Path(f"/proc/{container.pid}").exists()


def test_an_emptydir_at_tmp_does_not_hide_the_runtime(
    tmp_path: Path, cgroups: Cgroups | None
) -> None:
    # Run Jobs mount an emptyDir at /tmp; a checkout or virtualenv living under /tmp (a CI
    # clone) must still be reachable for `python` to start.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    container = run(tmp_path, cgroups, ["python", "-c", "print('started')"],
                    mounts=[Mount(scratch, "/tmp", False)], uid=1000, gid=1000,
                    read_only_root=True)
    assert container.exited.wait(30)
    assert container.result is not None, "no result"
    assert (container.result.exit_code, container.result.start_error) == (0, None)
    assert output(tmp_path) == "started\n"


def test_a_missing_executable_is_a_start_error(tmp_path: Path,
                                               cgroups: Cgroups | None) -> None:
    container = run(tmp_path, cgroups, ["no-such-program"])
    assert container.exited.wait(30)
    assert container.result is not None
    assert container.result.exit_code == 128
    assert container.result.start_error == "cannot run 'no-such-program': No such file or directory"


def test_memory_limit_ends_in_an_oom_kill(tmp_path: Path, cgroups: Cgroups | None) -> None:
    if cgroups is None:
        pytest.skip("no memory cgroup controller here")
    container = run(tmp_path, cgroups, ["python", "-c", "b = bytearray(256 * 2**20)"],
                    memory_limit=48 * 2**20)
    assert container.exited.wait(30)
    assert container.result is not None
    assert (container.result.exit_code, container.result.oom_killed) == (137, True)


def test_leftovers_of_a_crashed_node_are_killed(tmp_path: Path,
                                               cgroups: Cgroups | None) -> None:
    container = run(tmp_path, None, ["sleep", "60"])
    assert container.running.wait(10) and container.pid is not None
    done = threading.Event()
    threading.Thread(target=lambda: done.set() if container.exited.wait(10) else None).start()
    kill_leftovers(tmp_path)
    assert done.wait(10)
    assert not Path(f"/proc/{container.pid}").exists()


def test_the_checkout_is_hidden_but_for_the_runtime(tmp_path: Path,
                                                    cgroups: Cgroups | None) -> None:
    script = ("import os, docrelay\n"
              f"print(sorted(os.listdir({str(REPO_ROOT)!r})))\n"
              f"print(os.path.exists({str(REPO_ROOT / 'README.md')!r}))")
    container = run(tmp_path, cgroups, ["python", "-c", script], uid=65532, gid=65532,
                    read_only_root=True, hidden=hidden_paths())
    assert container.exited.wait(30)
    assert container.result is not None and container.result.exit_code == 0, output(tmp_path)
    runtime = sorted({Path(p).relative_to(REPO_ROOT).parts[0] for p in runtime_paths()
                      if Path(p).is_relative_to(REPO_ROOT)})
    assert output(tmp_path) == f"{runtime}\nFalse\n"


def test_what_the_image_would_hold_is_offered_at_its_own_path_to_any_user(
    tmp_path: Path, cgroups: Cgroups | None
) -> None:
    # A runner-node:<major> image's Node.js (devkit/toolchain/node.py caches it outside the
    # container's view, here under /tmp, which the container gets a private copy of).
    runtime = tmp_path / "node-22.0.0-x64"
    (runtime / "bin").mkdir(parents=True)
    (runtime / "bin" / "node").write_text("#!/bin/sh\necho v22.0.0 from the image runtime\n")
    (runtime / "bin" / "node").chmod(0o755)
    tmp_path.chmod(0o700)  # as a home directory may be: the user gets search permission only
    container = run(tmp_path, cgroups, ["sh", "-c", "node; ls /tmp"], uid=65532, gid=65532,
                    read_only_root=True, image_runtime=[str(runtime)],
                    env={"PATH": f"{runtime}/bin:{PATH}"})
    assert container.exited.wait(30)
    assert container.result is not None and container.result.exit_code == 0, output(tmp_path)
    assert output(tmp_path).splitlines()[0] == "v22.0.0 from the image runtime"


def test_a_pod_pids_limit_stops_forks(tmp_path: Path, cgroups: Cgroups | None) -> None:
    if cgroups is None or cgroups.pids_parent is None:
        pytest.skip("no pids cgroup controller here")
    pod = cgroups.create_pod(f"{tmp_path.name}-pod", 16)
    script = ("import subprocess\n"
              "children = []\n"
              "try:\n"
              "    while True: children.append(subprocess.Popen(['sleep', '30']))\n"
              "except OSError as exc: print(len(children), exc.strerror)\n"
              "for child in children: child.kill()")
    container = run(tmp_path, cgroups, ["python", "-c", script], pod_cgroup=pod)
    assert container.exited.wait(30)
    assert container.result is not None and container.result.exit_code == 0, output(tmp_path)
    # 16 pids: the container's init, python, and 14 children.
    assert output(tmp_path) == "14 Resource temporarily unavailable\n"
    assert pod is not None
    cgroups.remove(pod)
