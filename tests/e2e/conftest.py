"""The e2e tier: real images on a real kubelet and CNI. `make e2e-node` (devkit/realnode: the
devkit control plane with a real node) or `make e2e-kind` (tests/e2e/kind_suite.py) creates the
cluster, loads the images and runs these tests with DOCRELAY_E2E_CONTEXT set; anywhere else
(`make test`) they are skipped."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("DOCRELAY_E2E_CONTEXT"):
        return
    skip = pytest.mark.skip(
        reason="the e2e tier runs through `make e2e-node` (a real node here) or `make e2e-kind`; "
        "tests/cluster covers the same behaviour on the local control plane"
    )
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)
