"""`kubectl docrelay ...` works: the CLI installs as a kubectl plugin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kubernetes import client


def _kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    # kubectl finds plugins on PATH; the virtualenv's bin holds kubectl-docrelay.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path}, check=False)


def test_kubectl_lists_the_plugin() -> None:
    listed = _kubectl("plugin", "list")
    assert "kubectl-docrelay" in listed.stdout


def test_kubectl_docrelay_talks_to_the_cluster_kubectl_points_at(
    api: client.ApiClient, namespace: str
) -> None:
    result = _kubectl("docrelay", "revisions", "no-such-integration", "-n", namespace)
    assert result.returncode != 0
    assert f"no-such-integration not found in namespace {namespace}" in result.stderr

    help_text = _kubectl("docrelay", "--help")
    assert help_text.returncode == 0
    assert "revisions" in help_text.stdout and "deploy" in help_text.stdout
