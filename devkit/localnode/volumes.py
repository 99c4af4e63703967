"""Pod volumes: what files each volume holds (pure), writing them the kubelet's way
(atomically, behind a ``..data`` symlink), and where each container mounts them.

Supported: configMap, secret, downwardAPI, projected (serviceAccountToken, configMap, secret,
downwardAPI sources), emptyDir (disk or ``medium: Memory``) and hostPath. Anything else fails
the pod with ``UnsupportedVolume``.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets as random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from devkit.localnode import mounts
from devkit.localnode.env import ConfigError, Sources, expand, field_value, resource_value
from devkit.localnode.objects import Obj

DEFAULT_MODE = 0o644
TOKEN_DEFAULT_EXPIRATION = 3600
# The kubelet refreshes a projected token once 80% of its lifetime has passed (or 24h).
TOKEN_REFRESH_FRACTION = 0.8
TOKEN_MAX_AGE = dt.timedelta(hours=24)

# Volume kinds whose files the node writes itself; the kubelet mounts these read-only.
PROJECTED_KINDS = ("configMap", "secret", "downwardAPI", "projected")
SUPPORTED_KINDS = (*PROJECTED_KINDS, "emptyDir", "hostPath")


class UnsupportedVolume(Exception):
    reason = "UnsupportedVolume"


@dataclass(frozen=True)
class File:
    path: str  # relative to the volume's root
    data: bytes
    mode: int
    owner: int | None = None  # uid; None leaves root


@dataclass(frozen=True)
class Token:
    token: str
    expires: dt.datetime


# (audience or None, expirationSeconds) -> a token bound to this pod
TokenSource = Callable[[str | None, int], Token]


def volume_kind(volume: Mapping[str, Any]) -> str:
    for kind in SUPPORTED_KINDS:
        if kind in volume:
            return kind
    other = sorted(k for k in volume if k != "name")
    raise UnsupportedVolume(
        f"volume {volume.get('name')!r} has a type the local node does not support: "
        f"{', '.join(other) or 'none'}"
    )


# -- what files a volume holds (pure) -------------------------------------------------------


def _keyed_files(
    kind: str, source: Mapping[str, Any], sources: Sources, default_mode: int
) -> list[File]:
    optional = bool(source.get("optional"))
    name = source.get("name", "")
    data = sources.lookup(kind, name, optional)
    if data is None:
        return []
    items = source.get("items")
    if not items:
        return [File(key, value, default_mode) for key, value in sorted(data.items())]
    files = []
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise ConfigError(
                f"{kind.lower()} {sources.namespace}/{name} has no key {item['key']!r}"
            )
        mode = item.get("mode")
        files.append(File(item["path"], data[item["key"]],
                          default_mode if mode is None else mode))
    return files


def _downward_files(
    items: Sequence[Mapping[str, Any]],
    pod: Mapping[str, Any],
    allocatable: Mapping[str, str],
    default_mode: int,
) -> list[File]:
    containers = {c["name"]: c for c in (pod.get("spec") or {}).get("containers") or []}
    files = []
    for item in items:
        if "fieldRef" in item:
            value = field_value(pod, item["fieldRef"]["fieldPath"], allow_maps=True)
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            container = containers.get(ref.get("containerName", ""), {})
            value = resource_value(container, ref["resource"], ref.get("divisor"), allocatable)
        else:
            continue
        mode = item.get("mode")
        files.append(File(item["path"], value.encode(), default_mode if mode is None else mode))
    return files


def render(
    volume: Mapping[str, Any],
    pod: Mapping[str, Any],
    sources: Sources,
    tokens: TokenSource,
    *,
    allocatable: Mapping[str, str],
    token_owner: int | None = None,
) -> tuple[list[File], list[Token]]:
    """The files of a configMap, secret, downwardAPI or projected volume, and the tokens it
    holds (their expiry says when to render it again)."""
    kind = volume_kind(volume)
    source = volume[kind]
    mode = source.get("defaultMode")
    default_mode = DEFAULT_MODE if mode is None else mode
    if kind == "configMap":
        return _keyed_files("ConfigMap", source, sources, default_mode), []
    if kind == "secret":
        renamed = {**source, "name": source.get("secretName", "")}
        return _keyed_files("Secret", renamed, sources, default_mode), []
    if kind == "downwardAPI":
        return _downward_files(source.get("items") or [], pod, allocatable, default_mode), []
    if kind != "projected":
        raise ValueError(f"{kind} volumes hold no rendered files")
    files: list[File] = []
    issued: list[Token] = []
    for projection in source.get("sources") or []:
        if "configMap" in projection:
            files += _keyed_files("ConfigMap", projection["configMap"], sources, default_mode)
        elif "secret" in projection:
            files += _keyed_files("Secret", projection["secret"], sources, default_mode)
        elif "downwardAPI" in projection:
            items = projection["downwardAPI"].get("items") or []
            files += _downward_files(items, pod, allocatable, default_mode)
        elif "serviceAccountToken" in projection:
            spec = projection["serviceAccountToken"]
            token = tokens(spec.get("audience") or None,
                           int(spec.get("expirationSeconds") or TOKEN_DEFAULT_EXPIRATION))
            issued.append(token)
            # kubelet: with one runAsUser for all containers and no fsGroup, the token file
            # belongs to that user and is private to it.
            if token_owner is not None:
                files.append(File(spec["path"], token.token.encode(), 0o600, token_owner))
            else:
                files.append(File(spec["path"], token.token.encode(), default_mode))
        else:
            other = ", ".join(sorted(projection)) or "none"
            raise UnsupportedVolume(f"projected volume {volume.get('name')!r}: unsupported "
                                    f"source {other}")
    return files, issued


def refresh_at(issued_at: dt.datetime, tokens: Sequence[Token]) -> dt.datetime | None:
    """When the volume must be rendered again: the earliest token's 80% point (or 24h)."""
    moments = []
    for token in tokens:
        lifetime = token.expires - issued_at
        moments.append(issued_at + min(lifetime * TOKEN_REFRESH_FRACTION, TOKEN_MAX_AGE))
    return min(moments) if moments else None


