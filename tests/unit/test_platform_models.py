"""Pydantic models built from document types' JSON schemas: the sample types and documents,
then each schema feature on its own (table-driven)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from docrelay.platform.models import SchemaError, model_from_schema, snake_case

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(path: str) -> Any:
    return json.loads((EXAMPLES / path).read_text())


@pytest.fixture(scope="module")
def invoice_model() -> type[BaseModel]:
    return model_from_schema(load("document-types/invoice.json")["jsonSchema"])


@pytest.fixture(scope="module")
def resume_model() -> type[BaseModel]:
    return model_from_schema(load("document-types/resume.json")["jsonSchema"])


# The samples.


@pytest.mark.parametrize(
    ("schema_file", "document_file"),
    [
        ("invoice.json", "invoice-harbourside.json"),
        ("invoice.json", "invoice-northwind.json"),
        ("resume.json", "resume-amelia-chen.json"),
    ],
)
def test_every_sample_document_fits_its_type_and_round_trips(
    schema_file: str, document_file: str
) -> None:
    document_type = load(f"document-types/{schema_file}")
    document = load(f"documents/{document_file}")
    assert document["meta"]["documentType"] == document_type["identifier"]
    model = model_from_schema(document_type["jsonSchema"])
    parsed = model.model_validate(document["data"])
    assert parsed.model_dump(by_alias=True, mode="json") == document["data"]


def test_invoice_model_reads_naturally(invoice_model: type[BaseModel]) -> None:
    data = load("documents/invoice-harbourside.json")["data"]
    invoice: Any = invoice_model.model_validate(data)
    assert invoice_model.__name__ == "Invoice"
    assert invoice.invoice_number == "INV-2025-0418"
    assert invoice.invoice_date == date(2025, 6, 2)
    assert invoice.supplier.address.postcode == "2009"
    assert type(invoice.supplier).__name__ == "Party"
    assert invoice.line_items[1].unit_price == 189.95
    assert sum(item.amount for item in invoice.line_items) == pytest.approx(invoice.subtotal)
    assert invoice_model.model_fields["invoice_number"].alias == "invoiceNumber"
    assert invoice_model.model_fields["invoice_number"].description == (
        "The supplier's invoice number."
    )


def test_resume_model(resume_model: type[BaseModel]) -> None:
    resume: Any = resume_model.model_validate(load("documents/resume-amelia-chen.json")["data"])
    assert resume.candidate_name.family_name == "Chen"
    assert resume.work_experience[0].is_current is True
    assert resume.work_experience[0].end_date is None
    assert resume.education[0].level == "bachelors"
    assert resume.total_years_experience == 8
    # Not required and absent: None; `default` in the schema: that value.
    minimal: Any = resume_model.model_validate(
        {
            "candidateName": {"firstName": "Li", "familyName": "Wei"},
            "email": [],
            "workExperience": [{"jobTitle": "Analyst", "organization": "Acme"}],
        }
    )
    assert minimal.summary is None and minimal.skills is None
    assert minimal.work_experience[0].is_current is False


def invoice_with(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = load("documents/invoice-harbourside.json")["data"]
    for path, value in changes.items():
        node: Any = data
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"invoiceNumber": KeyError}, "invoiceNumber"),  # required
        ({"invoiceNumber": ""}, "invoiceNumber"),  # minLength
        ({"currencyCode": "XYZ"}, "currencyCode"),  # enum
        ({"invoiceDate": "2 June"}, "invoiceDate"),  # format: date
        ({"total": "a lot"}, "total"),  # number
        ({"lineItems": []}, "lineItems"),  # minItems
        ({"lineItems__0__quantity": -1}, "lineItems.0.quantity"),  # minimum
        ({"lineItems__0__colour": "red"}, "lineItems.0.colour"),  # additionalProperties: false
        ({"lineItems__0__taxRate": 101}, "lineItems.0.taxRate"),  # maximum
        ({"bankAccount__bsb": "62"}, "bankAccount.bsb"),  # pattern
        ({"supplier": None}, "supplier"),  # required and not nullable
        ({"supplier__name": KeyError}, "supplier.name"),  # required in a $ref'd object
    ],
)
def test_invoice_model_refuses_what_the_schema_refuses(
    invoice_model: type[BaseModel], changes: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        invoice_model.model_validate(invoice_with(**changes))
    locations = {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}
    assert any(loc == where or loc.startswith(where + ".") for loc in locations), locations


@pytest.mark.parametrize(
    "changes",
    [
        {"dueDate": None},  # type: [string, null]
        {"customer": None},  # anyOf [$ref, null]
        {"bankAccount": None},  # $ref with nullable: true
        {"purchaseOrderNumber": KeyError},  # not required
        {"taxTotal": 0},  # an integer is a number
        {"extraFieldFromANewerModel": 1},  # additionalProperties not false: kept
    ],
)
def test_invoice_model_accepts_what_the_schema_accepts(
    invoice_model: type[BaseModel], changes: dict[str, Any]
) -> None:
    invoice_model.model_validate(invoice_with(**changes))


# Schema features, one at a time.

SCALARS: list[tuple[dict[str, Any], list[Any], list[Any]]] = [
    # (property schema, values accepted, values refused)
    ({"type": "string"}, ["a", ""], [1, None]),
    ({"type": "integer", "minimum": 1}, [1, 2], [0, 1.5, "x"]),
    ({"type": "number", "exclusiveMaximum": 10}, [9.5, 1], [10, "x"]),
    ({"type": "boolean"}, [True, False], ["maybe", None]),
    ({"type": "null"}, [None], [0, ""]),
    ({"type": ["integer", "string"]}, [1, "one"], [None, [1]]),
    ({"enum": ["a", "b", None]}, ["a", None], ["c"]),
    ({"enum": [1, "one"]}, [1, "one"], [2]),
    ({"const": "fixed"}, ["fixed"], ["other"]),
    ({"type": "string", "nullable": True}, ["x", None], [1]),
    ({"type": "string", "format": "date-time"}, ["2025-06-02T10:00:00Z"], ["yesterday"]),
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [[], [1, 2]], [[1, 2, 3]]),
    ({"type": "array"}, [[1, "a", None]], ["not a list"]),
    ({"type": "object"}, [{"any": "thing"}], ["x"]),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{"a": 1}], [{"a": "x"}]),
    ({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]}, [3, "ab"], ["abc"]),
    ({"oneOf": [{"type": "boolean"}, {"type": "null"}]}, [True, None], ["x"]),
    ({}, [1, "a", None, [1], {"a": 1}], []),
]


@pytest.mark.parametrize(("schema", "accepted", "refused"), SCALARS)
def test_property_types(schema: dict[str, Any], accepted: list[Any], refused: list[Any]) -> None:
    model = model_from_schema(
        {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    )
    for value in accepted:
        model.model_validate({"value": value})
    for value in refused:
        with pytest.raises(ValidationError):
            model.model_validate({"value": value})


def test_all_of_merges_objects() -> None:
    schema = {
        "title": "Customer invoice",
        "allOf": [
            {"$ref": "#/$defs/Base"},
            {"properties": {"customerId": {"type": "string"}}, "required": ["customerId"]},
        ],
        "$defs": {
            "Base": {
                "type": "object",
                "properties": {"id": {"type": "integer"}},
                "required": ["id"],
            }
        },
    }
    model = model_from_schema(schema)
    assert model.__name__ == "CustomerInvoice"
    parsed: Any = model.model_validate({"id": 1, "customerId": "c1"})
    assert (parsed.id, parsed.customer_id) == (1, "c1")
    with pytest.raises(ValidationError):
        model.model_validate({"id": 1})


def test_recursive_refs() -> None:
    schema = {
        "title": "Org chart",
        "type": "object",
        "properties": {"head": {"$ref": "#/definitions/Person"}},
        "definitions": {
            "Person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "reports": {"type": "array", "items": {"$ref": "#/definitions/Person"}},
                },
                "required": ["name"],
            }
        },
    }
    model = model_from_schema(schema)
    chart: Any = model.model_validate(
        {"head": {"name": "A", "reports": [{"name": "B", "reports": [{"name": "C"}]}]}}
    )
    assert chart.head.reports[0].reports[0].name == "C"
    with pytest.raises(ValidationError):
        model.model_validate({"head": {"name": "A", "reports": [{"reports": []}]}})


@pytest.mark.parametrize(
    ("name", "python_name"),
    [
        ("invoiceNumber", "invoice_number"),
        ("ABN", "abn"),
        ("supplierABN", "supplier_abn"),
        ("HTTPStatusCode", "http_status_code"),
        ("line-items", "line_items"),
        ("2ndAddressLine", "field_2nd_address_line"),
        ("class", "class_"),
        ("model_dump", "model_dump_"),
        ("schema", "schema_"),
        ("_private", "private"),
        ("", "field"),
    ],
)
def test_field_names(name: str, python_name: str) -> None:
    assert snake_case(name) == python_name


def test_colliding_and_awkward_names_still_validate_by_their_aliases() -> None:
    props = {"fooBar": {"type": "integer"}, "foo_bar": {"type": "string"}, "copy": {}}
    model = model_from_schema({"type": "object", "properties": props})
    parsed: Any = model.model_validate({"fooBar": 1, "foo_bar": "x", "copy": [1]})
    assert parsed.model_dump(by_alias=True) == {"fooBar": 1, "foo_bar": "x", "copy": [1]}
    assert set(model.model_fields) == {"foo_bar", "foo_bar_", "copy_"}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "string"}, "must be an object"),
        ({"type": "object"}, "must be an object"),
        ({"type": "object", "properties": {"a": {"$ref": "other.json#/A"}}}, "only local"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "points nowhere"),
        ({"type": "object", "properties": {"a": {"type": "decimal"}}}, "unknown type"),
        ({"type": "object", "properties": {"a": {"enum": []}}}, "empty enum"),
    ],
)
def test_unsupported_schemas_say_why(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        model_from_schema(schema)
