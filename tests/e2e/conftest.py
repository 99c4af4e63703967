"""The kind tier: real images on a real kubelet and CNI. `make e2e-kind` (tests/e2e/kind_suite.py)
creates the cluster, loads the images and runs these tests with DOCRELAY_E2E_CONTEXT set;
anywhere else (`make test`, no container engine) they are skipped."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("DOCRELAY_E2E_CONTEXT"):
        return
    skip = pytest.mark.skip(
        reason="the kind tier runs through `make e2e-kind` (needs docker and kind); "
        "tests/cluster covers the same behaviour on the local control plane"
    )
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)
