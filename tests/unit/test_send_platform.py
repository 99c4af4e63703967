"""`docrelay send` and `docrelay platform` without a cluster: the body and signature the gateway
accepts, matching as the gateway matches, and the platform's workspace and document type lists
(client against the stand-in over real HTTP). tests/cluster/test_send_events.py runs them for
real."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.standins import server
from devkit.standins.platform import PlatformState, create_app
from docrelay.cli.platform_cmd import TRIGGER_EVENTS, event_body, matching
from docrelay.gateway.events import document_event, parse_body
from docrelay.gateway.signatures import sign_resthook, verify_resthook
from docrelay.platform.client import PlatformClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KEY = "test-api-key-0123456789"


def integration(name: str, workspace: str, document_type: str, trigger: str, **spec: object):
    return {
        "metadata": {"name": name},
        "spec": {
            "workspace": workspace,
            "documentType": document_type,
            "trigger": trigger,
            **spec,
        },
    }


def test_matching_is_the_gateways_workspace_document_type_and_trigger() -> None:
    items = [
        integration("b-orders", "ws", "dt", "DocumentParseCompleted"),
        integration("a-held", "ws", "dt", "DocumentParseCompleted", suspend=True),
        integration("other-trigger", "ws", "dt", "DocumentValidated"),
        integration("other-type", "ws", "dt2", "DocumentParseCompleted"),
    ]
    assert matching(items, "ws", "dt", "DocumentParseCompleted") == [
        ("a-held", "suspended: its run waits"),
        ("b-orders", ""),
    ]
    assert matching(items, "ws", "nope", "DocumentParseCompleted") == []


def test_the_body_is_signed_as_the_platform_signs_and_the_gateway_reads_it() -> None:
    meta = {
        "identifier": "XqLmNoPa",
        "workspace": {"identifier": "mEFayXdO", "name": "Accounts payable"},
        "documentType": "tVpGRBWd",
    }
    moment = int(time.time())
    body = event_body(TRIGGER_EVENTS["DocumentValidated"], meta, moment)
    key = b"k" * 32
    verify_resthook(body, {"X-Hook-Signature": sign_resthook(body, key, moment)}, [key], moment)
    event = document_event(parse_body(body))
    assert event is not None
    assert (event.event, event.trigger.value, event.document) == (
        "document.validate.completed",
        "DocumentValidated",
        "XqLmNoPa",
    )
    assert (event.workspace, event.document_type) == ("mEFayXdO", "tVpGRBWd")


@pytest.fixture
def platform() -> Iterator[PlatformClient]:
    state = PlatformState.from_dir(EXAMPLES, api_key=KEY)
    plug = server.Switch()
    plug.app = create_app(state)
    with server.serving(plug) as running, PlatformClient(running.base_url, KEY) as client:
        yield client
    state.close()


def test_the_platform_lists_workspaces_and_document_types(platform: PlatformClient) -> None:
    workspaces = {w["identifier"]: w["name"] for w in platform.list_workspaces()}
    assert workspaces == {"mEFayXdO": "Accounts payable", "kWpRsTuV": "Recruitment"}
    assert platform.list_workspaces(organization="someone-else") == []
    types = {t["identifier"]: t["name"] for t in platform.list_document_types()}
    assert types == {"tVpGRBWd": "Invoice", "pLmNbVcX": "Resume"}
    recruiting = platform.list_document_types(workspace="kWpRsTuV")
    assert [t["identifier"] for t in recruiting] == ["pLmNbVcX"]
