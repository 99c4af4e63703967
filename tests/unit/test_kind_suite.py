"""`make e2e-kind` where docker or kind is missing: it stops at once, says why, and creates
nothing (`make images` is tested by tests/images). The suite itself (tests/e2e) needs docker
and kind."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e import kind_suite

REPO = Path(__file__).resolve().parents[2]


def test_missing_tools_are_named() -> None:
    def nothing(name: str) -> str | None:
        return None

    problems = kind_suite.missing_tools(which=nothing, answers=lambda argv: True)
    assert len(problems) == 4
    assert "no container engine" in problems[0]
    assert any("kind" in p and "make toolchain builds it" in p for p in problems)

    def everything(name: str) -> str | None:
        return f"/usr/bin/{name}"

    assert kind_suite.missing_tools(which=everything, answers=lambda argv: True) == []
    stopped = kind_suite.missing_tools(
        which=everything, answers=lambda argv: False, private_engine=lambda: False
    )
    assert stopped == ["`docker info` fails: the container engine is not running"]
    # No engine answers, but this machine can run Docker in a private namespace (root and
    # Debian's docker.io): devkit.engine starts it, so nothing is missing.
    assert kind_suite.missing_tools(
        which=everything, answers=lambda argv: False, private_engine=lambda: True
    ) == []


def test_kind_comes_from_the_toolchain_when_go_can_build_it(monkeypatch) -> None:
    monkeypatch.delenv("KIND", raising=False)
    only_go = {"go": "/usr/bin/go"}
    assert kind_suite.kind_command(which=only_go.get) == "toolchain"
    assert kind_suite.kind_command(which={}.get) is None
    monkeypatch.setenv("KIND", "/nonexistent/kind")
    assert kind_suite.kind_command(which=only_go.get) is None  # an explicit KIND must exist


def test_this_machines_patches_follow_its_cgroups_and_capabilities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    full, lacking = tmp_path / "full", tmp_path / "lacking"
    full.write_text("CapBnd:\t000001ffffffffff\n")
    lacking.write_text("CapBnd:\t000001fffeffffff\n")  # no CAP_SYS_RESOURCE (bit 24)

    assert kind_suite.machine_patches(v2, full) == ""
    both = yaml.safe_load(kind_suite.machine_patches(v1, lacking))
    assert yaml.safe_load(both["kubeadmConfigPatches"][0]) == {
        "kind": "KubeletConfiguration", "failCgroupV1": False,
    }
    assert "restrict_oom_score_adj = true" in both["containerdConfigPatches"][0]
    only_cgroup = yaml.safe_load(kind_suite.machine_patches(v1, full))
    assert list(only_cgroup) == ["kubeadmConfigPatches"]
    # Added to kind-config.yaml's own patches (which stay first), one valid kind config.
    monkeypatch.setattr(kind_suite, "STATE", tmp_path / "state")
    config = yaml.safe_load(kind_suite.cluster_config(kind_suite.machine_patches(v1, lacking))
                            .read_text())  # fmt: skip
    assert config["name"] == kind_suite.CLUSTER
    assert [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]] == [
        {"kind": "KubeletConfiguration", "podPidsLimit": 1024},
        {"kind": "KubeletConfiguration", "failCgroupV1": False},
    ]
    assert "restrict_oom_score_adj = true" in config["containerdConfigPatches"][0]
    assert kind_suite.cluster_config("") == kind_suite.CONFIG  # a machine that needs none


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """Not silent: make echoes every recipe line it reaches after the first (the check is
    `@`-quiet), so stdout shows whether any later step ran."""
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_e2e_kind_stops_at_once_without_docker_and_kind() -> None:
    result = make("e2e-kind", "DOCKER=/nonexistent/docker", "KIND=/nonexistent/kind")
    # Stopped by the tools check itself (its exit code), before the venv, images or cluster.
    assert result.returncode != 0
    assert re.search(rf"\[Makefile:\d+: e2e-kind\] Error {kind_suite.EXIT_MISSING}$", result.stderr)
    assert result.stdout == ""  # no later recipe line was reached
    assert "make e2e-kind: cannot run here; nothing was created" in result.stderr
    assert "/nonexistent/docker" in result.stderr and "/nonexistent/kind" in result.stderr
    assert "kind create" not in result.stdout + result.stderr


def test_kind_config_names_the_suites_cluster() -> None:
    text = (REPO / "kind-config.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["name"] == kind_suite.CLUSTER
    # The per-pod process limit runs rely on (a pod spec cannot set one; docs/chart.md).
    kubelet = [yaml.safe_load(p) for p in config["kubeadmConfigPatches"]]
    assert {"kind": "KubeletConfiguration", "podPidsLimit": 1024} in kubelet
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]
    assert text.count("\n#") + text.count("  #") >= 5  # commented


def makefile_default(name: str) -> str:
    """`NAME ?= value` in the Makefile: what `make images` builds when nothing is set."""
    found = re.search(rf"^{name} \?= (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert found, name
    return found.group(1).strip()


def test_the_suite_loads_every_image_make_images_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """One list of runner images: the Makefile's defaults, read by devkit.images, which the
    kind suite (and the real node, tests/unit/test_realnode.py) load from."""
    for name in ("IMAGE_REPO", "IMAGE_TAG", "RUNNER_PYTHONS", "RUNNER_NODES"):
        monkeypatch.delenv(name, raising=False)
    repo, tag = makefile_default("IMAGE_REPO"), makefile_default("IMAGE_TAG")
    nodes = makefile_default("RUNNER_NODES").split()
    assert nodes == ["20", "22", "24", "26"]
    assert kind_suite.images() == [
        f"{repo}/docrelay:{tag}",
        *(f"{repo}/runner:{p}" for p in makefile_default("RUNNER_PYTHONS").split()),
        *(f"{repo}/runner-node:{n}" for n in nodes),
    ]
    # `make e2e-kind RUNNER_NODES=24` (the Makefile exports it) loads only that one.
    monkeypatch.setenv("RUNNER_NODES", "24")
    assert [i for i in kind_suite.images() if "runner-node" in i] == [f"{repo}/runner-node:24"]
