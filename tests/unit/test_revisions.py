"""Revision naming and the manifests of a revision and its code ConfigMap."""

from __future__ import annotations

import pytest

from docrelay.builders.revision import (
    build_code_config_map,
    build_revision,
    code_digest,
    revision_name,
)
from docrelay.models import IntegrationRevision
from docrelay.models.common import Runtime

CODE = "def lambda_handler(event, context):\n    return 1\n"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("orders", CODE, Runtime()), ("orders", CODE, Runtime()), True),
        (("orders", CODE, Runtime()), ("orders", CODE, Runtime(python="3.12")), True),
        (("orders", CODE, Runtime()), ("orders", CODE + "\n", Runtime()), False),
        (("orders", CODE, Runtime()), ("orders", CODE, Runtime(python="3.13")), False),
        (("orders", CODE, Runtime()), ("orders", CODE, Runtime(image="example/run:1")), False),
        (("orders", CODE, Runtime()), ("invoices", CODE, Runtime()), False),
    ],
)
def test_revision_name(
    a: tuple[str, str, Runtime], b: tuple[str, str, Runtime], same: bool
) -> None:
    assert (revision_name(*a) == revision_name(*b)) is same


def test_revision_name_shape() -> None:
    name = revision_name("orders", CODE, Runtime())
    assert name.startswith("orders-") and len(name) == len("orders-") + 10
    # the longest integration name still makes a name that fits a label value and a ConfigMap
    assert len(revision_name("x" * 40, CODE, Runtime()) + "-code") <= 63


def test_revision_manifest_is_a_valid_revision_owned_by_the_integration() -> None:
    manifest = build_revision(
        integration="orders", integration_uid="uid-1", code=CODE, runtime=Runtime()
    )
    revision = IntegrationRevision.model_validate(manifest)  # the API's own model accepts it
    assert revision.metadata.name == revision_name("orders", CODE, Runtime())
    assert revision.metadata.labels["docrelay.io/integration"] == "orders"
    assert revision.spec.code_hash == code_digest(CODE)
    assert revision.spec.code_config_map.name == f"{revision.metadata.name}-code"
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "docrelay.io/v1alpha1",
            "kind": "Integration",
            "name": "orders",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_code_config_map_is_immutable_and_owned_by_the_revision() -> None:
    manifest = build_code_config_map(
        integration="orders", revision="orders-abc", revision_uid="uid-2", code=CODE
    )
    assert manifest["immutable"] is True
    assert manifest["data"] == {"handler.py": CODE}
    assert manifest["metadata"]["name"] == "orders-abc-code"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "IntegrationRevision"
    assert manifest["metadata"]["labels"]["docrelay.io/revision"] == "orders-abc"
