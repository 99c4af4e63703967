"""The platform stand-in over real HTTP on 127.0.0.1: auth, errors, data, the RESThook
handshake, signed deliveries the gateway accepts, auto-deactivation, fault injection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devkit.standins import server
from devkit.standins.platform import HookReceiver, PlatformState, create_app
from devkit.standins.server import Switch
from docrelay.gateway.events import document_event, parse_body
from docrelay.gateway.signatures import SignatureError, verify_resthook
from docrelay.models.common import Trigger

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
KEY = "test-api-key-0123456789"
ORG = "dRlyOrg1"
INVOICE = "XqLmNoPa"
VALIDATED_INVOICE = "VbTrEwQz"
RESUME = "RsUmEiOp"
INVOICES_WS, INVOICE_TYPE = "mEFayXdO", "tVpGRBWd"
RECRUITING_WS, RESUME_TYPE = "kWpRsTuV", "pLmNbVcX"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Switch, str, Switch, str]]:
    platform_plug, receiver_plug = Switch(), Switch()
    with server.serving(platform_plug) as platform, server.serving(receiver_plug) as hooks:
        yield platform_plug, platform.base_url, receiver_plug, hooks.base_url


@pytest.fixture
def state(servers: tuple[Switch, str, Switch, str]) -> Iterator[PlatformState]:
    platform_state = PlatformState.from_dir(EXAMPLES, api_key=KEY)
    servers[0].app = create_app(platform_state)
    yield platform_state
    platform_state.close()


@pytest.fixture
def platform(
    servers: tuple[Switch, str, Switch, str], state: PlatformState
) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=servers[1], headers=headers, timeout=10) as http:
        yield http


@pytest.fixture
def receiver(servers: tuple[Switch, str, Switch, str]) -> tuple[HookReceiver, str]:
    hooks = HookReceiver()
    servers[2].app = hooks.app()
    return hooks, f"{servers[3]}/hooks/affinda"


def subscribe(
    http: httpx.Client, target: str, event: str = "document.parse.completed", **extra: str
) -> httpx.Response:
    body = {"targetUrl": target, "event": event, "organization": ORG, "version": "v3", **extra}
    return http.post("/v3/resthook_subscriptions", json=body)


def subscribe_and_activate(
    http: httpx.Client, hooks: HookReceiver, target: str, **extra: str
) -> int:
    created = subscribe(http, target, **extra)
    assert created.status_code == 201, created.text
    activated = http.post(
        "/v3/resthook_subscriptions/activate", headers={"X-Hook-Secret": hooks.hook_secrets[-1]}
    )
    assert activated.status_code == 200 and activated.json()["active"] is True
    return int(created.json()["id"])


# Authentication and errors.


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_authenticated"),
        ({"Authorization": "Bearer wrong-key"}, "authentication_failed"),
        ({"Authorization": f"Token {KEY}"}, "authentication_failed"),
    ],
)
def test_requests_without_the_right_key_get_401(
    platform: httpx.Client, state: PlatformState, headers: dict[str, str], code: str
) -> None:
    response = httpx.get(f"{platform.base_url}/v3/documents/{INVOICE}", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "client_error"
    assert response.json()["errors"][0]["code"] == code
    recorded = state.requests[-1]
    assert not recorded.authorized
    # The stand-in keeps no Authorization value, right or wrong.
    assert KEY not in json.dumps(recorded.headers)


def test_unknown_document_and_unknown_path_are_platform_shaped_404s(
    platform: httpx.Client,
) -> None:
    for path in ("/v3/documents/nope1234", "/v3/document_types/nope1234", "/v3/nothing-here"):
        response = platform.get(path)
        assert response.status_code == 404, path
        body = response.json()
        assert body["type"] == "client_error"
        assert [(e["attr"], e["code"]) for e in body["errors"]] == [(None, "not_found")]


def test_invalid_subscription_bodies_are_400_with_the_field(
    platform: httpx.Client, receiver: tuple[HookReceiver, str]
) -> None:
    _, target = receiver
    cases = [
        ({"event": "document.parse.completed", "organization": ORG}, "targetUrl"),
        ({"targetUrl": target, "event": "document.exploded", "organization": ORG}, "event"),
        (
            {"targetUrl": target, "event": "document.parse.completed", "organization": "x"},
            "organization",
        ),
        (
            {
                "targetUrl": target,
                "event": "document.parse.completed",
                "organization": ORG,
                "workspace": "unknown1",
            },
            "workspace",
        ),
        (
            {
                "targetUrl": "https://hooks.example.com/x",
                "event": "document.parse.completed",
                "organization": ORG,
            },
            "targetUrl",
        ),
    ]
    for body, attr in cases:
        response = platform.post("/v3/resthook_subscriptions", json=body)
        assert response.status_code == 400, body
        assert response.json()["type"] == "validation_error"
        assert response.json()["errors"][0]["attr"] == attr


# Data.


def test_documents_are_served_in_the_documented_shape(platform: httpx.Client) -> None:
    document = platform.get(f"/v3/documents/{INVOICE}").json()
    assert set(document) == {"data", "meta", "error", "warnings"}
    meta = document["meta"]
    assert meta["identifier"] == INVOICE
    assert meta["workspace"]["identifier"] == INVOICES_WS
    assert meta["documentType"] == INVOICE_TYPE
    for name in (
        "fileName",
        "ready",
        "readyDt",
        "failed",
        "isConfirmed",
        "createdDt",
        "reviewUrl",
        "file",
        "pages",
        "language",
    ):
        assert name in meta, name
    assert document["data"]["invoiceNumber"] == "INV-2025-0418"
    assert platform.get(f"/v3/documents/{RESUME}").json()["data"]["candidateName"] == {
        "firstName": "Amelia",
        "middleName": None,
        "familyName": "Chen",
    }


def test_documents_list_filters_orders_and_pages(platform: httpx.Client) -> None:
    page = platform.get(
        "/v3/documents", params={"workspace": INVOICES_WS, "document_type": INVOICE_TYPE}
    ).json()
    assert page["count"] == 2
    assert [r["meta"]["identifier"] for r in page["results"]] == [VALIDATED_INVOICE, INVOICE]
    assert page["results"][0]["data"] == {}  # meta only unless include_data=true
    first = platform.get("/v3/documents", params={"limit": 1}).json()
    assert first["count"] == 3 and len(first["results"]) == 1 and first["previous"] is None
    second = platform.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["previous"] is not None
    assert platform.get("/v3/documents", params={"limit": 301}).status_code == 400


def test_document_types_schemas_and_validation_results(platform: httpx.Client) -> None:
    document_type = platform.get(f"/v3/document_types/{INVOICE_TYPE}").json()
    assert document_type["name"] == "Invoice" and "jsonSchema" not in document_type
    schema = platform.get(f"/v3/document_types/{INVOICE_TYPE}/json_schema").json()
    assert schema["type"] == "object" and "invoiceNumber" in schema["properties"]
    results = platform.get("/v3/validation_results", params={"document": INVOICE}).json()
    assert [r["ruleSlug"] for r in results] == [
        "total-equals-subtotal-plus-tax",
        "purchase-order-exists",
    ]
    assert platform.get("/v3/validation_results", params={"document": RESUME}).json() == []
    missing = platform.get("/v3/validation_results")
    assert missing.status_code == 400 and missing.json()["errors"][0]["attr"] == "document"


# The handshake.


def test_subscribe_sends_the_hook_secret_and_activation_needs_it(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    created = subscribe(platform, target)
    assert created.status_code == 201
    body = created.json()
    assert body["active"] is False and body["targetUrl"] == target
    assert body["organization"]["identifier"] == ORG
    [handshake] = hooks.received
    secret = handshake.headers["x-hook-secret"]
    assert len(secret) == 64 and handshake.body == b""

    # Not active yet: nothing is delivered.
    assert state.deliver("document.parse.completed", INVOICE) == []
    wrong = platform.post("/v3/resthook_subscriptions/activate", headers={"X-Hook-Secret": "x"})
    assert wrong.status_code == 400
    assert platform.post("/v3/resthook_subscriptions/activate").status_code == 400
    activated = platform.post(
        "/v3/resthook_subscriptions/activate", headers={"X-Hook-Secret": secret}
    )
    assert activated.status_code == 200 and activated.json()["active"] is True
    [delivery] = state.deliver("document.parse.completed", INVOICE)
    assert delivery.ok and len(hooks.events()) == 1


def test_a_receiver_that_refuses_the_handshake_gets_no_subscription(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    hooks.handshake_status = 403
    response = subscribe(platform, target)
    assert response.status_code == 400
    assert "did not confirm" in response.json()["errors"][0]["detail"]
    assert state.subscriptions == {}


def test_a_receiver_may_activate_after_answering_as_the_gateway_does(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver

    def activate(secret: str) -> None:
        platform.post("/v3/resthook_subscriptions/activate", headers={"X-Hook-Secret": secret})

    hooks.on_handshake = activate
    subscription_id = subscribe(platform, target).json()["id"]
    deadline = time.monotonic() + 5
    while not state.subscriptions[subscription_id].active:
        assert time.monotonic() < deadline, "the receiver never activated"
        time.sleep(0.01)


def test_subscriptions_list_get_delete(
    platform: httpx.Client, receiver: tuple[HookReceiver, str]
) -> None:
    _, target = receiver
    first = subscribe(platform, target).json()["id"]
    second = subscribe(platform, target, event="document.validate.completed").json()["id"]
    listed = platform.get("/v3/resthook_subscriptions").json()
    assert listed["count"] == 2 and [s["id"] for s in listed["results"]] == [first, second]
    assert platform.get(f"/v3/resthook_subscriptions/{second}").json()["event"] == (
        "document.validate.completed"
    )
    assert platform.delete(f"/v3/resthook_subscriptions/{first}").status_code == 204
    assert platform.get(f"/v3/resthook_subscriptions/{first}").status_code == 404
    assert platform.delete(f"/v3/resthook_subscriptions/{first}").status_code == 404


# Delivery.


def test_delivery_is_signed_with_the_organisation_key_and_the_gateway_accepts_it(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    subscribe_and_activate(platform, hooks, target)
    now = int(time.time())
    [delivery] = state.deliver("document.parse.completed", INVOICE)
    assert delivery.status == 200
    [received] = hooks.events()
    key = state.signature_key.encode()
    verified = verify_resthook(received.body, received.headers, [key], now=time.time())
    assert abs(verified.timestamp - now) <= 2
    with pytest.raises(SignatureError):
        verify_resthook(received.body, received.headers, [b"another org's key"], time.time())
    with pytest.raises(SignatureError):
        verify_resthook(received.body + b" ", received.headers, [key], time.time())

    body = json.loads(received.body)
    assert set(body) == {"event", "timestamp", "payload"}
    assert body["event"] == "document.parse.completed"
    assert body["timestamp"] == verified.timestamp
    payload = body["payload"]
    assert payload["identifier"] == INVOICE
    assert payload["workspace"] == {"identifier": INVOICES_WS, "name": "Accounts payable"}
    assert payload["documentType"] == INVOICE_TYPE
    assert "invoiceNumber" not in received.body.decode()  # identifiers, not document data

    # What the gateway makes of it (operator/docrelay/gateway/events.py).
    event = document_event(parse_body(received.body))
    assert event is not None
    assert (event.trigger, event.document, event.workspace, event.document_type) == (
        Trigger.DOCUMENT_PARSE_COMPLETED,
        INVOICE,
        INVOICES_WS,
        INVOICE_TYPE,
    )


def test_delivery_matches_event_and_workspace(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    invoices = subscribe_and_activate(platform, hooks, target, workspace=INVOICES_WS)
    everything = subscribe_and_activate(platform, hooks, target)
    validated = subscribe_and_activate(platform, hooks, target, event="document.validate.completed")
    to = {d.subscription_id for d in state.deliver("document.parse.completed", INVOICE)}
    assert to == {invoices, everything}
    to = {d.subscription_id for d in state.deliver("document.parse.completed", RESUME)}
    assert to == {everything}
    to = {d.subscription_id for d in state.deliver("document.validate.completed", RESUME)}
    assert to == {validated}
    event = document_event(parse_body(hooks.events()[-1].body))
    assert event is not None and event.trigger == Trigger.DOCUMENT_VALIDATED
    assert (event.workspace, event.document_type) == (RECRUITING_WS, RESUME_TYPE)
    with pytest.raises(KeyError):
        state.deliver("document.parse.completed", "nope1234")


def test_ten_failed_deliveries_in_a_row_deactivate_the_subscription(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    subscription_id = subscribe_and_activate(platform, hooks, target)
    hooks.status = 500
    for _ in range(5):
        state.deliver("document.parse.completed", INVOICE)
    hooks.status = 200  # a success resets the count
    state.deliver("document.parse.completed", INVOICE)
    hooks.status = 500
    for _ in range(9):
        [delivery] = state.deliver("document.parse.completed", INVOICE)
        assert delivery.status == 500 and not delivery.ok
    assert state.subscriptions[subscription_id].active
    state.deliver("document.parse.completed", INVOICE)  # the tenth in a row

    shown = platform.get(f"/v3/resthook_subscriptions/{subscription_id}").json()
    assert shown["active"] is False and shown["autoDeactivated"] is True
    assert shown["autoDeactivateReason"].startswith("Resthook fails after 10 retries.")
    assert "500" in shown["autoDeactivateReason"]
    posts = len(hooks.events())
    assert state.deliver("document.parse.completed", INVOICE) == []
    assert len(hooks.events()) == posts

    # Re-activating with the same secret brings it back.
    hooks.status = 200
    platform.post(
        "/v3/resthook_subscriptions/activate", headers={"X-Hook-Secret": hooks.hook_secrets[0]}
    )
    [delivery] = state.deliver("document.parse.completed", INVOICE)
    assert delivery.ok


def test_an_unreachable_receiver_counts_as_a_failed_delivery(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    subscription_id = subscribe_and_activate(platform, hooks, target)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    state.subscriptions[subscription_id].target_url = f"http://127.0.0.1:{closed_port}/x"
    [delivery] = state.deliver("document.parse.completed", INVOICE)
    assert delivery.status is None and delivery.error == "ConnectError"
    assert state.subscriptions[subscription_id].consecutive_failures == 1


# Test hooks.


def test_injected_faults_answer_the_next_calls_then_stop(
    platform: httpx.Client, state: PlatformState
) -> None:
    state.fail_next(429, count=2, retry_after=3)
    state.fail_next(503, count=1, path_prefix="/v3/document_types/")
    statuses = [platform.get(f"/v3/documents/{INVOICE}").status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert platform.get(f"/v3/documents/{INVOICE}").status_code == 200
    throttled = state.requests_to(f"/v3/documents/{INVOICE}")
    assert len(throttled) == 4 and all(r.authorized for r in throttled)
    assert platform.get(f"/v3/document_types/{INVOICE_TYPE}").status_code == 503
    assert platform.get(f"/v3/document_types/{INVOICE_TYPE}").status_code == 200


def test_injected_429_carries_retry_after_and_the_error_shape(
    platform: httpx.Client, state: PlatformState
) -> None:
    state.fail_next(429, retry_after=7)
    response = platform.get(f"/v3/documents/{INVOICE}")
    assert response.headers["retry-after"] == "7"
    assert response.json()["errors"][0]["code"] == "throttled"


def test_control_endpoints_deliver_for_a_separate_process(
    platform: httpx.Client, state: PlatformState, receiver: tuple[HookReceiver, str]
) -> None:
    hooks, target = receiver
    subscription_id = subscribe_and_activate(platform, hooks, target)
    answer = platform.post(
        "/_standin/deliver",
        json={"event": "document.parse.completed", "documentIdentifier": INVOICE},
    ).json()
    assert answer == {
        "deliveries": [
            {"subscription": subscription_id, "targetUrl": target, "status": 200, "error": None}
        ]
    }
    assert platform.post("/_standin/faults", json={"status": 500, "count": 1}).status_code == 200
    assert platform.get(f"/v3/documents/{INVOICE}").status_code == 500
    listed = platform.get("/_standin/requests").json()["requests"]
    assert listed[-2]["path"] == f"/v3/documents/{INVOICE}"  # [-1] is this listing
    assert httpx.post(f"{platform.base_url}/_standin/deliver", json={}).status_code == 401


def test_the_module_runs_as_a_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DOCRELAY_PLATFORM_API_KEY": KEY}
    env.pop("DOCRELAY_PLATFORM_SIGNATURE_KEY", None)  # generated, then
    keys_file = tmp_path / "keys"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devkit.standins.platform",
            "--port",
            str(port),
            "--data",
            str(EXAMPLES),
            "--keys-file",
            str(keys_file),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/v3/documents/{RESUME}",
                    headers={"Authorization": f"Bearer {KEY}"},
                )
                break
            except httpx.ConnectError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the stand-in did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["meta"]["identifier"] == RESUME
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "3 documents, 2 document types" in output
    assert KEY not in output  # a key given to it is never printed
    # The generated signature key is in a file only its owner reads, not in the output.
    assert f"generated signature key: written to {keys_file}" in output
    assert keys_file.stat().st_mode & 0o777 == 0o600
    (line,) = keys_file.read_text().splitlines()
    name, value = line.split(": ")
    assert name == "signature key" and len(value) == 64
    assert value not in output
    assert KEY not in keys_file.read_text()
