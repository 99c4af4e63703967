"""How the harness finds the control plane's binaries: environment, cache, then a build."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devkit import toolchain


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("binary", "variable"),
    [
        ("kube-apiserver", "DOCRELAY_KUBE_APISERVER"),
        ("kube-controller-manager", "DOCRELAY_KUBE_CONTROLLER_MANAGER"),
        ("kube-scheduler", "DOCRELAY_KUBE_SCHEDULER"),
        ("kubectl", "DOCRELAY_KUBECTL"),
        ("etcd", "DOCRELAY_ETCD"),
        ("etcdctl", "DOCRELAY_ETCDCTL"),
        ("helm", "DOCRELAY_HELM"),
    ],
)
def test_environment_variable_names_each_binary(binary: str, variable: str) -> None:
    assert toolchain.env_var_for(binary) == variable


def test_environment_variable_wins_over_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path / "cache"))
    cached = toolchain.COMPONENTS["etcd"].cache_dir / "bin" / "etcd"
    _executable(cached)
    explicit = _executable(tmp_path / "elsewhere" / "etcd")
    assert toolchain.find("etcd") == cached
    monkeypatch.setenv("DOCRELAY_ETCD", str(explicit))
    assert toolchain.find("etcd") == explicit


def test_environment_variable_pointing_nowhere_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRELAY_KUBECTL", str(tmp_path / "missing"))
    with pytest.raises(toolchain.ToolchainError, match=r"DOCRELAY_KUBECTL=.* is not an executable"):
        toolchain.find("kubectl")


def test_missing_binary_is_not_found_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DOCRELAY_HELM", raising=False)
    assert toolchain.find("helm") is None


def test_unknown_binary_lists_the_known_ones() -> None:
    with pytest.raises(toolchain.ToolchainError, match=r"known: .*kube-apiserver"):
        toolchain.find("kube-nothing")


def test_make_toolchain_never_builds_the_real_node(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    monkeypatch.setattr(toolchain, "ensure", lambda b, log=None: built.append(b) or Path(b))
    toolchain.ensure_all()
    assert "kube-apiserver" in built and "helm" in built
    assert not set(built) & set(toolchain.realnode_binaries())
    assert set(toolchain.realnode_binaries()) == {
        "kubelet", "kube-proxy", "containerd", "ctr", "containerd-shim-runc-v2", "runc",
        "coredns", "kube-router",
    }


def test_cache_lives_outside_the_repository_keyed_by_version_and_pins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DOCRELAY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/example")
    kubernetes = toolchain.COMPONENTS["kubernetes"]
    assert kubernetes.cache_dir == Path(
        f"/var/cache/example/docrelay/toolchain/kubernetes-{kubernetes.version}-"
        f"{kubernetes.pins_digest}"
    )


@pytest.mark.parametrize("name", sorted(toolchain.COMPONENTS))
def test_every_build_module_pins_its_version_and_hashes(name: str) -> None:
    component = toolchain.COMPONENTS[name]
    assert component.version.startswith("v")
    go_sum = (component.module_dir / "go.sum").read_text()
    assert f"{component.pinned_module} {component.version} h1:" in go_sum
    for package in component.binaries.values():
        assert package in (component.module_dir / "go.mod").read_text()


def test_kubernetes_release_is_recent_and_every_staging_module_matches_it() -> None:
    kubernetes = toolchain.COMPONENTS["kubernetes"]
    minor = int(kubernetes.version.split(".")[1])
    assert minor >= 35, "pin a Kubernetes release from the last twelve months"
    staging_version = "v0." + kubernetes.version.split(".", 1)[1]
    replaces = [
        line.split()
        for line in (kubernetes.module_dir / "go.mod").read_text().splitlines()
        if "=>" in line
    ]
    assert len(replaces) >= 30
    assert all(r[0] == r[2] and r[3] == staging_version for r in replaces), replaces


def test_version_stamp_reaches_kubectl_version() -> None:
    flags = " ".join(toolchain.COMPONENTS["kubernetes"].ldflags("v1.36.3"))
    assert "k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "k8s.io/client-go/pkg/version.gitVersion=v1.36.3" in flags
    assert "gitMinor=36" in flags


def test_build_without_go_says_how_to_proceed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with pytest.raises(toolchain.ToolchainError, match=r"DOCRELAY_<BINARY>"):
        toolchain._go_env()


def test_bin_dir_links_the_binaries_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCRELAY_CACHE_DIR", str(tmp_path / "cache"))
    first = _executable(tmp_path / "v1" / "kubectl")
    second = _executable(tmp_path / "v2" / "kubectl")
    directory = toolchain.link_bin_dir({"kubectl": first})
    assert directory == tmp_path / "cache" / "bin"
    assert (directory / "kubectl").resolve() == first
    toolchain.link_bin_dir({"kubectl": second})  # a newer pin replaces the link in place
    assert (directory / "kubectl").resolve() == second
