"""Volume contents, the kubelet's atomic file layout, and where containers mount them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from devkit.localnode import volumes
from devkit.localnode.env import ConfigError, Sources
from devkit.localnode.volumes import File, Mount, Token

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"a": "b"}},
    "spec": {"containers": [{"name": "main",
                             "resources": {"limits": {"memory": "32Mi"}}}]},
}
SOURCES = Sources("ns", secrets={"s": {"password": b"pw", "user": b"me"}},
                  config_maps={"c": {"a.txt": b"A", "b.txt": b"B"}, "missing": None})
EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
issued: list[tuple[str | None, int]] = []


def fake_tokens(audience: str | None, seconds: int) -> Token:
    issued.append((audience, seconds))
    return Token(f"token-for-{audience}", EXPIRY)


def render(volume: dict[str, Any], **kw: Any) -> list[File]:
    files, _ = volumes.render(volume, POD, SOURCES, fake_tokens,
                              allocatable={"cpu": "2"}, **kw)
    return files


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        ({"name": "v", "configMap": {"name": "c"}},
         [File("a.txt", b"A", 0o644), File("b.txt", b"B", 0o644)]),
        ({"name": "v", "configMap": {"name": "c", "defaultMode": 0o400,
                                     "items": [{"key": "b.txt", "path": "sub/b"},
                                               {"key": "a.txt", "path": "a", "mode": 0o600}]}},
         [File("sub/b", b"B", 0o400), File("a", b"A", 0o600)]),
        ({"name": "v", "configMap": {"name": "missing", "optional": True}}, []),
        ({"name": "v", "secret": {"secretName": "s", "items": [{"key": "password",
                                                                 "path": "pw"}]}},
         [File("pw", b"pw", 0o644)]),
        ({"name": "v", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                                 "resource": "limits.memory",
                                                 "divisor": "1Mi"}}]}},
         [File("name", b"p", 0o644), File("labels", b'a="b"', 0o644),
          File("mem", b"32", 0o644)]),
        ({"name": "v", "projected": {"defaultMode": 0o440, "sources": [
            {"serviceAccountToken": {"audience": "docrelay-broker", "expirationSeconds": 600,
                                     "path": "token"}},
            {"configMap": {"name": "c", "items": [{"key": "a.txt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
         [File("token", b"token-for-docrelay-broker", 0o440), File("ca.crt", b"A", 0o440),
          File("namespace", b"ns", 0o440)]),
    ],
)
def test_render(volume: dict[str, Any], expected: list[File]) -> None:
    assert render(volume) == expected


def test_token_request_carries_audience_and_expiry_and_owner() -> None:
    issued.clear()
    volume = {"name": "v", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t"}},
        {"serviceAccountToken": {"path": "b", "audience": "x", "expirationSeconds": 900}}]}}
    files = render(volume, token_owner=1000)
    assert issued == [(None, 3600), ("x", 900)]
    assert [(f.path, f.mode, f.owner) for f in files] == [("t", 0o600, 1000),
                                                          ("b", 0o600, 1000)]


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        ({"name": "v", "configMap": {"name": "missing"}}, 'configmap "missing" not found'),
        ({"name": "v", "secret": {"secretName": "s", "items": [{"key": "nope", "path": "x"}]}},
         "secret ns/s has no key 'nope'"),
    ],
)
def test_render_errors(volume: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        render(volume)


def test_unsupported_volume_kinds_are_named() -> None:
    with pytest.raises(volumes.UnsupportedVolume, match="persistentVolumeClaim"):
        volumes.volume_kind({"name": "data", "persistentVolumeClaim": {"claimName": "x"}})


def test_refresh_at_80_percent_or_24_hours() -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    short = Token("t", start + dt.timedelta(seconds=600))
    long = Token("t", start + dt.timedelta(days=365))
    assert volumes.refresh_at(start, [short]) == start + dt.timedelta(seconds=480)
    assert volumes.refresh_at(start, [long]) == start + dt.timedelta(hours=24)
    assert volumes.refresh_at(start, [long, short]) == start + dt.timedelta(seconds=480)
    assert volumes.refresh_at(start, []) is None


@pytest.mark.parametrize(
    ("pod_ctx", "containers", "owner"),
    [
        ({}, [{}], None),
        ({"runAsUser": 1000}, [{}, {}], 1000),
        ({"runAsUser": 1000, "fsGroup": 2000}, [{}], None),
        ({}, [{"securityContext": {"runAsUser": 7}}, {"securityContext": {"runAsUser": 8}}],
         None),
        ({"runAsUser": 5}, [{"securityContext": {"runAsUser": 7}}], 7),
    ],
)
def test_token_owner(pod_ctx: dict[str, Any], containers: list[dict[str, Any]],
                     owner: int | None) -> None:
    pod = {"spec": {"securityContext": pod_ctx, "containers": containers}}
    assert volumes.token_owner(pod) == owner


def test_write_atomic_swaps_all_files_at_once(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    volumes.write_atomic(target, [File("token", b"one", 0o600), File("dir/ca", b"CA", 0o644)])
    first = os.readlink(target / "..data")
    assert (target / "token").read_bytes() == b"one"
    assert (target / "dir" / "ca").read_bytes() == b"CA"
    assert os.readlink(target / "token") == "..data/token"
    assert (target / "token").stat().st_mode & 0o777 == 0o600

    volumes.write_atomic(target, [File("token", b"two", 0o600)])
    assert (target / "token").read_bytes() == b"two"
    assert os.readlink(target / "..data") != first
    assert not (target / first).exists()  # the old payload is gone
    assert not (target / "dir").exists()  # and so is a name no longer published


@pytest.mark.parametrize("bad", ["/etc/passwd", "../escape", "a/../../b", ""])
def test_write_atomic_rejects_paths_outside_the_volume(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError):
        volumes.write_atomic(tmp_path / "v", [File(bad, b"x", 0o644)])


def test_container_mounts(tmp_path: Path) -> None:
    dirs = {"cfg": tmp_path / "cfg", "data": tmp_path / "data"}
    (dirs["data"] / "team-a").mkdir(parents=True)
    dirs["cfg"].mkdir()
    container = {"volumeMounts": [
        {"name": "data", "mountPath": "/data/deep", "subPathExpr": "$(TEAM)"},
        {"name": "cfg", "mountPath": "/etc/cfg"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "data", "mountPath": "/new", "subPath": "created"},
    ]}
    mounts = volumes.container_mounts(container, dirs, frozenset({"cfg"}), {"TEAM": "team-a"})
    assert mounts == [  # shallow mount points first, so /data does not hide /data/deep
        Mount(dirs["data"], "/data", True),
        Mount(dirs["data"] / "created", "/new", False),
        Mount(dirs["data"] / "team-a", "/data/deep", False),
        Mount(dirs["cfg"], "/etc/cfg", True),  # projected kinds are always read-only
    ]
    assert (dirs["data"] / "created").is_dir()


def test_mount_of_an_unknown_volume_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="names no volume"):
        volumes.container_mounts({"volumeMounts": [{"name": "x", "mountPath": "/x"}]}, {},
                                 frozenset(), {})
