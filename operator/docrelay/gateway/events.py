"""Document events: the delivery body, what it means, and the id that names its runs.

Pure: no I/O. The HTTP layer verifies the signature first, then calls `parse_body`, then
`document_event`; every refusal is a `RequestError` carrying the HTTP status and a short
reason that is safe to return (it never echoes the body).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from docrelay.models.common import Trigger

EVENT_TRIGGERS: Mapping[str, Trigger] = {
    "document.parse.completed": Trigger.DOCUMENT_PARSE_COMPLETED,
    "document.validate.completed": Trigger.DOCUMENT_VALIDATED,
}

# The API's own patterns (models/common.py): checked here so a bad id is a 422 for the sender,
# not a rejected create (and a retry loop) at the API server.
_PLATFORM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class RequestError(Exception):
    """A refused request: `status` and a short, safe `reason`."""

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code  # the metrics label: a fixed, low-cardinality word


class DeliveryBody(BaseModel):
    """`{event, timestamp, payload}` (the platform's RESThooks). Standard Webhooks senders
    usually say `{type, timestamp, data}`: both spellings are accepted."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event: str = Field(
        min_length=1,
        max_length=128,
        validation_alias=AliasChoices("event", "type"),
        description="The event type, e.g. document.parse.completed.",
    )
    timestamp: str | int | float = Field(
        description="When the event happened: ISO 8601, or Unix seconds or milliseconds."
    )
    payload: dict[str, Any] = Field(
        validation_alias=AliasChoices("payload", "data"),
        description=(
            "The document: its identifier, workspace and document type, at the top level, "
            "under `meta`, under `document` or under `document.meta` (docs/gateway.md)."
        ),
    )


@dataclass(frozen=True)
class DocumentEvent:
    """What a mapped delivery means for matching and naming."""

    event: str
    trigger: Trigger
    timestamp: str  # as sent: part of the derived event id
    document: str
    workspace: str
    document_type: str


def parse_body(body: bytes) -> DeliveryBody:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise RequestError(400, "body is not valid JSON", "malformed_json") from None
    if not isinstance(data, dict):
        raise RequestError(422, "body must be a JSON object", "schema")
    try:
        return DeliveryBody.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        raise RequestError(422, f"invalid body: {', '.join(fields)[:200]}", "schema") from None


def event_time(value: str | int | float) -> float:
    """Unix seconds from the body's timestamp (ISO 8601, or seconds or milliseconds)."""
    if isinstance(value, bool):
        raise RequestError(422, "timestamp is not a time", "schema")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise RequestError(422, "timestamp is not a time", "schema") from None
            if moment.tzinfo is None:
                raise RequestError(422, "timestamp needs a time zone", "schema") from None
            return moment.timestamp()
    return number / 1000 if number > 1e11 else number


def _identifier(value: Any) -> str | None:
    """An id given as a string, or as an object with `identifier` (the platform's nesting)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        inner = value.get("identifier")
        return inner if isinstance(inner, str) else None
    return None


def _places(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Where the fields may be, most specific first."""
    places: list[Mapping[str, Any]] = []
    document = payload.get("document")
    for base in (payload, document if isinstance(document, Mapping) else None):
        if base is None:
            continue
        meta = base.get("meta")
        if isinstance(meta, Mapping):
            places.append(meta)
        places.append(base)
    return places


def _find(places: list[Mapping[str, Any]], *names: str) -> str | None:
    for place in places:
        for name in names:
            if name in place:
                found = _identifier(place[name])
                if found is not None:
                    return found
    return None


def document_event(body: DeliveryBody) -> DocumentEvent | None:
    """The event a delivery carries, or None for an event type that starts no run."""
    trigger = EVENT_TRIGGERS.get(body.event)
    if trigger is None:
        return None
    places = _places(body.payload)
    document = _find(places, "identifier", "documentIdentifier", "document_identifier")
    # `document` itself may be just the identifier: {"document": "abc"}.
    if document is None:
        document = _identifier(body.payload.get("document"))
    workspace = _find(places, "workspace", "workspaceIdentifier")
    document_type = _find(places, "documentType", "document_type", "documentTypeIdentifier")
    missing = [
        name
        for name, value in (
            ("document identifier", document),
            ("workspace", workspace),
            ("document type", document_type),
        )
        if value is None
    ]
    if missing:
        raise RequestError(422, f"payload lacks the {', '.join(missing)}", "schema")
    assert document and workspace and document_type
    for name, value in (
        ("document identifier", document),
        ("workspace", workspace),
        ("document type", document_type),
    ):
        if not _PLATFORM_ID.match(value):
            raise RequestError(422, f"payload's {name} is not a platform identifier", "schema")
    return DocumentEvent(
        event=body.event,
        trigger=trigger,
        timestamp=str(body.timestamp),
        document=document,
        workspace=workspace,
        document_type=document_type,
    )


def resthook_event_id(event: DocumentEvent) -> str:
    """RESThook deliveries carry no id: derive one from what identifies the event (type, its
    signed timestamp, the document), so every redelivery of it gets the same id."""
    digest = hashlib.sha256(
        "\0".join(("resthook/v1", event.event, event.timestamp, event.document)).encode()
    ).hexdigest()
    return f"rh-{digest[:40]}"


def standard_event_id(webhook_id: str) -> str:
    """The `webhook-id` as is when the API accepts it as an event id, else a digest of it."""
    if _EVENT_ID.match(webhook_id):
        return webhook_id
    return "wh-" + hashlib.sha256(webhook_id.encode()).hexdigest()[:40]
