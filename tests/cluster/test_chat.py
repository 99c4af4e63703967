"""Conversations with the agent (IntegrationConversation, docs/agent.md "Conversations"):
what the real API server lets a user do with a thread's turns."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from docrelay.models import GROUP, VERSION

PLURAL = "integrationconversations"


def _thread(name: str = "invoices-build-1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "IntegrationConversation",
        "metadata": {"name": name},
        "spec": {
            "integration": "invoices",
            "purpose": "Build",
            "turns": [{"id": "u-1", "text": "Post each invoice to the ERP."}],
        },
    }


def _patch(api: client.ApiClient, ns: str, name: str, turns: list[dict[str, Any]]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": {"turns": turns}}
    )


def _refused(api: client.ApiClient, ns: str, name: str, turns: list[dict[str, Any]]) -> str:
    with pytest.raises(ApiException) as caught:
        _patch(api, ns, name, turns)
    assert caught.value.status == 422
    return str(caught.value.body)


def test_a_user_appends_turns_but_cannot_edit_or_remove_one(
    api: client.ApiClient, namespace: str
) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _thread())
    first = {"id": "u-1", "text": "Post each invoice to the ERP."}
    second = {"id": "u-2", "text": "The PO can be empty: send null."}

    _patch(api, namespace, "invoices-build-1", [first, second])

    edited = {"id": "u-1", "text": "Post each invoice to the CRM."}
    assert "a turn cannot be changed once written" in _refused(
        api, namespace, "invoices-build-1", [edited, second]
    )
    assert "turns are append-only" in _refused(
        api, namespace, "invoices-build-1", [second, {"id": "u-3", "action": "Approve"}]
    )
    stored = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "invoices-build-1"
    )
    assert [t["id"] for t in stored["spec"]["turns"]] == ["u-1", "u-2"]
    assert stored["spec"]["turns"][0]["text"] == "Post each invoice to the ERP."


def test_the_subject_of_a_thread_cannot_change(api: client.ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _thread())
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "invoices-build-1",
            {"spec": {"integration": "other"}},
        )
    assert caught.value.status == 422
    assert "integration is immutable" in str(caught.value.body)
