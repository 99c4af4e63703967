"""The gateway's pure parts: body model, event mapping, event ids, matching index, refusals."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from docrelay.cli import main
from docrelay.gateway.app import keys_from_secret
from docrelay.gateway.events import (
    DocumentEvent,
    RequestError,
    document_event,
    event_time,
    parse_body,
    resthook_event_id,
    standard_event_id,
)
from docrelay.gateway.index import IntegrationIndex
from docrelay.gateway.runs import run_manifest
from docrelay.models.common import Trigger
from docrelay.models.run import IntegrationRun
from docrelay.naming import run_name


def body(payload: Any, event: str = "document.parse.completed", ts: Any = 1767225600) -> bytes:
    return json.dumps({"event": event, "timestamp": ts, "payload": payload}).encode()


FLAT = {"identifier": "doc1", "workspace": "ws1", "documentType": "dt1"}
NESTED = {
    "identifier": "doc1",
    "workspace": {"identifier": "ws1", "name": "Invoices"},
    "documentType": {"identifier": "dt1", "name": "Invoice"},
}
META = {"meta": {"identifier": "doc1", "workspace": {"identifier": "ws1"}, "documentType": "dt1"}}
DOCUMENT = {"document": {"meta": NESTED}}
SNAKE = {"document_identifier": "doc1", "workspace": "ws1", "document_type": "dt1"}


@pytest.mark.parametrize("payload", [FLAT, NESTED, META, DOCUMENT, SNAKE])
def test_payload_shapes_all_name_the_same_document(payload: dict[str, Any]) -> None:
    event = document_event(parse_body(body(payload)))
    assert event is not None
    assert (event.document, event.workspace, event.document_type) == ("doc1", "ws1", "dt1")
    assert event.trigger is Trigger.DOCUMENT_PARSE_COMPLETED


def test_event_mapping() -> None:
    validated = document_event(parse_body(body(FLAT, "document.validate.completed")))
    assert validated is not None and validated.trigger is Trigger.DOCUMENT_VALIDATED
    for other in ("document.parse.failed", "annotation.validated", "document.rejected"):
        assert document_event(parse_body(body(FLAT, other))) is None


def test_standard_webhooks_spelling() -> None:
    data = json.dumps({"type": "document.parse.completed", "timestamp": 1, "data": FLAT})
    assert document_event(parse_body(data.encode())) is not None


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"{", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[]", 422, "JSON object"),
        (b'{"event": "x"}', 422, "timestamp"),
        (json.dumps({"event": "", "timestamp": 1, "payload": {}}).encode(), 422, "event"),
        (body({"workspace": "ws1", "documentType": "dt1"}), 422, "document identifier"),
        (body({"identifier": "doc1"}), 422, "workspace, document type"),
        (body({**FLAT, "identifier": "../etc"}), 422, "not a platform identifier"),
        (body({**FLAT, "workspace": 7}), 422, "workspace"),
    ],
)
def test_refusals_have_a_status_and_a_short_reason(raw: bytes, status: int, reason: str) -> None:
    with pytest.raises(RequestError) as caught:
        document_event(parse_body(raw))
    assert caught.value.status == status
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 240


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1767225600, 1767225600),
        (1767225600123, 1767225600.123),
        ("1767225600", 1767225600),
        ("2026-01-01T00:00:00Z", 1767225600),
        ("2026-01-01T01:00:00+01:00", 1767225600),
    ],
)
def test_event_time(value: Any, seconds: float) -> None:
    assert event_time(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["yesterday", "2026-01-01T00:00:00", True])
def test_event_time_refuses(value: Any) -> None:
    with pytest.raises(RequestError):
        event_time(value)


def _event(**changes: Any) -> DocumentEvent:
    base = {
        "event": "document.parse.completed",
        "trigger": Trigger.DOCUMENT_PARSE_COMPLETED,
        "timestamp": "2026-01-01T00:00:00Z",
        "document": "doc1",
        "workspace": "ws1",
        "document_type": "dt1",
    }
    return DocumentEvent(**{**base, **changes})


def test_resthook_event_id_is_deterministic_and_distinguishes_events() -> None:
    one = resthook_event_id(_event())
    assert one == resthook_event_id(_event())
    assert one.startswith("rh-") and len(one) == 43
    assert one != resthook_event_id(_event(timestamp="2026-01-01T00:00:01Z"))
    assert one != resthook_event_id(_event(document="doc2"))
    assert one != resthook_event_id(_event(event="document.validate.completed"))


def test_standard_event_id() -> None:
    assert standard_event_id("msg_2Lh9") == "msg_2Lh9"
    odd = standard_event_id("msg 2/9")
    assert odd.startswith("wh-") and odd == standard_event_id("msg 2/9")
    assert standard_event_id("x" * 200).startswith("wh-")


def test_run_manifest_passes_the_model_and_uses_naming() -> None:
    event = _event()
    event_id = resthook_event_id(event)
    manifest = run_manifest("tenant-a", "to-xero", event, event_id)
    run = IntegrationRun.model_validate(manifest)
    assert run.spec.integration == "to-xero"
    assert run.spec.event_id == event_id
    assert manifest["metadata"]["name"] == run_name(
        "to-xero", event_id, "doc1", "DocumentParseCompleted"
    )
    assert run_manifest("tenant-a", "to-xero", event, event_id) == manifest


def _integration(name: str, ns: str = "a", ws: str = "ws1", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"workspace": ws, "documentType": "dt1", "trigger": "DocumentValidated", **spec},
    }


def test_index_matches_by_namespace_workspace_type_and_trigger() -> None:
    index = IntegrationIndex()
    assert not index.synced
    index.replace(
        [
            _integration("one"),
            _integration("paused", suspend=True),
            _integration("elsewhere", ns="b"),
            _integration("other-ws", ws="ws2"),
        ]
    )
    assert index.synced
    assert index.match("a", "ws1", "dt1", "DocumentValidated") == ["one", "paused"]
    assert index.match("a", "ws1", "dt1", "DocumentParseCompleted") == []
    assert index.match("b", "ws1", "dt1", "DocumentValidated") == ["elsewhere"]

    index.apply("MODIFIED", _integration("one", ws="ws2"))  # moved to another workspace
    assert index.match("a", "ws1", "dt1", "DocumentValidated") == ["paused"]
    assert index.match("a", "ws2", "dt1", "DocumentValidated") == ["one", "other-ws"]
    index.apply("DELETED", _integration("other-ws", ws="ws2"))
    index.apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert index.match("a", "ws2", "dt1", "DocumentValidated") == ["one"]
    deleting = _integration("paused")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    index.apply("MODIFIED", deleting)
    assert index.match("a", "ws1", "dt1", "DocumentValidated") == []
    index.apply("ADDED", {"metadata": {"name": "broken", "namespace": "a"}, "spec": {}})
    assert len(index) == 2


def test_keys_from_secret() -> None:
    std = base64.b64encode(b"k" * 24)
    data = {
        "resthook-current": base64.b64encode(b"key-1").decode(),
        "resthook-previous": base64.b64encode(b"key-0\n").decode(),
        "standard-current": base64.b64encode(b"whsec_" + std).decode(),
        "standard-bad": base64.b64encode(b"not base64!").decode(),
        "unrelated": base64.b64encode(b"x").decode(),
    }
    keys = keys_from_secret(data)
    assert keys.resthook == (b"key-1", b"key-0")
    assert keys.standard == (b"k" * 24,)


class _Platform(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        sent = json.loads(self.rfile.read(length))
        _Platform.seen.append((self.path, self.headers.get("authorization"), sent))
        self.send_response(201)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"id": len(_Platform.seen)}).encode())

    def log_message(self, *_: Any) -> None:
        pass


def test_subscribe_posts_one_subscription_per_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DOCRELAY_GATEWAY_PLATFORM_TOKEN", "tok-1")
        monkeypatch.setenv("DOCRELAY_GATEWAY_PLATFORM_ORGANIZATION", "org1")
        code = main(
            [
                "subscribe",
                "--workspace",
                "ws1",
                "--url",
                "https://hooks.example.com/v1/events/tenant-a",
                "--platform-url",
                f"http://127.0.0.1:{server.server_address[1]}",
            ]
        )
    finally:
        server.shutdown()
    assert code == 0
    assert [(p, a) for p, a, _ in _Platform.seen] == [
        ("/v3/resthook_subscriptions", "Bearer tok-1")
    ] * 2
    assert [s["event"] for _, _, s in _Platform.seen] == [
        "document.parse.completed",
        "document.validate.completed",
    ]
    assert _Platform.seen[0][2] == {
        "targetUrl": "https://hooks.example.com/v1/events/tenant-a",
        "event": "document.parse.completed",
        "organization": "org1",
        "workspace": "ws1",
        "version": "v3",
    }
    assert "tok-1" not in capsys.readouterr().out


def test_subscribe_without_platform_url_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DOCRELAY_GATEWAY_PLATFORM_URL", raising=False)
    assert main(["subscribe", "--workspace", "ws1", "--url", "https://x/"]) == 2
    assert "platform URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "examples" / "documents").glob("*.json"))
)
def test_the_platform_stand_ins_payload_is_understood(path: Path) -> None:
    """The stand-in delivers the document's `meta` as the payload (devkit/standins)."""
    meta = json.loads(path.read_text())["meta"]
    event = document_event(parse_body(body(meta)))
    assert event is not None
    assert event.document == meta["identifier"]
    assert event.workspace == meta["workspace"]["identifier"]
    kind = meta["documentType"]
    assert event.document_type == (kind if isinstance(kind, str) else kind["identifier"])
