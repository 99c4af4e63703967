"""The local node builds a container's environment and command line as the kubelet does."""

from __future__ import annotations

from typing import Any

import pytest

from devkit.localnode.env import (
    ConfigError,
    Sources,
    command_line,
    expand,
    field_value,
    resolve_env,
    resource_value,
    service_env,
)

POD: dict[str, Any] = {
    "metadata": {"name": "job-abc", "namespace": "team-a", "uid": "1234-5678",
                 "labels": {"app": "relay", "tier": "x"}, "annotations": {"note": 'a "b"'}},
    "spec": {"nodeName": "local-node", "serviceAccountName": "runner"},
}
SOURCES = Sources(
    "team-a",
    secrets={"creds": {"token": b"t0k", "user": b"bob"}, "gone": None},
    config_maps={"cfg": {"MODE": b"strict", "bad=name": b"x", "level": b"3"}},
)
ALLOCATABLE = {"cpu": "2", "memory": "1Gi"}


@pytest.mark.parametrize(
    ("text", "context", "expected"),
    [
        ("$(A)", {"A": "1"}, "1"),
        ("x-$(A)-$(B)", {"A": "1", "B": "2"}, "x-1-2"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("$$$(A)", {"A": "1"}, "$1"),
        ("$(A", {"A": "1"}, "$(A"),
        ("cost: $5", {}, "cost: $5"),
        ("trailing $", {}, "trailing $"),
        ("$()", {"": "empty"}, "empty"),
        ("no refs", {"A": "1"}, "no refs"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, context: dict[str, str],
                                         expected: str) -> None:
    assert expand(text, context) == expected


def _env(container: dict[str, Any], service: dict[str, str] | None = None) -> dict[str, str]:
    return resolve_env(container, POD, SOURCES, service=service or {}, allocatable=ALLOCATABLE)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-2"}]},
         {"A": "1", "B": "1-2"}),
        # A reference to a variable defined later stays as written.
        ({"env": [{"name": "B", "value": "$(A)"}, {"name": "A", "value": "1"}]},
         {"B": "$(A)", "A": "1"}),
        ({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                 "key": "token"}}}]},
         {"T": "t0k"}),
        ({"env": [{"name": "M", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                    "key": "MODE"}}}]},
         {"M": "strict"}),
        ({"env": [{"name": "O", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k",
                                                                 "optional": True}}}]},
         {}),
        ({"env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                  {"name": "S", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                  {"name": "U", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                  {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
         {"N": "job-abc", "S": "team-a", "U": "1234-5678", "IP": "127.0.0.1"}),
        # envFrom first, env overrides; an invalid name from envFrom is skipped.
        ({"envFrom": [{"configMapRef": {"name": "cfg"}}],
          "env": [{"name": "MODE", "value": "lenient"}]},
         {"MODE": "lenient", "level": "3"}),
        ({"envFrom": [{"secretRef": {"name": "creds"}, "prefix": "DB_"}]},
         {"DB_token": "t0k", "DB_user": "bob"}),
        ({"envFrom": [{"secretRef": {"name": "gone", "optional": True}}]}, {}),
        ({"envFrom": [{"configMapRef": {"name": "cfg"}}],
          "env": [{"name": "X", "value": "$(MODE)/$(level)"}]},
         {"MODE": "strict", "level": "3", "X": "strict/3"}),
    ],
)
def test_resolve_env(container: dict[str, Any], expected: dict[str, str]) -> None:
    assert _env(container) == expected


def test_service_variables_are_visible_to_references_and_overridable() -> None:
    service = service_env("127.0.0.1", 6443)
    env = _env({"env": [{"name": "API", "value": "$(KUBERNETES_SERVICE_HOST):6443"},
                        {"name": "KUBERNETES_SERVICE_PORT", "value": "1"}]}, service)
    assert env["API"] == "127.0.0.1:6443"
    assert env["KUBERNETES_SERVICE_PORT"] == "1"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]},
         'secret "nope" not found'),
        ({"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                 "key": "missing"}}}]},
         "couldn't find key missing in Secret team-a/creds"),
        ({"envFrom": [{"configMapRef": {"name": "nope"}}]}, 'configmap "nope" not found'),
        ({"env": [{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
         "unsupported fieldRef fieldPath 'spec.bogus'"),
    ],
)
def test_missing_references_fail_without_revealing_values(container: dict[str, Any],
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _env(container)
    assert str(caught.value) == message
    assert "t0k" not in str(caught.value)


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({"command": ["python", "-c", "print('$(MSG)')"]}, ["python", "-c", "print('hi')"]),
        ({"command": ["echo"], "args": ["$(MSG)", "$$(MSG)", "$(NOPE)"]},
         ["echo", "hi", "$(MSG)", "$(NOPE)"]),
        # No image, no entrypoint: args alone cannot run.
        ({"args": ["x"]}, []),
        ({}, []),
    ],
)
def test_command_line(container: dict[str, Any], expected: list[str]) -> None:
    assert command_line(container, {"MSG": "hi"}) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.labels['app']", "relay"),
        ("metadata.annotations['note']", 'a "b"'),
        ("metadata.labels", 'app="relay"\ntier="x"'),
        ("metadata.annotations", 'note="a \\"b\\""'),
        ("spec.serviceAccountName", "runner"),
        ("spec.nodeName", "local-node"),
    ],
)
def test_field_values_for_volumes(path: str, expected: str) -> None:
    assert field_value(POD, path, allow_maps=True) == expected


@pytest.mark.parametrize(
    ("resources", "resource", "divisor", "expected"),
    [
        ({"limits": {"memory": "64Mi"}}, "limits.memory", None, str(64 * 1024 * 1024)),
        ({"limits": {"memory": "64Mi"}}, "limits.memory", "1Mi", "64"),
        ({"limits": {"cpu": "500m"}}, "limits.cpu", None, "1"),
        ({"limits": {"cpu": "500m"}}, "limits.cpu", "1m", "500"),
        ({}, "limits.cpu", None, "2"),  # unset limit: the node's allocatable
        ({"limits": {"cpu": "250m"}}, "requests.cpu", "1m", "250"),  # request defaults to limit
    ],
)
def test_resource_values(resources: dict[str, Any], resource: str, divisor: str | None,
                         expected: str) -> None:
    assert resource_value({"resources": resources}, resource, divisor, ALLOCATABLE) == expected
