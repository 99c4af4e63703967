"""The CRDs in crds/: generated from the models, in agreement with them field by field,
self-describing (kubectl explain), bounded (CEL cost), and accepting the examples."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import annotated_types
import pytest
import yaml
from pydantic import BaseModel, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from docrelay.models import API_VERSION, GROUP, KINDS, RESOURCES, VERSION, CustomResource
from docrelay.models.crdgen import crd_for, file_name, generate, main

REPO = Path(__file__).resolve().parents[2]
CRDS_DIR = REPO / "crds"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
KIND_IDS = [r.crd.kind for r in RESOURCES]


def root_schema(resource: type[CustomResource]) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS_DIR / file_name(resource)).read_text())
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of a schema with its path (`spec.retry.maxAttempts`, `status.conditions[]`)."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}".lstrip("."))
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


# --- Generated, and up to date -------------------------------------------------------------------


def test_checked_in_crds_are_the_generated_ones() -> None:
    for name, content in generate().items():
        path = CRDS_DIR / name
        assert path.exists() and path.read_text() == content, (
            f"{path} is out of date: run `python -m docrelay.models.crdgen`"
        )
    assert sorted(p.name for p in CRDS_DIR.glob("*.yaml")) == sorted(generate())


def test_crdgen_check_reports_a_stale_directory(tmp_path: Path) -> None:
    assert main(["--check", str(tmp_path)]) == 1
    assert main([str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0


# --- Shape of every CRD -------------------------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
def test_names_status_subresource_and_category(resource: type[CustomResource]) -> None:
    crd = crd_for(resource)
    names, (version,) = crd["spec"]["names"], crd["spec"]["versions"]

    assert crd["metadata"]["name"] == f"{names['plural']}.docrelay.io"
    assert names["categories"] == ["docrelay"]
    assert names["shortNames"]
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Namespaced"


def test_api_version_is_group_and_version() -> None:
    assert f"{GROUP}/{VERSION}" == API_VERSION


def test_short_names_are_distinct() -> None:
    short_names = [n for r in RESOURCES for n in r.crd.short_names]
    assert len(short_names) == len(set(short_names))


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
def test_printer_columns(resource: type[CustomResource]) -> None:
    (version,) = crd_for(resource)["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    schema_paths = {p for p, _ in walk(root_schema(resource))}

    # The default view ends with Age; everything after it is for -o wide.
    age = next(i for i, c in enumerate(columns) if c["name"] == "Age")
    assert all(c.get("priority", 0) == 0 for c in columns[: age + 1])
    assert all(c.get("priority") == 1 for c in columns[age + 1 :])
    for column in columns:
        path = column["jsonPath"]
        condition = re.fullmatch(r'\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.(\w+)', path)
        if condition:  # conditions are selected by type, never by position
            assert f"status.conditions[].{condition.group(2)}" in schema_paths
        elif not path.startswith(".metadata."):
            assert path.lstrip(".") in schema_paths, path


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
def test_every_status_has_observed_generation_and_conditions_by_type(
    resource: type[CustomResource],
) -> None:
    status = root_schema(resource)["properties"]["status"]["properties"]
    conditions = status["conditions"]

    assert status["observedGeneration"]["type"] == "integer"
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["properties"]) == {
        "type",
        "status",
        "observedGeneration",
        "lastTransitionTime",
        "reason",
        "message",
    }
    assert set(conditions["items"]["required"]) == {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
    }


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
def test_every_field_has_a_description(resource: type[CustomResource]) -> None:
    missing = [
        path or "<root>"
        for path, node in walk(root_schema(resource))
        # The API server supplies metadata's schema and forbids describing it.
        if path != "metadata"
        and not node.get("description")
        # Items of a scalar list are described by the list.
        and not (path.endswith("[]") and node.get("type") != "object")
    ]
    assert missing == []


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
def test_every_string_and_list_is_bounded(resource: type[CustomResource]) -> None:
    """Unbounded strings and lists make the API server's CEL cost estimate explode."""
    unbounded = [
        path
        for path, node in walk(root_schema(resource))
        if path not in ("apiVersion", "kind")
        and (
            (
                node.get("type") == "string"
                and "maxLength" not in node
                and "enum" not in node
                and node.get("format") != "date-time"
            )
            or (node.get("type") == "array" and "maxItems" not in node)
        )
    ]
    assert unbounded == []


