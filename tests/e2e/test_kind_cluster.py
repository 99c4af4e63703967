"""A kind cluster from kind-config.yaml comes up and runs a pod (needs a container engine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "kind-config.yaml"


def test_kind_cluster_runs_a_pod() -> None:
    kind = shutil.which("kind")
    if kind is None:
        pytest.skip("kind is not installed (go install sigs.k8s.io/kind@latest)")
    subprocess.run([kind, "create", "cluster", "--config", str(CONFIG), "--wait", "120s"],
                   check=True)
    try:
        out = subprocess.run(
            ["kubectl", "--context", "kind-docrelay-e2e", "run", "hello", "--rm", "-i",
             "--restart=Never", "--image=python:3.11-slim", "--", "python", "-c", "print(42)"],
            capture_output=True, text=True, check=True, timeout=300,
        ).stdout
        assert "42" in out
    finally:
        subprocess.run([kind, "delete", "cluster", "--name", "docrelay-e2e"], check=False)
