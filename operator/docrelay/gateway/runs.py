"""The IntegrationRun a document event makes for one matching Integration (pure)."""

from __future__ import annotations

from typing import Any

from docrelay.builders.revision import INTEGRATION_LABEL, MANAGED_BY_LABEL
from docrelay.builders.run import new_run
from docrelay.gateway.events import DocumentEvent

GATEWAY = "docrelay-gateway"
EVENT_ANNOTATION = "docrelay.io/event"


def run_manifest(
    namespace: str, integration: str, event: DocumentEvent, event_id: str
) -> dict[str, Any]:
    """Named by `naming.run_name`: every redelivery and every replica computes the same name,
    so the API server's 409 is what makes the run exactly-once."""
    metadata = {
        "namespace": namespace,
        "labels": {INTEGRATION_LABEL: integration, MANAGED_BY_LABEL: GATEWAY},
        "annotations": {EVENT_ANNOTATION: event.event},
    }
    return new_run(
        namespace, integration, event_id, event.document, event.trigger.value, metadata=metadata
    )
