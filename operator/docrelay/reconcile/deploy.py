"""Deploy and revert requests: an annotation the CLI writes and the operator acts on once.

The annotation lives outside kopf's `docrelay.io/` prefix on purpose: kopf ignores its own
prefix when it diffs an object, and a new request must wake the Integration's handler.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

DEPLOY_REQUEST_ANNOTATION = "deploy.docrelay.io/request"
DEPENDENCIES_ANNOTATION = "trigger.docrelay.io/dependencies"

_REVISION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class DeployAction(StrEnum):
    DEPLOY = "deploy"
    REVERT = "revert"


@dataclass(frozen=True)
class DeployRequest:
    """What `docrelay deploy` or `docrelay revert` asked for."""

    id: str
    action: DeployAction
    revision: str
    requested_by: str
    requested_at: datetime

    def encode(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "action": self.action.value,
                "revision": self.revision,
                "requestedBy": self.requested_by,
                "requestedAt": self.requested_at.isoformat(),
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class MalformedRequest:
    """An annotation that is not a request; its id is a digest of the text, so it is handled
    once."""

    id: str


def parse_request(raw: str | None) -> DeployRequest | MalformedRequest | None:
    """The request in the annotation, MalformedRequest if it cannot be read, None if absent."""
    if raw is None:
        return None
    malformed = MalformedRequest(id="x-" + hashlib.sha256(raw.encode()).hexdigest()[:40])
    try:
        data = json.loads(raw)
        request = DeployRequest(
            id=str(data["id"]),
            action=DeployAction(data["action"]),
            revision=str(data["revision"]),
            requested_by=str(data["requestedBy"])[:256] or "unknown",
            requested_at=datetime.fromisoformat(str(data["requestedAt"])),
        )
    except (ValueError, KeyError, TypeError):
        return malformed
    if not _REQUEST_ID.match(request.id) or not _REVISION_NAME.match(request.revision):
        return malformed
    return request


def dependencies_digest(
    present_secret_keys: AbstractSet[str], present_accounts: AbstractSet[str]
) -> str:
    """A short digest of which of an integration's secrets and accounts exist: it changes
    exactly when SecretsReady or AccountsReady may change."""
    text = json.dumps([sorted(present_secret_keys), sorted(present_accounts)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
