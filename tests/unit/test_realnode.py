"""The real node's pure parts: its image archives, its DNS objects and its configuration."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from devkit.cluster.controlplane import SERVICE_CLUSTER_IP_RANGE, Cluster
from devkit.realnode import node, oci

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_image_archive_is_an_oci_layout_containerd_names(tmp_path: Path) -> None:
    archive = oci.write_archive(
        tmp_path / "img.tar",
        name="registry.example/thing:1.0",
        files=[oci.File("bin/thing", b"#!/bin/sh\n", 0o755)],
        entrypoint=["/bin/thing"],
        user="65532:65532",
    )
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    index = json.loads(members["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["io.containerd.image.name"] == "registry.example/thing:1.0"
    # Every blob is named by its content's digest, and the manifest points at real blobs.
    for name, data in members.items():
        if name.startswith("blobs/sha256/"):
            assert name.rsplit("/", 1)[1] == hashlib.sha256(data).hexdigest()
    manifest = json.loads(members["blobs/sha256/" + entry["digest"].split(":")[1]])
    config = json.loads(members["blobs/sha256/" + manifest["config"]["digest"].split(":")[1]])
    assert config["config"]["Entrypoint"] == ["/bin/thing"]
    assert config["config"]["User"] == "65532:65532"
    layer = members["blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]]
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as files:
        thing = files.getmember("bin/thing")
        assert thing.mode == 0o755 and files.extractfile(thing).read() == b"#!/bin/sh\n"  # type: ignore[union-attr]


def test_same_files_make_the_same_image(tmp_path: Path) -> None:
    def write(target: str) -> bytes:
        return oci.write_archive(
            tmp_path / target, name="x:1", files=[oci.File("a", b"1")], entrypoint=["/a"]
        ).read_bytes()

    assert write("one.tar") == write("two.tar")


def test_cluster_dns_is_what_the_charts_run_policy_allows() -> None:
    """The run pods' NetworkPolicy allows DNS only to the pods the chart names: CoreDNS here
    must be exactly those, or every run fails to resolve the gateway on a real node."""
    values = yaml.safe_load((REPO_ROOT / "charts/docrelay/values.yaml").read_text())
    dns = values["networkPolicy"]["dns"]
    objects = {(o["kind"], o["metadata"]["name"]): o for o in node.coredns_manifests()}
    deployment = objects[("Deployment", "coredns")]
    assert deployment["metadata"]["namespace"] == "kube-system"
    assert dns["namespaceSelector"] == {"kubernetes.io/metadata.name": "kube-system"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert dns["podSelector"].items() <= pod_labels.items()
    service = objects[("Service", "kube-dns")]
    assert service["spec"]["clusterIP"] == node.CLUSTER_DNS
    assert ipaddress.ip_address(node.CLUSTER_DNS) in ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)


def test_this_machines_two_settings_are_set(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", with_node=False, advertise_address=node.NODE_IP)
    real = node.RealNode(tmp_path / "node", cluster)
    real.binaries = {b: Path("/bin") / b for b in ("kubelet", "containerd", "runc")}
    (tmp_path / "node").mkdir()
    kubelet = yaml.safe_load(Path(real._kubelet_args()[1].split("=", 1)[1]).read_text())
    assert kubelet["failCgroupV1"] is False
    assert kubelet["cgroupDriver"] == "cgroupfs"
    config = Path(real._containerd_args()[2]).read_text()
    assert "restrict_oom_score_adj = true" in config
    # The API server is reachable from pods only on the node's address, inside the namespace.
    args = cluster._apiserver_args(Path("kube-apiserver"))
    assert f"--advertise-address={node.NODE_IP}" in args
    assert "--endpoint-reconciler-type=lease" in args
    local = Cluster(tmp_path / "local")._apiserver_args(Path("kube-apiserver"))
    assert "--bind-address=127.0.0.1" in local and "--endpoint-reconciler-type=none" in local


def test_a_runs_cgroups_are_removed_and_only_its_own(tmp_path: Path) -> None:
    mine = node.cgroup_name(tmp_path / "docrelay-realnode-abc" / "node")
    other = node.cgroup_name(tmp_path / "docrelay-realnode-xyz" / "node")
    assert mine != other and mine.startswith(node.CGROUP_ROOT + "/")
    for controller in ("memory", "pids", "unified"):
        (tmp_path / controller / mine / "kubepods" / "besteffort" / "pod1").mkdir(parents=True)
        (tmp_path / controller / other / "kubepods").mkdir(parents=True)
    # A group still holding a process (here: a file rmdir cannot remove) is reported, not lost.
    busy = tmp_path / "pids" / mine / "kubepods" / "besteffort" / "pod1" / "still-running"
    busy.write_text("")
    left = node.remove_cgroups(mine, root=tmp_path)
    assert left == [tmp_path / "pids" / mine]
    assert not (tmp_path / "memory" / mine).exists() and not (tmp_path / "unified" / mine).exists()
    assert (tmp_path / "memory" / other / "kubepods").exists()  # another run's groups stay
    busy.unlink()
    assert node.remove_cgroups(mine, root=tmp_path) == []


def test_every_runtime_needs_its_own_runner_image_and_a_missing_one_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devkit.realnode.__main__ import missing_runner_images

    for name in ("IMAGE_REPO", "RUNNER_PYTHONS", "RUNNER_NODES"):
        monkeypatch.delenv(name, raising=False)
    repo = "ghcr.io/docrelay"
    archives = {f"{repo}/{image}": Path(f"{image}.tar") for image in (
        "docrelay:0.1.0", "runner:3.11", "runner:3.13", "runner-node:20", "runner-node:22")}
    # No stand-in for the default runtime's image: runner:3.13 does not do for 3.12. And every
    # Node.js line the Makefile builds (20 22 24 26, tests/unit/test_kind_suite.py) is wanted.
    assert missing_runner_images(archives) == [
        f"{repo}/runner:3.12", f"{repo}/runner-node:24", f"{repo}/runner-node:26"]
    for image in ("runner:3.12", "runner-node:24", "runner-node:26"):
        archives[f"{repo}/{image}"] = Path(f"{image}.tar")
    assert missing_runner_images(archives) == []
    monkeypatch.setenv("RUNNER_NODES", "28")  # what `make e2e-node RUNNER_NODES=...` exports
    assert missing_runner_images(archives) == [f"{repo}/runner-node:28"]
