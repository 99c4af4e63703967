"""devkit.kind's pure parts: the archive kind reads the node's extra images from, and the
NetworkPolicy enforcer it deploys where kindnetd's cannot run (docs/development.md, "kind")."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from devkit import kind


@pytest.mark.parametrize(
    ("name", "qualified"),
    [
        ("kindest/kindnetd:v1", "docker.io/kindest/kindnetd:v1"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("registry.k8s.io/coredns/coredns:v1.14.2", "registry.k8s.io/coredns/coredns:v1.14.2"),
        ("localhost/x:1", "localhost/x:1"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
    ],
)
def test_names_are_qualified_as_kind_spells_the_images_it_pulls(name: str, qualified: str) -> None:
    assert kind._qualified(name) == qualified


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def kinds_tags(path: Path) -> list[str]:
    """What kind's GetArchiveTags reads: the first of manifest.json (its first image's tags
    only) and repositories (every image's)."""
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name in ("manifest.json", "repositories"):
                doc = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                if member.name == "manifest.json":
                    return list(doc[0]["RepoTags"])
                return [f"{repo}:{tag}" for repo, tags in doc.items() for tag in tags]
    return []


def test_the_archive_names_every_image_to_kind_fully_qualified(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw.tar", tmp_path / "kube-proxy.tar"
    with tarfile.open(raw, "w") as tar:  # docker save's order: layers, manifest, repositories
        add(tar, "abc/layer.tar", b"layer")
        add(tar, "manifest.json", json.dumps([
            {"Config": "1.json", "RepoTags": ["registry.k8s.io/kube-proxy:v1.36.3"]},
            {"Config": "2.json", "RepoTags": ["kindest/kindnetd:v2"]},
        ]).encode())
        add(tar, "repositories", json.dumps({
            "registry.k8s.io/kube-proxy": {"v1.36.3": "1"}, "kindest/kindnetd": {"v2": "2"},
        }).encode())
    # docker save as is: kind would see only kube-proxy, and pull (and fail on) kindnetd.
    assert kinds_tags(raw) == ["registry.k8s.io/kube-proxy:v1.36.3"]

    kind.requalify(raw, out)
    assert sorted(kinds_tags(out)) == [
        "docker.io/kindest/kindnetd:v2", "registry.k8s.io/kube-proxy:v1.36.3",
    ]
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert tar.extractfile("abc/layer.tar").read() == b"layer"  # type: ignore[union-attr]
    assert names == ["repositories", "abc/layer.tar", "manifest.json"]
    assert manifest[1]["RepoTags"] == ["docker.io/kindest/kindnetd:v2"]


def test_kube_router_enforces_policies_only() -> None:
    items = {m["kind"]: m for m in kind.kube_router_manifests("docrelay.dev/kube-router:v2.1.0")}
    assert set(items) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
    pod = items["DaemonSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["hostNetwork"] is True
    assert container["image"] == "docrelay.dev/kube-router:v2.1.0"
    assert container["imagePullPolicy"] == "Never"  # it is in the node image; no registry
    assert {"--run-firewall=true", "--run-router=false", "--run-service-proxy=false"} <= set(
        container["args"]
    )
    verbs = {v for rule in items["ClusterRole"]["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list", "watch"}  # reads only
