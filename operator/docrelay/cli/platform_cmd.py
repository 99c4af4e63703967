"""`docrelay platform` and `docrelay send DOCUMENT`: what the tenant's platform credentials can
see, and a document event sent through the gateway as the platform would send it.

Both read Secrets of the namespace with the user's own Kubernetes credentials: the platform
credentials (`docrelay-platform`: `token`, `url`) and, for `send`, the gateway's RESThook
signing key (`docrelay-gateway-signing`, entries `resthook*`). No token, key or value is ever
printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from docrelay.actions.platform import PLATFORM_SECRET, platform_client, secret_entries
from docrelay.cli.common import CliError, connect, print_table
from docrelay.gateway.events import EVENT_TRIGGERS
from docrelay.gateway.signatures import sign_resthook
from docrelay.kube import INTEGRATIONS, Kube
from docrelay.platform.errors import PlatformError

SIGNING_SECRET = "docrelay-gateway-signing"
TRIGGER_EVENTS = {trigger.value: event for event, trigger in EVENT_TRIGGERS.items()}


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    platform = commands.add_parser(
        "platform",
        parents=parents,
        help="the workspaces and document types the tenant's platform credentials can see",
        description=(
            f"List the document platform's workspaces and document types, with the tenant's "
            f"credentials (Secret {PLATFORM_SECRET}: token, url). Use their identifiers as an "
            "Integration's spec.workspace and spec.documentType."
        ),
    )
    platform.add_argument("--workspace", help="only the document types of this workspace")
    platform.add_argument("--secret", default=PLATFORM_SECRET, help=argparse.SUPPRESS)
    platform.set_defaults(run=run_platform)

    send = commands.add_parser(
        "send",
        parents=parents,
        help="send a signed document event through the gateway, showing what it matches",
        description=(
            "Send a document event for DOCUMENT to the gateway, signed as the platform signs "
            f"it (RESThook, the key in Secret {SIGNING_SECRET}), with the document's meta "
            f"from the platform (Secret {PLATFORM_SECRET}) as its payload. Prints the "
            "Integrations that match before sending and the runs the gateway created."
        ),
    )
    send.add_argument("document", metavar="DOCUMENT", help="the document's identifier")
    send.add_argument(
        "--trigger",
        choices=sorted(TRIGGER_EVENTS),
        default="DocumentParseCompleted",
        help="which event (default: DocumentParseCompleted, document.parse.completed)",
    )
    send.add_argument(
        "--gateway-url",
        default=os.environ.get("DOCRELAY_GATEWAY_URL"),
        help="the gateway's base URL (default: $DOCRELAY_GATEWAY_URL), e.g. http://127.0.0.1:8080",
    )
    send.add_argument("--secret", default=PLATFORM_SECRET, help=argparse.SUPPRESS)
    send.add_argument("--signing-secret", default=SIGNING_SECRET, help=argparse.SUPPRESS)
    send.set_defaults(run=run_send)


def _identifier(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("identifier") or "")
    return str(value or "")


def run_platform(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    try:
        with platform_client(kube, namespace, args.secret) as platform:
            workspaces = platform.list_workspaces()
            types = platform.list_document_types(workspace=args.workspace)
    except PlatformError as exc:
        raise CliError(f"the platform refused: {exc}") from None
    if not args.workspace:
        print_table(
            ["WORKSPACE", "NAME"],
            [[_identifier(w), str(w.get("name") or "")] for w in workspaces],
        )
        print()
    print_table(
        ["DOCUMENT TYPE", "NAME"],
        [[_identifier(t), str(t.get("name") or "")] for t in types],
    )
    return 0


def matching(
    integrations: list[dict[str, Any]], workspace: str, document_type: str, trigger: str
) -> list[tuple[str, str]]:
    """(name, note) of each Integration the gateway would match, as the gateway matches:
    workspace, document type and trigger; a suspended one still gets its run, which waits."""
    found = []
    for item in integrations:
        spec = item.get("spec") or {}
        if (spec.get("workspace"), spec.get("documentType"), spec.get("trigger")) != (
            workspace,
            document_type,
            trigger,
        ):
            continue
        note = "suspended: its run waits" if spec.get("suspend") else ""
        found.append((item["metadata"]["name"], note))
    return sorted(found)


def event_body(event: str, meta: dict[str, Any], moment: int) -> bytes:
    """The body the platform sends: `{event, timestamp, payload}` with the document's meta."""
    return json.dumps(
        {"event": event, "timestamp": moment, "payload": meta}, separators=(",", ":")
    ).encode()


def _signing_key(kube: Kube, namespace: str, secret: str) -> bytes:
    entries = secret_entries(kube, namespace, secret)
    keys = [value.strip() for name, value in sorted(entries.items()) if name.startswith("resthook")]
    keys = [k for k in keys if k]
    if not keys:
        raise CliError(f"Secret {namespace}/{secret} has no resthook* signing key")
    return keys[0]


def run_send(args: argparse.Namespace) -> int:
    if not args.gateway_url or not args.gateway_url.startswith(("http://", "https://")):
        raise CliError("--gateway-url (or DOCRELAY_GATEWAY_URL) must be the gateway's URL", 2)
    kube, namespace = connect(args)
    try:
        with platform_client(kube, namespace, args.secret) as platform:
            document = platform.get_document(args.document)
    except PlatformError as exc:
        raise CliError(f"the platform refused: {exc}") from None
    meta = dict(document.get("meta") or {})
    workspace = _identifier(meta.get("workspace"))
    document_type = _identifier(meta.get("documentType"))
    print(f"document {args.document}: workspace {workspace}, document type {document_type}")
    found = matching(kube.list_objects(INTEGRATIONS, namespace), workspace, document_type,
                     args.trigger)  # fmt: skip
    if found:
        for name, note in found:
            print(f"matches integration {name}" + (f" ({note})" if note else ""))
    else:
        print(
            f"matches no integration in namespace {namespace} (workspace {workspace}, document "
            f"type {document_type}, trigger {args.trigger}); sending anyway"
        )
    key = _signing_key(kube, namespace, args.signing_secret)
    moment = int(time.time())
    body = event_body(TRIGGER_EVENTS[args.trigger], meta, moment)
    url = f"{args.gateway_url.rstrip('/')}/v1/events/{namespace}"
    try:
        answer = httpx.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Hook-Signature": sign_resthook(body, key, moment),
            },
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"could not reach the gateway at {url}: {type(exc).__name__}") from None
    try:
        reply = answer.json()
    except ValueError:
        reply = {}
    if answer.status_code >= 400:
        raise CliError(f"the gateway answered {answer.status_code}: {reply.get('error', '')}")
    sent = datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")
    print(f"sent {TRIGGER_EVENTS[args.trigger]} at {sent}: {reply.get('outcome', '?')}"
          f" (event id {reply.get('eventId') or '-'})")  # fmt: skip
    for run in reply.get("runs") or []:
        what = "created" if run.get("created") else "existed already (a redelivery)"
        print(f"run {run.get('name')} for integration {run.get('integration')}: {what}")
    sys.stdout.flush()
    return 0