def test_the_plaintext_secret_value_has_no_rule_that_would_echo_it() -> None:
    """A pattern, enum or CEL error quotes the rejected value; a plaintext secret must not be."""
    value = root_schema(KINDS["IntegrationSecret"])["properties"]["spec"]["properties"]["value"]
    assert not {"pattern", "enum", "format", "x-kubernetes-validations"} & value.keys()


# --- Models and CRDs agree field by field --------------------------------------------------------
# An independent reading of the models (their fields and type annotations, not pydantic's JSON
# Schema, which the generator uses) compared with the generated schema.


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The bare type of an annotation and its constraint metadata (Annotated layers flattened)."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata += extra
    flat: list[Any] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            flat += item.metadata
        elif isinstance(item, StringConstraints):
            flat += list(item)
        else:
            flat.append(item)
    return annotation, flat


def _constraints(metadata: list[Any], *, array: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            out["minItems" if array else "minLength"] = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            out["maxItems" if array else "maxLength"] = item.max_length
        elif isinstance(item, annotated_types.Ge):
            out["minimum"] = item.ge
        elif isinstance(item, annotated_types.Le):
            out["maximum"] = item.le
        elif getattr(item, "pattern", None):
            out["pattern"] = item.pattern
    return out


_SCALARS = {bool: "boolean", int: "integer", str: "string"}


def _disagreements(
    annotation: Any, metadata: list[Any], node: dict[str, Any], path: str
) -> list[str]:
    bare, inner = _unwrap(annotation)
    metadata = metadata + inner
    args = [a for a in typing.get_args(bare) if a is not type(None)]
    if typing.get_origin(bare) in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _disagreements(args[0], metadata, node, path)
        kinds = {_unwrap(a)[0] for a in args}
        if kinds == {int, str}:
            expected = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
            for arg in args:
                expected |= _constraints(_unwrap(arg)[1], array=False)
            actual = {k: node.get(k) for k in expected}
            return (
                []
                if actual == expected and node.get("x-kubernetes-int-or-string")
                else [f"{path}: int-or-string expected {expected}, found {node}"]
            )
        return [f"{path}: unexpected union {bare}"]

    problems: list[str] = []
    if typing.get_origin(bare) is tuple:
        item_type = typing.get_args(bare)[0]
        expected = {"type": "array"} | _constraints(metadata, array=True)
        problems += _diff(expected, node, path)
        problems += _disagreements(item_type, [], node.get("items", {}), f"{path}[]")
        return problems
    if isinstance(bare, type) and issubclass(bare, BaseModel):
        return _diff({"type": "object"}, node, path) + _model_disagreements(bare, node, path)
    if isinstance(bare, type) and issubclass(bare, Enum):
        return _diff({"type": "string", "enum": [e.value for e in bare]}, node, path)
    if typing.get_origin(bare) is typing.Literal:
        return _diff({"enum": list(typing.get_args(bare))}, node, path)
    if bare is datetime:
        return _diff({"type": "string", "format": "date-time"}, node, path)
    if bare in _SCALARS:
        return _diff({"type": _SCALARS[bare]} | _constraints(metadata, array=False), node, path)
    return [f"{path}: the test does not know {bare!r}"]


def _diff(expected: dict[str, Any], node: dict[str, Any], path: str) -> list[str]:
    return [
        f"{path}.{key}: model says {value!r}, CRD says {node.get(key)!r}"
        for key, value in expected.items()
        if node.get(key) != value
    ]


def _expected_default(field: FieldInfo) -> Any:
    if field.default is PydanticUndefined or field.default is None:
        return PydanticUndefined  # required, optional, or built by a factory: no CRD default
    if isinstance(field.default, BaseModel):
        return field.default.model_dump(mode="json", by_alias=True, exclude_none=True)
    if isinstance(field.default, Enum):
        return field.default.value
    return field.default


def _model_disagreements(model: type[BaseModel], node: dict[str, Any], path: str) -> list[str]:
    properties = node.get("properties", {})
    aliases = {name: field.alias or name for name, field in model.model_fields.items()}
    problems = []
    if set(properties) != set(aliases.values()):
        problems.append(f"{path}: fields {sorted(aliases.values())} vs CRD {sorted(properties)}")
    required = set(node.get("required", []))
    for name, field in model.model_fields.items():
        alias = aliases[name]
        child_path = f"{path}.{alias}".lstrip(".")
        child = properties.get(alias, {})
        if field.is_required() != (alias in required):
            problems.append(f"{child_path}: required={field.is_required()} in the model")
        default = _expected_default(field)
        if child.get("default", PydanticUndefined) != default:
            problems.append(f"{child_path}: default {default!r} vs {child.get('default')!r}")
        problems += _disagreements(field.annotation, list(field.metadata), child, child_path)
    return problems


@pytest.mark.parametrize("resource", RESOURCES, ids=KIND_IDS)
@pytest.mark.parametrize("part", ["spec", "status"])
def test_models_and_crd_agree_field_by_field(resource: type[CustomResource], part: str) -> None:
    annotation = resource.model_fields[part].annotation
    model = next(a for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None))
    node = root_schema(resource)["properties"][part]

    assert _model_disagreements(model, node, part) == []


