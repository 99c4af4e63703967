"""The runner's side of the broker: the key once, decryption into os.environ, masking of what
the code prints, the termination message's new field, and the SDK's typed errors. A local
HTTP server plays the broker."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from docrelay import sdk
from docrelay.masking import Masker
from docrelay.runner import contract
from docrelay.runner import main as runner
from docrelay.runner.contract import Outcome, parse_outcome
from docrelay.runner.envcrypt import encrypt_value
from docrelay.runner.secrets import SecretsProblem, open_secrets

KEY = bytes(range(32))
RUN_UID = "3f1c-uid"


class FakeBroker(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, Any]]] = {}
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _answer(self) -> None:
        FakeBroker.seen.append((self.command, self.path, self.headers.get("authorization", "")))
        status, body = FakeBroker.answers.get(self.path, (404, {"error": "no such path"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[dict[str, str]]:
    FakeBroker.answers, FakeBroker.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBroker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    yield {
        contract.ENV_BROKER_URL: f"http://127.0.0.1:{server.server_address[1]}",
        contract.ENV_BROKER_TOKEN_PATH: str(token),
    }
    server.shutdown()


def key_answer(attempt: int = 1) -> tuple[int, Any]:
    return 200, {
        "key": base64.urlsafe_b64encode(KEY).decode(),
        "runUid": RUN_UID,
        "attempt": attempt,
    }


def sealed_env(values: dict[str, str], attempt: int = 1) -> dict[str, str]:
    env = {n: encrypt_value(KEY, RUN_UID, attempt, n, v.encode()) for n, v in values.items()}
    env[contract.ENV_SEALED_KEYS] = ",".join(sorted(values))
    return env


def test_key_fetched_once_and_values_decrypted(broker: dict[str, str]) -> None:
    FakeBroker.answers["/v1/broker/key"] = key_answer()
    environ = {**broker, **sealed_env({"API_KEY": "sk-live-123", "OTHER": "pässword"})}
    target: dict[str, str] = {}
    assert sorted(open_secrets(environ, target, 1)) == ["pässword", "sk-live-123"]
    assert target == {"API_KEY": "sk-live-123", "OTHER": "pässword"}
    assert FakeBroker.seen == [("POST", "/v1/broker/key", "Bearer projected-token")]


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        ((403, {"error": "the key was released to this pod already"}), "ConfigurationError"),
        ((503, {"error": "temporarily unavailable"}), "TransientError"),
        (key_answer(attempt=2), "ConfigurationError"),  # a key for another attempt
        ((200, {"key": "short"}), "ConfigurationError"),
    ],
)
def test_key_refusals(broker: dict[str, str], answer: Any, error_class: str) -> None:
    FakeBroker.answers["/v1/broker/key"] = answer
    with pytest.raises(SecretsProblem) as problem:
        open_secrets({**broker, **sealed_env({"API_KEY": "sk-live-123"})}, {}, 1)
    assert problem.value.error_class == error_class
    assert "projected-token" not in str(problem.value)


def test_a_value_for_another_attempt_does_not_open(broker: dict[str, str]) -> None:
    FakeBroker.answers["/v1/broker/key"] = key_answer()
    with pytest.raises(SecretsProblem, match="does not open"):
        open_secrets({**broker, **sealed_env({"API_KEY": "sk-live-123"}, attempt=2)}, {}, 1)


def test_no_broker_leaves_ciphertext() -> None:
    environ = sealed_env({"API_KEY": "sk-live-123"})
    target: dict[str, str] = {}
    assert open_secrets(environ, target, 1) == [] and target == {}


def test_broker_unreachable_is_transient(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    environ = {
        contract.ENV_BROKER_URL: "http://127.0.0.1:9",  # discard port: nothing listens
        contract.ENV_BROKER_TOKEN_PATH: str(token),
        **sealed_env({"API_KEY": "sk-live-123"}),
    }
    with pytest.raises(SecretsProblem) as problem:
        open_secrets(environ, {}, 1)
    assert problem.value.error_class == "TransientError"


def test_masked_stream_catches_every_form_and_split_writes() -> None:
    value = 'sk"live/+&123'
    out = io.StringIO()
    stream = runner.MaskedStream(out, Masker([value]))
    stream.write("raw " + value + "\n")
    stream.write(json.dumps({"k": value}) + "\n")
    stream.write("b64 " + base64.b64encode(value.encode()).decode() + "\n")
    stream.write("split " + value[:5])
    stream.flush()
    assert value[:5] not in out.getvalue()  # held back: it could be the start of a value
    stream.write(value[5:] + " end")
    stream.close_masking()
    text = out.getvalue()
    assert text == 'raw ***\n{"k": "***"}\nb64 ***\nsplit *** end', text


def test_full_lines_are_released_at_once() -> None:
    out = io.StringIO()
    stream = runner.MaskedStream(out, Masker(["secret-value"]))
    stream.write("progress 1\n")
    assert out.getvalue() == "progress 1\n"


def test_termination_message_with_traceback_tail(tmp_path: Path) -> None:
    code = tmp_path / "handler.py"
    code.write_text(
        "def helper(d):\n    return d['invoiceNumber']\n\n"
        "def lambda_handler(event, context):\n    return helper({})\n"
    )
    outcome = runner.run({contract.ENV_CODE_PATH: str(code), contract.ENV_TIMEOUT: "5"})
    assert (outcome.error_class, outcome.exception_type) == ("CodeError", "KeyError")
    assert outcome.message == "KeyError: 'invoiceNumber'"
    assert outcome.traceback_tail is not None
    assert outcome.traceback_tail.startswith("handler.py:2 in helper <- handler.py:5")
    parsed = parse_outcome(outcome.to_json())
    assert parsed is not None and parsed.traceback_tail == outcome.traceback_tail


def test_outcome_masked_before_it_leaves_the_pod() -> None:
    runner._masker = Masker(["sk-live-123"])
    try:
        masked = runner.mask_outcome(
            Outcome("Failed", "CodeError", "ValueError", "ValueError: sk-live-123", "sk-live-123")
        )
    finally:
        runner._masker = None
    assert masked.message == "ValueError: ***" and masked.result_summary == "***"


def test_sdk_calls_and_typed_errors(
    broker: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in broker.items():
        monkeypatch.setenv(name, value)
    document = {"data": {"invoiceNumber": "INV-1"}, "meta": {"identifier": "d 1"}}
    FakeBroker.answers["/v1/broker/documents/d%201"] = (200, document)
    FakeBroker.answers["/v1/broker/documents/d%201/portal-url"] = (200, {"url": "https://x/r"})
    FakeBroker.answers["/v1/broker/documents/d%201/validation-results"] = (
        200,
        {"results": [{"passed": True}]},
    )
    FakeBroker.answers["/v1/broker/documents/other"] = (403, {"error": "not this run's document"})
    FakeBroker.answers["/v1/broker/documents/busy"] = (503, {"error": "unavailable"})
    assert sdk.get_document("d 1") == document
    assert sdk.get_document_portal_url("d 1") == "https://x/r"
    assert sdk.get_validation_results("d 1") == [{"passed": True}]
    with pytest.raises(sdk.Forbidden) as forbidden:
        sdk.get_document("other")
    assert contract.classify(forbidden.value) == "CodeError"
    with pytest.raises(sdk.BrokerUnavailable) as busy:
        sdk.get_document("busy")
    assert contract.classify(busy.value) == "TransientError"
    with pytest.raises(sdk.DocumentNotFound):
        sdk.get_document("missing")
    # Connected accounts (api_request, execute_action): tests/unit/test_sdk_accounts.py.
