"""A pydantic model per document type, generated from its JSON schema (the runtime contract).

    from docrelay.sdk import get_document
    from docrelay.sdk.models import document_model

    def lambda_handler(event, context):
        Invoice = document_model()  # the run's document type
        invoice = Invoice.model_validate(get_document(event["document_identifier"])["data"])
        number = invoice.invoice_number

The schema comes through the broker (`GET /v1/broker/document-types/{id}/schema`, the run's
Integration's document type only) and the model is built with
`docrelay.platform.models.model_from_schema`, once per document type per process. This module
imports pydantic; `docrelay.sdk` itself stays standard library only, so code that does not
ask for a model does not pay for it.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from pydantic import BaseModel

from docrelay.platform.models import model_from_schema
from docrelay.runner import contract
from docrelay.sdk import SdkError, _call, _segment

__all__ = ["document_model"]

_models: dict[str, type[BaseModel]] = {}
_lock = threading.Lock()


def _event_document_type(environ: Any = os.environ) -> str:
    try:
        event = json.loads(environ.get(contract.ENV_EVENT) or "{}")
    except ValueError:
        event = None
    document_type = event.get("document_type") if isinstance(event, dict) else None
    if not isinstance(document_type, str) or not document_type:
        raise SdkError(f"no document_type in the run's event ({contract.ENV_EVENT})")
    return document_type


def document_model(document_type: str | None = None) -> type[BaseModel]:
    """The pydantic model of `document_type` (default: the run's), built from its JSON schema.

    Field names are snake_case with the platform's camelCase names as aliases. Broker failures
    raise the SDK's typed errors (`Forbidden` for any type but the Integration's)."""
    identifier = document_type if document_type is not None else _event_document_type()
    with _lock:
        cached = _models.get(identifier)
        if cached is not None:
            return cached
    schema = _call("GET", f"/v1/broker/document-types/{_segment(identifier)}/schema")
    if not isinstance(schema, dict):
        raise SdkError("the broker's answer is not a JSON schema")
    model = model_from_schema(schema)
    with _lock:
        return _models.setdefault(identifier, model)
