"""Pod spec readings: identity, limits, environment defaults, restarts; and the sandbox's
path resolution inside a container root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from devkit.localnode import podspec
from devkit.localnode.env import ConfigError
from devkit.localnode.node import Machine, node_object, ready_conditions
from devkit.localnode.sandbox_init import inside


@pytest.mark.parametrize(
    ("pod_ctx", "ctx", "expected"),
    [
        ({}, {}, podspec.Identity(0, 0, [], False)),
        ({"runAsUser": 1000, "runAsGroup": 1000}, {}, podspec.Identity(1000, 1000, [], False)),
        ({"runAsUser": 1000, "runAsGroup": 1000}, {"runAsUser": 2000},
         podspec.Identity(2000, 1000, [], False)),
        ({"runAsUser": 1, "runAsGroup": 1, "fsGroup": 5, "supplementalGroups": [6, 7]},
         {"readOnlyRootFilesystem": True}, podspec.Identity(1, 1, [5, 6, 7], True)),
        ({"runAsNonRoot": True, "runAsUser": 10, "runAsGroup": 10}, {},
         podspec.Identity(10, 10, [], False)),
    ],
)
def test_identity(pod_ctx: dict[str, Any], ctx: dict[str, Any],
                  expected: podspec.Identity) -> None:
    pod = {"spec": {"securityContext": pod_ctx}}
    assert podspec.identity(pod, {"securityContext": ctx}) == expected


def test_run_as_non_root_refuses_root() -> None:
    with pytest.raises(ConfigError, match="runAsNonRoot"):
        podspec.identity({"spec": {"securityContext": {"runAsNonRoot": True}}}, {})


@pytest.mark.parametrize(
    ("limits", "expected"),
    [({}, None), ({"memory": "64Mi"}, 64 * 2**20), ({"memory": "1G"}, 10**9),
     ({"cpu": "1"}, None)],
)
def test_memory_limit(limits: dict[str, str], expected: int | None) -> None:
    assert podspec.memory_limit({"resources": {"limits": limits}}) == expected


def test_base_env_puts_this_python_first() -> None:
    env = podspec.base_env({"metadata": {"name": "p"}, "spec": {}}, 0, "/venv/bin")
    assert env["PATH"] == "/venv/bin:/usr/local/bin:/usr/bin:/bin"
    assert env["HOSTNAME"] == "p"


def test_base_env_puts_what_the_image_would_hold_before_this_python() -> None:
    env = podspec.base_env({"metadata": {"name": "p"}, "spec": {}}, 0, "/venv/bin",
                           first=("/cache/node-22.23.5-x64/bin",))
    assert env["PATH"] == "/cache/node-22.23.5-x64/bin:/venv/bin:/usr/local/bin:/usr/bin:/bin"


@pytest.mark.parametrize(
    ("image", "major"),
    [
        ("ghcr.io/docrelay/runner-node:22", "22"),  # the operator's default for nodejs "22"
        ("ghcr.io/docrelay/runner-node:20", "20"),
        ("registry.local:5000/team/runner-node:20.20.2", "20"),
        ("runner-node:22@sha256:" + "0" * 64, "22"),
        ("node:22-bookworm-slim", "22"),
        ("docker.io/library/node:20", "20"),
        ("ghcr.io/docrelay/runner:3.12", None),  # Python's run image
        ("ghcr.io/docrelay/runner-node", None),  # no tag: the host's node
        ("node:lts-slim", None),
        ("registry.local:5000/runner-node-tools:22", None),
        ("", None),
    ],
)
def test_node_major_reads_the_node_line_an_image_holds(image: str, major: str | None) -> None:
    assert podspec.node_major(image) == major


@pytest.mark.parametrize(
    ("policy", "code", "restart"),
    [("Never", 1, False), ("Never", 0, False), ("OnFailure", 1, True),
     ("OnFailure", 0, False), ("Always", 0, True), ("Always", 2, True)],
)
def test_should_restart(policy: str, code: int, restart: bool) -> None:
    assert podspec.should_restart(policy, code) is restart


def test_backoff_doubles_to_a_cap() -> None:
    assert [podspec.backoff(n) for n in (1, 2, 3, 4, 5, 6, 10)] == [
        1, 2, 4, 8, 16, 20, 20]


def test_sidecars_are_reported_unsupported() -> None:
    pod = {"spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}]}}
    assert "sidecar" in (podspec.unsupported(pod) or "")
    assert podspec.unsupported({"spec": {"initContainers": [{"name": "x"}]}}) is None


def test_paths_resolve_inside_the_container_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")  # absolute: must stay under root
    (root / "etc").mkdir()
    (root / "etc" / "alt").symlink_to("../run/x")
    r = str(root)
    assert inside(r, "/var/run/secrets/token") == f"{r}/run/secrets/token"
    assert inside(r, "/etc/alt/y") == f"{r}/run/x/y"
    assert inside(r, "/../../etc") == f"{r}/etc"
    assert inside(r, "/") == r


def test_node_status_shape() -> None:
    machine = Machine(cpus=2, memory_kib=1024, storage_bytes=10, hostname="vm", kernel="6",
                      os_image="Debian", arch="amd64", machine_id="m", boot_id="b")
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    node = node_object("local-node", machine, 10250, "v1.36.3", now, [])
    status = node["status"]
    assert status["capacity"] == {"cpu": "2", "memory": "1024Ki", "pods": "110",
                                  "ephemeral-storage": "10"}
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    later = ready_conditions(now + dt.timedelta(minutes=1), status["conditions"])
    again = next(c for c in later if c["type"] == "Ready")
    assert again["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert again["lastHeartbeatTime"] == "2030-01-01T00:01:00Z"
