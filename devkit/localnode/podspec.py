"""Pure readings of a pod spec: who a container runs as, its limits, its base environment,
restart decisions. Kept apart from the worker so they can be tested as tables."""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from devkit.localnode.env import ConfigError

# Restart back-off: the kubelet's doubling, from 1s up to 20s (its 10s..5min is too slow for
# tests; a pod that keeps failing still shows CrashLoopBackOff).
BACKOFF_START = 1.0
BACKOFF_MAX = 20.0


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: list[int]
    read_only_root: bool


def identity(pod: Mapping[str, Any], container: Mapping[str, Any]) -> Identity:
    """runAsUser/runAsGroup (container over pod; root if unset), fsGroup and
    supplementalGroups as extra groups, readOnlyRootFilesystem."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    uid = 0 if uid is None else int(uid)
    non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
    if non_root and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if gid is None:
        gid = _primary_group(uid)
    groups = []
    if pod_ctx.get("fsGroup") is not None:
        groups.append(int(pod_ctx["fsGroup"]))
    groups += [int(g) for g in pod_ctx.get("supplementalGroups") or []]
    return Identity(uid, int(gid), groups, bool(ctx.get("readOnlyRootFilesystem")))


def _primary_group(uid: int) -> int:
    # A runtime takes the primary group from the image's /etc/passwd; ours is the host's.
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def home_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"


def memory_limit(container: Mapping[str, Any]) -> int | None:
    raw = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None if raw is None else int(parse_quantity(raw))


def base_env(
    pod: Mapping[str, Any], uid: int, python_bin: str, first: tuple[str, ...] = ()
) -> dict[str, str]:
    """What an image and the runtime would provide: PATH (``first``, then this Python's
    directory), HOSTNAME and HOME."""
    spec = pod.get("spec") or {}
    return {
        "PATH": os.pathsep.join([*first, python_bin, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOSTNAME": spec.get("hostname") or (pod.get("metadata") or {}).get("name", ""),
        "HOME": home_of(uid),
    }


# Images whose Node.js the local node provides, since it runs no images: the Node.js run
# image (runner-node:<major>, images/Dockerfile.runner-node) and the official node:<major>.
NODE_IMAGES = frozenset({"runner-node", "node"})


def node_major(image: str) -> str | None:
    """The Node.js major line an image holds, read from its name: ``ghcr.io/docrelay/
    runner-node:22`` or ``node:22-bookworm-slim`` -> ``"22"``. Any other image, or one
    without a numbered tag, -> None (the host's ``node`` serves)."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    repository, _, tag = name.partition(":")
    if repository not in NODE_IMAGES:
        return None
    match = re.match(r"(\d+)(?:$|[.-])", tag)
    return match.group(1) if match else None


def should_restart(restart_policy: str, exit_code: int) -> bool:
    if restart_policy == "Always":
        return True
    return restart_policy == "OnFailure" and exit_code != 0


def backoff(restarts: int) -> float:
    return float(min(BACKOFF_START * (2 ** max(restarts - 1, 0)), BACKOFF_MAX))


def unsupported(pod: Mapping[str, Any]) -> str | None:
    """Why the local node cannot run this pod at all, or None."""
    spec = pod.get("spec") or {}
    for container in spec.get("initContainers") or []:
        if container.get("restartPolicy") == "Always":
            return (f"init container {container['name']!r} is a sidecar "
                    "(restartPolicy: Always), which the local node does not run")
    return None
