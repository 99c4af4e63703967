"""Kubeconfig files for the local cluster, one per client identity."""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "docrelay-local"


def write(path: Path, *, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """A kubeconfig with one cluster, one user (a client certificate) and one context."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": user, "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