def referenced_objects(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps the pod's volumes use."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if "secret" in volume:
            secrets.add(volume["secret"].get("secretName", ""))
        if "configMap" in volume:
            config_maps.add(volume["configMap"].get("name", ""))
        for projection in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in projection:
                secrets.add(projection["secret"].get("name", ""))
            if "configMap" in projection:
                config_maps.add(projection["configMap"].get("name", ""))
    return secrets, config_maps


def token_owner(pod: Mapping[str, Any]) -> int | None:
    """The uid to own projected tokens: every container's runAsUser if they agree and the
    pod has no fsGroup (kubelet behaviour); else None (root owns it)."""
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    if pod_ctx.get("fsGroup") is not None:
        return None
    users = set()
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        uid = (container.get("securityContext") or {}).get("runAsUser", pod_ctx.get("runAsUser"))
        users.add(uid)
    if len(users) == 1:
        (uid,) = users
        return None if uid in (None, 0) else int(uid)
    return None


# -- writing files the kubelet's way ---------------------------------------------------------


def _safe_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ConfigError(f"invalid path in volume: {path!r}")
    return rel


def write_atomic(directory: Path, files: Sequence[File], *, fs_group: int | None = None) -> None:
    """Publish ``files`` under ``directory`` in one step, like the kubelet's AtomicWriter.

    The files live in a fresh ``..<timestamp>`` directory; ``..data`` points at it and each
    top-level name is a symlink through ``..data``. Swapping ``..data`` with a rename makes an
    update (a refreshed token) appear all at once, also inside a container whose mount is a
    bind of ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("..%Y_%m_%d_%H_%M_%S.") + random.token_hex(4)
    payload = directory / stamp
    payload.mkdir(mode=0o755)
    top_level: set[str] = set()
    for item in files:
        rel = _safe_relative(item.path)
        top_level.add(rel.parts[0])
        target = payload / rel
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(item.data)
        mode = item.mode
        if fs_group is not None:
            os.chown(target, item.owner if item.owner is not None else -1, fs_group)
            mode |= 0o440
        elif item.owner is not None:
            os.chown(target, item.owner, -1)
        target.chmod(mode)
    if fs_group is not None:
        for sub in [payload, *[p for p in payload.rglob("*") if p.is_dir()]]:
            os.chown(sub, -1, fs_group)
            sub.chmod(0o2755)

    staging = directory / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(stamp)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    staging.rename(directory / "..data")

    for name in top_level:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in top_level:
            entry.unlink()
    if old and old != stamp:
        shutil.rmtree(directory / old, ignore_errors=True)


# -- where each container sees its volumes ---------------------------------------------------


@dataclass(frozen=True)
class Mount:
    source: Path  # on the host
    target: str  # absolute, inside the container
    read_only: bool


def container_mounts(
    container: Mapping[str, Any],
    volume_dirs: Mapping[str, Path],
    forced_read_only: frozenset[str],
    env: Mapping[str, str],
) -> list[Mount]:
    """The container's ``volumeMounts`` as host-path binds, parents before children."""
    out = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in volume_dirs:
            raise ConfigError(f"volumeMount {name!r} names no volume of the pod")
        source = volume_dirs[name]
        sub = mount.get("subPath") or ""
        if mount.get("subPathExpr"):
            sub = expand(mount["subPathExpr"], env)
        if sub:
            source = source / _safe_relative(sub)
            if not source.exists() and not source.is_symlink():
                source.mkdir(parents=True, mode=0o755)  # the kubelet creates a missing subPath
            source = source.resolve()
        out.append(Mount(source, mount["mountPath"],
                         bool(mount.get("readOnly")) or name in forced_read_only))
    return sorted(out, key=lambda m: len(PurePosixPath(m.target).parts))


@dataclass
class PodVolumes:
    """The host side of a pod's volumes under ``<pod dir>``.

    Projected files live on a per-pod tmpfs (``files/``), so Secret data never reaches the
    disk; disk emptyDirs live in ``empty/<name>``, Memory ones are tmpfs mounts there.
    """

    pod_dir: Path
    dirs: dict[str, Path]
    read_only: frozenset[str]

    @classmethod
    def plan(cls, pod_dir: Path, volumes: Sequence[Obj]) -> PodVolumes:
        dirs: dict[str, Path] = {}
        read_only = set()
        for volume in volumes:
            kind = volume_kind(volume)
            name = volume["name"]
            if kind in PROJECTED_KINDS:
                dirs[name] = pod_dir / "files" / name
                read_only.add(name)
            elif kind == "emptyDir":
                dirs[name] = pod_dir / "empty" / name
            else:
                dirs[name] = Path(volume["hostPath"]["path"])
        return cls(pod_dir, dirs, frozenset(read_only))

    def create(self, volumes: Sequence[Obj]) -> None:
        """Mount the tmpfs for projected files and create emptyDirs and hostPaths."""
        mounts.mount_tmpfs(self.pod_dir / "files", size="64m")
        for volume in volumes:
            kind = volume_kind(volume)
            path = self.dirs[volume["name"]]
            if kind == "emptyDir":
                source = volume["emptyDir"] or {}
                if source.get("medium") == "Memory":
                    limit = source.get("sizeLimit")
                    size = str(int(parse_quantity(limit))) if limit else None
                    mounts.mount_tmpfs(path, size=size, mode=0o777)
                else:
                    path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)  # as the kubelet: any uid may write an emptyDir
            elif kind == "hostPath":
                host = volume["hostPath"]
                if host.get("type") in ("DirectoryOrCreate",) and not path.exists():
                    path.mkdir(parents=True, mode=0o755)
                elif host.get("type") == "FileOrCreate" and not path.exists():
                    path.touch(mode=0o644)
                elif not path.exists():
                    raise ConfigError(f"hostPath {str(path)!r} does not exist")

    def teardown(self) -> None:
        mounts.unmount_all(self.pod_dir)