def test_the_agreement_check_notices_a_difference() -> None:
    resource = KINDS["Integration"]
    node = root_schema(resource)["properties"]["spec"]
    node["properties"]["timeoutSeconds"]["maximum"] = 7200
    del node["properties"]["workspace"]
    node["required"].append("trigger2")

    problems = _model_disagreements(resource.model_fields["spec"].annotation, node, "spec")  # type: ignore[arg-type]

    assert any("timeoutSeconds.maximum" in p for p in problems)
    assert any("workspace" in p for p in problems)


# --- The examples against the CRD schema (what the API server checks, minus CEL) ----------------


def schema_errors(value: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """A small structural-schema validator: types, enums, bounds, patterns, unknown fields."""
    if node.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str | int) and not isinstance(value, bool)
    else:
        ok = {
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
        }.get(node.get("type", ""), True)
    if not ok:
        return [f"{path}: {value!r} is not of type {node.get('type')}"]
    errors = []
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: {value!r} not in {node['enum']}")
    if isinstance(value, str):
        if not node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value)):
            errors.append(f"{path}: length {len(value)} out of bounds")
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {node['pattern']}")
    is_integer = isinstance(value, int) and not isinstance(value, bool)
    if is_integer and not node.get("minimum", value) <= value <= node.get("maximum", value):
        errors.append(f"{path}: {value} out of bounds")
    if isinstance(value, list):
        if len(value) > node.get("maxItems", len(value)):
            errors.append(f"{path}: too many items")
        errors += [
            e for i, v in enumerate(value) for e in schema_errors(v, node["items"], f"{path}[{i}]")
        ]
    if isinstance(value, dict) and path != ".metadata":
        properties = node.get("properties", {})
        errors += [f"{path}.{k}: required" for k in node.get("required", []) if k not in value]
        for key, child in value.items():
            if key not in properties:
                errors.append(f"{path}.{key}: unknown field")
            else:
                errors += schema_errors(child, properties[key], f"{path}.{key}")
    return errors


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_matches_the_crd_schema(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert schema_errors(document, root_schema(KINDS[document["kind"]])) == []


@pytest.mark.parametrize(
    ("kind", "document", "error"),
    [
        ("Integration", {"spec": {"timeoutSeconds": 4000}}, ".spec.timeoutSeconds: 4000 out of"),
        ("Integration", {"spec": {"retry": {"maxTries": 3}}}, ".spec.retry.maxTries: unknown"),
        ("ConnectedAccount", {"spec": {"accountId": "acc"}}, ".spec.accountId: 'acc' does not"),
    ],
)
def test_the_schema_validator_notices_errors(
    kind: str, document: dict[str, Any], error: str
) -> None:
    errors = schema_errors(document, root_schema(KINDS[kind]))
    assert any(e.startswith(error) for e in errors), errors
