"""A container's environment and command line, built as the kubelet builds them.

Order (kubelet ``makeEnvironmentVariables``): ``envFrom`` sources in order, then ``env`` in
order (later wins); an ``env`` value may use ``$(VAR)`` for any variable defined before it;
``command`` and ``args`` are expanded against the final environment. ``$$`` escapes ``$``; a
reference that cannot be resolved stays as written. Pure: Secrets and ConfigMaps come in
already fetched (see ``Sources``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from devkit.localnode.objects import NODE_IP, POD_IP, Obj

Data = Mapping[str, bytes]

# A key becomes a variable when it is printable ASCII without '=' (Kubernetes 1.34+ rules).
_ENV_NAME = re.compile(r"^[\x21-\x3c\x3e-\x7e]+$")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ConfigError(Exception):
    """A referenced Secret, ConfigMap or key is missing (kubelet: CreateContainerConfigError).

    The message names the object and key, never a value.
    """

    reason = "CreateContainerConfigError"


@dataclass(frozen=True)
class Sources:
    """Fetched Secrets and ConfigMaps of the pod's namespace; None marks a missing object."""

    namespace: str
    secrets: Mapping[str, Data | None] = field(default_factory=dict)
    config_maps: Mapping[str, Data | None] = field(default_factory=dict)

    def lookup(self, kind: str, name: str, optional: bool) -> Data | None:
        table = self.secrets if kind == "Secret" else self.config_maps
        data = table.get(name)
        if data is None and not optional:
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        return data

    def key(self, kind: str, name: str, key: str, optional: bool) -> bytes | None:
        data = self.lookup(kind, name, optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise ConfigError(f"couldn't find key {key} in {kind} {self.namespace}/{name}")
        return data[key]


# -- $(VAR) expansion (a port of k8s.io/kubernetes/third_party/forked/golang/expansion) -------


def expand(text: str, *contexts: Mapping[str, str]) -> str:
    """Replace ``$(NAME)`` with the first context's value; ``$$`` gives ``$``."""

    def mapping(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"

    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _read_variable(text[cursor + 1 :])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _read_variable(rest: str) -> tuple[str, bool, int]:
    if rest[0] == "$":
        return "$", False, 1
    if rest[0] == "(":
        closing = rest.find(")", 1)
        if closing != -1:
            return rest[1:closing], True, closing + 1
        return "$(", False, 1
    return "$" + rest[0], False, 1


# -- the downward API, shared with downwardAPI volumes ---------------------------------------


def field_value(pod: Mapping[str, Any], path: str, *, allow_maps: bool = False) -> str:
    """The value of a ``fieldRef.fieldPath`` for this pod.

    ``metadata.labels`` and ``metadata.annotations`` (whole maps) are only valid in volumes,
    where they render as sorted ``key="value"`` lines.
    """
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": NODE_IP,
        "status.hostIPs": NODE_IP,
        "status.podIP": POD_IP,
        "status.podIPs": POD_IP,
    }
    if path in simple:
        return str(simple[path])
    match = _LABEL_REF.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if allow_maps and path in ("metadata.labels", "metadata.annotations"):
        values = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{_go_quote(str(v))}"' for k, v in sorted(values.items()))
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


def _go_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def resource_value(
    container: Mapping[str, Any],
    resource: str,
    divisor: str | None,
    allocatable: Mapping[str, str],
) -> str:
    """A ``resourceFieldRef`` value: the limit or request, divided and rounded up.

    An unset limit falls back to the node's allocatable amount, as in the kubelet.
    """
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0")
    quantity = Decimal(parse_quantity(raw))
    by = Decimal(parse_quantity(divisor)) if divisor not in (None, "", "0") else Decimal(1)
    return str(math.ceil(quantity / by))


# -- the environment --------------------------------------------------------------------------


def resolve_env(
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    sources: Sources,
    *,
    service: Mapping[str, str],
    allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The variables the kubelet gives the runtime: ``service`` variables, then envFrom, then
    env (later wins). Raises ConfigError for a missing non-optional reference.

    The runtime's own defaults (PATH, HOME; an image's ENV here) sit below these and are not
    visible to ``$(VAR)``; the caller adds them.
    """
    defined: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "secretRef" in source:
            ref, kind = source["secretRef"], "Secret"
        elif "configMapRef" in source:
            ref, kind = source["configMapRef"], "ConfigMap"
        else:
            continue
        data = sources.lookup(kind, ref.get("name", ""), bool(ref.get("optional")))
        for key, raw in (data or {}).items():
            name = prefix + key
            if _ENV_NAME.match(name):  # the kubelet skips invalid names (and emits an event)
                defined[name] = _text(raw)

    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            defined[name] = expand(var.get("value") or "", defined, service)
            continue
        resolved = _value_from(var["valueFrom"], container, pod, sources, allocatable)
        if resolved is not None:
            defined[name] = resolved

    env = dict(service)
    env.update(defined)
    return env


def _value_from(
    source: Mapping[str, Any],
    container: Mapping[str, Any],
    pod: Mapping[str, Any],
    sources: Sources,
    allocatable: Mapping[str, str],
) -> str | None:
    if "secretKeyRef" in source or "configMapKeyRef" in source:
        is_secret = "secretKeyRef" in source
        ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
        value = sources.key(
            "Secret" if is_secret else "ConfigMap",
            ref.get("name", ""),
            ref["key"],
            bool(ref.get("optional")),
        )
        return None if value is None else _text(value)
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        ref = source["resourceFieldRef"]
        return resource_value(container, ref["resource"], ref.get("divisor"), allocatable)
    raise ConfigError(f"unsupported valueFrom {sorted(source)}")


def _text(value: bytes) -> str:
    # surrogateescape keeps non-UTF-8 bytes intact through to execve.
    return value.decode("utf-8", errors="surrogateescape")


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; [] when there is no command.

    There are no images, hence no image entrypoint: a container without ``command`` cannot
    run here (the caller reports it).
    """
    command = [expand(part, env) for part in container.get("command") or []]
    if not command:
        return []
    return command + [expand(part, env) for part in container.get("args") or []]


def service_env(api_host: str, api_port: int) -> dict[str, str]:
    """The variables the kubelet injects for the ``kubernetes`` Service, pointed at the real
    API server on loopback (Service IPs do not route here: there is no kube-proxy)."""
    port = str(api_port)
    return {
        "KUBERNETES_SERVICE_HOST": api_host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{api_host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{api_host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": api_host,
    }


def referenced_objects(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps the pod's containers' env and envFrom use."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    containers: list[Obj] = list((pod.get("spec") or {}).get("initContainers") or [])
    containers += list((pod.get("spec") or {}).get("containers") or [])
    for container in containers:
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                secrets.add(source["secretRef"].get("name", ""))
            if "configMapRef" in source:
                config_maps.add(source["configMapRef"].get("name", ""))
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"].get("name", ""))
            if "configMapKeyRef" in value_from:
                config_maps.add(value_from["configMapKeyRef"].get("name", ""))
    return secrets, config_maps
