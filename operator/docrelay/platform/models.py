"""A pydantic model per document type, built at run time from the type's JSON schema.

The runtime contract gives integration code "a pydantic model per document type generated
from its JSON schema". This builds it with `pydantic.create_model`, without a code generator:
objects (nested, `additionalProperties`), arrays, strings (with `format: date`/`date-time`),
numbers, integers, booleans, null, `enum`/`const`, `anyOf`/`oneOf`/`allOf`, `$ref` into the
same document (`$defs`, `definitions`, recursion included), nullability (`type: [..., "null"]`
or OpenAPI's `nullable: true`), `required`, defaults and the common constraints.

Field names are snake_case with the schema's (camelCase) names as aliases, so
`Invoice.model_validate(document["data"]).invoice_number` works and
`model_dump(by_alias=True)` gives the platform's spelling back. A property the schema does
not require is optional (default None); a required one may still be null if its type says so.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

_BASE_ATTRIBUTES = frozenset(dir(BaseModel))
_TYPE_NAMES = {"string", "number", "integer", "boolean", "null", "array", "object"}


class SchemaError(ValueError):
    """The schema uses something this builder cannot turn into a model."""


def snake_case(name: str) -> str:
    """`invoiceNumber` -> `invoice_number`; `ABN` -> `abn`; `2ndLine` -> `field_2nd_line`."""
    text = re.sub(r"[^0-9A-Za-z_]+", "_", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"_+", "_", text).strip("_").lower() or "field"
    if text[0].isdigit():
        text = f"field_{text}"
    if keyword.iskeyword(text) or text in _BASE_ATTRIBUTES or text.startswith("model_"):
        text = f"{text}_"
    return text


def pascal_case(name: str) -> str:
    parts = re.split(r"[^0-9A-Za-z]+", re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name))
    text = "".join(p[:1].upper() + p[1:] for p in parts if p) or "Model"
    return f"M{text}" if text[0].isdigit() else text


class _Builder:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.by_ref: dict[str, Any] = {}  # a $ref's built type (a model or any annotation)
        self.building: set[str] = set()  # refs being built: a ref back to one is recursion
        self.namespace: dict[str, type[BaseModel]] = {}  # for resolving forward references
        self.models: list[type[BaseModel]] = []
        self.recursive = False

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            raise SchemaError(f"only local $ref is supported, not {ref!r}")
        node: Any = self.root
        for token in ref[1:].lstrip("/").split("/") if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaError(f"$ref {ref!r} points nowhere")
        if not isinstance(node, Mapping):
            raise SchemaError(f"$ref {ref!r} is not a schema")
        return node

    def ref(self, ref: str) -> Any:
        if ref in self.by_ref:
            return self.by_ref[ref]
        target = self.resolve(ref)
        name = pascal_case(str(target.get("title") or ref.rsplit("/", 1)[-1]))
        if ref in self.building:
            # Recursion: name the model now, resolve it once every model exists.
            self.recursive = True
            return name
        self.building.add(ref)
        try:
            built = self.annotation(target, name)
        finally:
            self.building.discard(ref)
        self.by_ref[ref] = built
        return built

    def annotation(self, schema: Mapping[str, Any] | bool, name: str) -> Any:
        """The Python type for a schema; `name` names any model it needs."""
        if schema is True or schema == {}:
            return Any
        if schema is False:
            raise SchemaError(f"{name}: a `false` schema accepts nothing")
        assert isinstance(schema, Mapping)
        nullable = schema.get("nullable") is True
        if "$ref" in schema:
            found = self.ref(str(schema["$ref"]))
            return Optional[found] if nullable else found  # noqa: UP045 (runtime object)
        if "const" in schema:
            found = Literal[schema["const"]]
            return Optional[found] if nullable else found  # noqa: UP045
        if "enum" in schema:
            values = list(schema["enum"])
            if not values:
                raise SchemaError(f"{name}: empty enum")
            others = [v for v in values if v is not None]
            found = Literal[tuple(others)] if others else type(None)
            if None in values or nullable:
                return Optional[found]  # noqa: UP045
            return found
        for combiner in ("anyOf", "oneOf"):
            if combiner in schema:
                options = [
                    self.annotation(option, f"{name}Option{i + 1}")
                    for i, option in enumerate(schema[combiner])
                ]
                found = _union(options)
                return Optional[found] if nullable else found  # noqa: UP045
        if "allOf" in schema:
            merged = _merge_all_of(self, schema)
            return self.annotation(merged, name)
        kinds = schema.get("type")
        if kinds is None:
            kinds = _infer_type(schema)
        if isinstance(kinds, str):
            kinds = [kinds]
        unknown = [k for k in kinds if k not in _TYPE_NAMES]
        if unknown:
            raise SchemaError(f"{name}: unknown type {unknown[0]!r}")
        options = [self.single(schema, kind, name) for kind in kinds if kind != "null"]
        found = _union(options) if options else type(None)
        if ("null" in kinds or nullable) and options:
            return Optional[found]  # noqa: UP045
        return found

    def single(self, schema: Mapping[str, Any], kind: str, name: str) -> Any:
        if kind == "string":
            fmt = schema.get("format")
            base: Any = date if fmt == "date" else datetime if fmt == "date-time" else str
            if base is str:
                return _constrained(
                    str,
                    min_length=schema.get("minLength"),
                    max_length=schema.get("maxLength"),
                    pattern=schema.get("pattern"),
                )
            return base
        if kind in ("number", "integer"):
            return _constrained(
                float if kind == "number" else int,
                ge=schema.get("minimum"),
                le=schema.get("maximum"),
                gt=_exclusive(schema.get("exclusiveMinimum")),
                lt=_exclusive(schema.get("exclusiveMaximum")),
                multiple_of=schema.get("multipleOf"),
            )
        if kind == "boolean":
            return bool
        if kind == "array":
            items = schema.get("items", True)
            if isinstance(items, list):  # draft-04 tuple form: any of the listed schemas
                inner = _union([self.annotation(s, f"{name}Item") for s in items])
            else:
                inner = self.annotation(items, f"{name}Item")
            return _constrained(
                list[inner],  # type: ignore[valid-type]
                min_length=schema.get("minItems"),
                max_length=schema.get("maxItems"),
            )
        # object
        properties = schema.get("properties")
        extra = schema.get("additionalProperties", True)
        if not properties:
            if isinstance(extra, Mapping):
                return dict[str, self.annotation(extra, f"{name}Value")]  # type: ignore[misc]
            return dict[str, Any]
        return self.model(schema, name)

    def model(self, schema: Mapping[str, Any], name: str) -> type[BaseModel]:
        required = set(schema.get("required", ()))
        fields: dict[str, Any] = {}
        used: set[str] = set()
        for prop, sub in schema["properties"].items():
            python_name = snake_case(prop)
            while python_name in used:
                python_name += "_"
            used.add(python_name)
            annotation = self.annotation(sub, f"{name}{pascal_case(prop)}")
            info: dict[str, Any] = {"alias": prop}
            if isinstance(sub, Mapping):
                if isinstance(sub.get("description"), str):
                    info["description"] = sub["description"]
                if isinstance(sub.get("title"), str):
                    info["title"] = sub["title"]
            if prop in required:
                default: Any = ...
            elif isinstance(sub, Mapping) and "default" in sub:
                default = sub["default"]
            else:
                default = None
                annotation = Optional[annotation]  # noqa: UP045
            fields[python_name] = (annotation, Field(default, **info))
        extra = schema.get("additionalProperties", True)
        config = ConfigDict(
            populate_by_name=True,
            protected_namespaces=(),  # names are already made safe by snake_case()
            extra="forbid" if extra is False else "allow",
            title=str(schema["title"]) if isinstance(schema.get("title"), str) else None,
        )
        built = create_model(name, __config__=config, __doc__=schema.get("description"), **fields)
        self.namespace[name] = built
        self.models.append(built)
        return built


def _exclusive(value: Any) -> Any:
    # Draft-04 used booleans here (meaning "minimum is exclusive"); only numbers bound.
    return None if isinstance(value, bool) else value


def _constrained(base: Any, **constraints: Any) -> Any:
    given = {k: v for k, v in constraints.items() if v is not None}
    return Annotated[base, Field(**given)] if given else base


def _union(options: list[Any]) -> Any:
    unique: list[Any] = []
    for option in options:
        if option not in unique:
            unique.append(option)
    if len(unique) == 1:
        return unique[0]
    return Union[tuple(unique)]  # noqa: UP007 (built at run time)


def _infer_type(schema: Mapping[str, Any]) -> list[str]:
    if "properties" in schema or "additionalProperties" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return list(_TYPE_NAMES)  # no constraint on the type: anything


def _merge_all_of(builder: _Builder, schema: Mapping[str, Any]) -> dict[str, Any]:
    """`allOf` of object schemas: properties and required lists merged, in order."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, Any] = dict(merged.get("properties", {}))
    required: list[str] = list(merged.get("required", []))
    for part in schema["allOf"]:
        if isinstance(part, Mapping) and "$ref" in part:
            part = builder.resolve(str(part["$ref"]))
        if not isinstance(part, Mapping):
            continue
        if "allOf" in part:
            part = _merge_all_of(builder, part)
        properties.update(part.get("properties", {}))
        required.extend(r for r in part.get("required", []) if r not in required)
        for key in ("type", "additionalProperties", "title", "description"):
            if key in part and key not in merged:
                merged[key] = part[key]
    if properties:
        merged["properties"] = properties
        merged.setdefault("type", "object")
    if required:
        merged["required"] = required
    return merged


def model_from_schema(schema: Mapping[str, Any], name: str | None = None) -> type[BaseModel]:
    """The model for a document type's JSON schema (its top level must be an object)."""
    title = name or (schema.get("title") if isinstance(schema.get("title"), str) else None)
    builder = _Builder(schema)
    built = builder.annotation(schema, pascal_case(title or "Document"))
    if not (isinstance(built, type) and issubclass(built, BaseModel)):
        raise SchemaError("a document type's schema must be an object with properties")
    if builder.recursive:
        for model in builder.models:
            model.model_rebuild(_types_namespace=builder.namespace)
    return built
