"""Conversations with the agent (IntegrationConversation, docs/agent.md): one thread per
purpose, named for it (`INTEGRATION-build`, `INTEGRATION-change`, `RUN-fix` for "Fix in
Chat"), owned by the Integration; a person's turns are appended to its spec, guarded by
resourceVersion, and the operator's agent answers in its status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from docrelay.actions import Refused, get_integration
from docrelay.kube import INTEGRATIONS, Kube
from docrelay.kube import runs as kube_runs
from docrelay.models import API_VERSION, GROUP, VERSION
from docrelay.models.conversation import MAX_TURN_TEXT
from docrelay.reconcile.conversation import CONVERSATION_ANNOTATION

CONVERSATIONS = "integrationconversations"
PURPOSES = ("Build", "Change", "Fix")


def thread_name(integration: str, purpose: str, run: str | None = None) -> str:
    if purpose == "Fix":
        if not run:
            raise Refused("a Fix thread names the run it fixes")
        return f"{run}-fix"
    return f"{integration}-{purpose.lower()}"


def get_thread(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(CONVERSATIONS, namespace, name)


def open_thread(
    kube: Kube, namespace: str, integration: str, purpose: str, run: str | None = None
) -> dict[str, Any]:
    """The thread for this purpose, created (owned by the Integration) if missing. A Fix
    thread's run must be one of the integration's."""
    if purpose not in PURPOSES:
        raise Refused("a conversation is to Build, Change or Fix an integration")
    name = thread_name(integration, purpose, run)
    found = get_thread(kube, namespace, name)
    if found is not None:
        return found
    owner = get_integration(kube, namespace, integration)
    if run is not None:
        found_run = kube.get(kube_runs.RUNS, namespace, run)
        if found_run is None or (found_run.get("spec") or {}).get("integration") != integration:
            raise Refused(f"run {run} of integration {integration} not found")
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "IntegrationConversation",
        "metadata": {
            "name": name,
            "labels": {"docrelay.io/integration": integration},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Integration",
                    "name": integration,
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "spec": {"integration": integration, "purpose": purpose, "turns": []},
    }
    if run is not None:
        body["spec"]["run"] = run
    created = kube.create_or_get(CONVERSATIONS, namespace, body)
    if purpose == "Build":
        # The thread writes the code: the one-shot generation from instructions stands aside.
        kube.patch_annotations(
            INTEGRATIONS, namespace, integration, {CONVERSATION_ANNOTATION: name}
        )
    return created


def append_turn(kube: Kube, namespace: str, name: str, by: str, **turn: Any) -> str:
    """Append one user turn (`text`, or an `action` such as Approve); retried when someone
    else appended first. Its id."""
    if len(str(turn.get("text") or "")) > MAX_TURN_TEXT:
        raise Refused(f"a turn holds at most {MAX_TURN_TEXT} characters: say it in parts")
    for _ in range(5):
        thread = get_thread(kube, namespace, name)
        if thread is None:
            raise Refused(f"conversation {name} not found")
        turns = list((thread.get("spec") or {}).get("turns") or [])
        entry = {
            "id": f"u-{len(turns) + 1}",
            "by": by,
            "at": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            **turn,
        }
        patch = {  # append-only; the resourceVersion refuses a concurrent append
            "metadata": {"resourceVersion": thread["metadata"]["resourceVersion"]},
            "spec": {"turns": [*turns, entry]},
        }
        try:
            kube.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, CONVERSATIONS, name, patch
            )
        except ApiException as exc:
            if exc.status == 409:
                continue
            if exc.status == 403:
                raise Refused(
                    f"you may not add turns to {name}: that needs patch on "
                    "integrationconversations, as editing the integration does"
                ) from None
            raise Refused(f"adding a turn to {name}: {exc.reason}") from None
        return str(entry["id"])
    raise Refused(f"conversation {name} kept changing; try again")
