"""The kind tier: real images on a real kubelet, where a container engine exists."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def container_engine_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    # `docker --version` answers without an engine; `docker info` needs one.
    return subprocess.run([docker, "info"], capture_output=True, check=False).returncode == 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if container_engine_available():
        return
    skip = pytest.mark.skip(
        reason="no container engine (docker info fails): the kind tier needs one; "
        "tests/cluster covers the same behaviour on the local control plane"
    )
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)
