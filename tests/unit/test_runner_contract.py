"""The runner contract, one table run against both runners (docs/runner.md): the Python runner
(`python -m docrelay.runner`) and the Node.js runner (`node .../runner/node/runner.mjs`), each
as the process a run pod starts, with a local HTTP server as the broker and a local socket as
the egress proxy. Each case gives the same integration in Python and in JavaScript and says
what the operator reads: the termination message and the exit code, and what the log shows."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from docrelay.runner import contract
from docrelay.runner.envcrypt import encrypt_value
from tests.leakcheck import found

NODE_RUNNER = Path(contract.__file__).parent / "node" / "runner.mjs"
KEY = bytes(range(32))
RUN_UID = "7d2c-run-uid"
SECRET = "sk_live_Zq8=p@ss w/rd+é"
TOKEN = "projected-broker-token-0123456789"
EVENT = {
    "document_identifier": "doc-1",
    "trigger": "DocumentParseCompleted",
    "workspace": "ws",
    "document_type": "dt",
    "event_id": "evt-1",
    "idempotency_key": "idem-1",
    "test_run": False,
    "attempt": 1,
    "run": "orders-run-1",
    "integration": "orders",
    "replay_of": None,
}


def node() -> str:
    found = shutil.which("node")
    assert found, "Node.js is needed (Debian: apt-get install nodejs)"
    return found


class FakeBroker(BaseHTTPRequestHandler):
    answer: ClassVar[tuple[int, Any]] = (404, {"error": "no such path"})
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        FakeBroker.seen.append(self.headers.get("authorization", ""))
        status, body = FakeBroker.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        FakeBroker.seen.append(self.headers.get("authorization", ""))
        found = self.path == "/v1/broker/documents/doc-1"
        data = json.dumps(
            {"data": {"invoiceNumber": "INV-7"}, "meta": {}} if found else {"error": "not found"}
        ).encode()
        self.send_response(200 if found else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


class RefusingProxy:
    """An egress proxy that refuses every destination as the real one does (403 with the
    reason in the status line and header) and keeps the Proxy-Authorization it was sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.authorizations: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("proxy-authorization:"):
                        self.authorizations.append(line.split(":", 1)[1].strip())
                reason = "api.example.com:443 is not in spec.egress.hosts"
                conn.sendall(
                    f"HTTP/1.1 403 Egress Denied: {reason}\r\nX-Docrelay-Egress-Denied: {reason}"
                    "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
                )


@dataclass(frozen=True)
class Case:
    id: str
    python: str
    javascript: str
    status: str = "Succeeded"
    error_class: str | None = None
    exit_code: int = 0
    message: str | None = None  # a substring of the termination message's message
    summary: str | None = None  # the exact resultSummary
    env: dict[str, str] = field(default_factory=dict)
    secrets: bool = False  # API_KEY sealed for the run, the broker releases the key
    broker: tuple[int, Any] | None = None  # the broker's answer to the key request
    proxy: bool = False  # HTTPS_PROXY points at the refusing proxy
    proxy_down: bool = False  # HTTPS_PROXY points at a port where nothing listens
    hash_mismatch: bool = False


def key_answer() -> tuple[int, Any]:
    return 200, {"key": base64.urlsafe_b64encode(KEY).decode(), "runUid": RUN_UID, "attempt": 1}


PRINT_FORMS_PY = """
import base64, json, sys, urllib.parse
def lambda_handler(event, context):
    v = os.environ["API_KEY"]
    print("raw", v)
    print("b64", base64.b64encode(v.encode()).decode())
    print("hex", v.encode().hex())
    print("url", urllib.parse.quote(v, safe=""))
    print("json", json.dumps({"k": v}))
    sys.stdout.write("split " + v[:5]); sys.stdout.flush(); sys.stdout.write(v[5:] + " end\\n")
    print("to stderr", v, file=sys.stderr)
    return {"summary": "exported with " + v}
import os
"""
PRINT_FORMS_JS = """
export async function handler(event, context) {
  const v = process.env.API_KEY;
  console.log("raw", v);
  console.log("b64", Buffer.from(v).toString("base64"));
  console.log("hex", Buffer.from(v).toString("hex"));
  console.log("url", encodeURIComponent(v));
  console.log("json", JSON.stringify({ k: v }));
  process.stdout.write("split " + v.slice(0, 5)); process.stdout.write(v.slice(5) + " end\\n");
  console.error("to stderr", v);
  return { summary: "exported with " + v };
}
"""

CASES: tuple[Case, ...] = (
    Case(
        "event-keys-and-context",
        "def lambda_handler(event, context):\n"
        "    return {'summary': ','.join(sorted(event)) + '|' + context.function_name}\n",
        "export async function handler(event, context) {\n"
        "  return { summary: Object.keys(event).sort().join(',') + '|' + context.functionName };\n"
        "}\n",
        summary=",".join(sorted(EVENT)) + "|orders-run-1",
    ),
    Case(
        "result-as-json",
        "def lambda_handler(event, context):\n    return {'exported': 2, 'to': 'sink'}\n",
        "export const handler = async () => ({ exported: 2, to: 'sink' });\n",
        summary='{"exported":2,"to":"sink"}',
    ),
    Case(
        "sdk-get-document",
        "from docrelay.sdk import get_document\n"
        "def lambda_handler(event, context):\n"
        "    document = get_document(event['document_identifier'])\n"
        "    return {'summary': 'exported ' + document['data']['invoiceNumber']}\n",
        'import { getDocument } from "@docrelay/sdk";\n'
        "export async function handler(event) {\n"
        "  const document = await getDocument(event.document_identifier);\n"
        "  return { summary: 'exported ' + document.data.invoiceNumber };\n}\n",
        summary="exported INV-7",
    ),
    Case(
        "sdk-document-not-found-is-the-codes-error",
        "from docrelay.sdk import get_document\n"
        "def lambda_handler(event, context):\n    get_document('doc-2')\n",
        'const { getDocument } = require("@docrelay/sdk");\n'
        "exports.handler = async () => { await getDocument('doc-2'); };\n",
        "Failed",
        "CodeError",
        1,
        "DocumentNotFound",
    ),
    Case(
        "code-error",
        "def lambda_handler(event, context):\n    raise ValueError('invoice total missing')\n",
        "export async function handler() { throw new TypeError('invoice total missing'); }\n",
        "Failed",
        "CodeError",
        1,
        "invoice total missing",
    ),
    Case(
        "http-503-is-transient",
        "class Down(Exception):\n    status_code = 503\n"
        "def lambda_handler(event, context):\n    raise Down('downstream answered 503')\n",
        "export async function handler() {\n"
        "  throw Object.assign(new Error('downstream answered 503'), { statusCode: 503 });\n}\n",
        "Failed",
        "TransientError",
        3,
        "downstream answered 503",
    ),
    Case(
        "http-404-is-the-codes-error",
        "class Missing(Exception):\n    status = 404\n"
        "def lambda_handler(event, context):\n    raise Missing('no such customer')\n",
        "export async function handler() {\n"
        "  throw Object.assign(new Error('no such customer'), { status: 404 });\n}\n",
        "Failed",
        "CodeError",
        1,
        "no such customer",
    ),
    Case(
        "explicit-retryable-false",
        "class Nope(Exception):\n    status_code = 503\n    retryable = False\n"
        "def lambda_handler(event, context):\n    raise Nope('do not retry')\n",
        "export async function handler() {\n"
        "  throw Object.assign(new Error('do not retry'), { statusCode: 503, retryable: false });"
        "\n}\n",
        "Failed",
        "CodeError",
        1,
    ),
    Case(
        "connection-refused-is-transient",
        "import urllib.request\ndef lambda_handler(event, context):\n"
        "    urllib.request.urlopen('http://127.0.0.1:2/', timeout=5)\n",
        "export async function handler() { await fetch('http://127.0.0.1:2/'); }\n",
        "Failed",
        "TransientError",
        3,
    ),
    Case(
        "deadline",
        "def lambda_handler(event, context):\n    while True:\n        pass\n",
        "export async function handler() { while (true) {} }\n",
        "Failed",
        "Timeout",
        124,
        "did not finish within 2 s (timeoutSeconds)",
        env={contract.ENV_TIMEOUT: "2"},
    ),
    Case(
        "no-handler",
        "def something_else(event, context):\n    pass\n",
        "export async function somethingElse() {}\n",
        "Failed",
        "ConfigurationError",
        2,
    ),
    Case(
        "syntax-error",
        "def lambda_handler(event, context)\n    pass\n",
        "export async function handler( {\n",
        "Failed",
        "ConfigurationError",
        2,
        "SyntaxError",
    ),
    Case(
        "code-hash-mismatch",
        "def lambda_handler(event, context):\n    pass\n",
        "export async function handler() {}\n",
        "Failed",
        "ConfigurationError",
        2,
        "does not match the revision's codeHash",
        hash_mismatch=True,
    ),
    Case(
        "invalid-settings",
        "def lambda_handler(event, context):\n    pass\n",
        "export async function handler() {}\n",
        "Failed",
        "ConfigurationError",
        2,
        "the run's settings are not valid",
        env={contract.ENV_TIMEOUT: "soon"},
    ),
    Case(
        "secret-decrypted-and-every-form-masked",
        PRINT_FORMS_PY,
        PRINT_FORMS_JS,
        summary="exported with ***",
        secrets=True,
    ),
    Case(
        "missing-secret",
        "def lambda_handler(event, context):\n    pass\n",
        "export async function handler() {}\n",
        "Failed",
        "ConfigurationError",
        2,
        "the secret OTHER_KEY is missing from the run",
        secrets=True,
        env={contract.ENV_SEALED_KEYS: "API_KEY,OTHER_KEY"},
    ),
    Case(
        "broker-refuses-the-key",
        "def lambda_handler(event, context):\n    pass\n",
        "export async function handler() {}\n",
        "Failed",
        "ConfigurationError",
        2,
        "answered 403",
        secrets=True,
        broker=(403, {"error": "the key was already released"}),
    ),
    Case(
        "broker-unavailable-is-transient",
        "def lambda_handler(event, context):\n    pass\n",
        "export async function handler() {}\n",
        "Failed",
        "TransientError",
        3,
        "answered 503",
        secrets=True,
        broker=(503, {"error": "try again"}),
    ),
    Case(
        "egress-proxy-away-is-transient-and-says-so",
        "import urllib.request\ndef lambda_handler(event, context):\n"
        "    urllib.request.urlopen('https://api.example.com/v1/bills', timeout=5)\n",
        "export async function handler() { await fetch('https://api.example.com/v1/bills'); }\n",
        "Failed",
        "TransientError",
        3,
        "(the egress proxy at 127.0.0.1:2 is not reachable; retried)",
        # The runner waits for the proxy before the code (10 s by default): not that long here.
        env={contract.ENV_EGRESS_WAIT: "0.5"},
        proxy_down=True,
    ),
    Case(
        "egress-denied",
        "import urllib.request\ndef lambda_handler(event, context):\n"
        "    urllib.request.urlopen('https://api.example.com/v1/bills', timeout=5)\n",
        "export async function handler() { await fetch('https://api.example.com/v1/bills'); }\n",
        "Failed",
        "EgressDenied",
        5,
        "api.example.com:443 is not in spec.egress.hosts",
        proxy=True,
    ),
)

RUNNERS = ("python", "nodejs")


@dataclass
class Ran:
    exit_code: int
    message: dict[str, Any]
    stdout: str
    stderr: str


@pytest.fixture
def run_case(tmp_path: Path) -> Iterator[Any]:
    FakeBroker.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeBroker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = RefusingProxy()

    def run(case: Case, runtime: str) -> Ran:
        FakeBroker.answer = case.broker or key_answer()
        code = case.python if runtime == "python" else case.javascript
        code_file = tmp_path / ("handler.py" if runtime == "python" else "handler.js")
        code_file.write_text(code)
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        termination = tmp_path / "termination-log"
        termination.write_text("")
        digest = "sha256:" + hashlib.sha256(code.encode()).hexdigest()
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "TMPDIR": str(tmp_path),
            contract.ENV_EVENT: json.dumps(EVENT),
            contract.ENV_RUN: "orders-run-1",
            contract.ENV_ATTEMPT: "1",
            contract.ENV_TIMEOUT: "20",
            contract.ENV_CODE_PATH: str(code_file),
            contract.ENV_CODE_HASH: "sha256:" + "0" * 64 if case.hash_mismatch else digest,
            contract.ENV_TERMINATION_PATH: str(termination),
            contract.ENV_BROKER_TOKEN_PATH: str(token),
        }
        env[contract.ENV_BROKER_URL] = f"http://127.0.0.1:{server.server_address[1]}"
        if case.secrets:
            env["API_KEY"] = encrypt_value(KEY, RUN_UID, 1, "API_KEY", SECRET.encode())
            env[contract.ENV_SEALED_KEYS] = "API_KEY"
        if case.proxy or case.proxy_down:
            port = proxy.port if case.proxy else 2
            for name in contract.PROXY_VARIABLES:
                env[name] = f"http://127.0.0.1:{port}"
        env.update(case.env)
        argv = (
            [sys.executable, "-m", "docrelay.runner"]
            if runtime == "python"
            else [node(), str(NODE_RUNNER)]
        )
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
        )
        text = termination.read_text()
        return Ran(done.returncode, json.loads(text) if text else {}, done.stdout, done.stderr)

    run.proxy = proxy  # type: ignore[attr-defined]
    yield run
    server.shutdown()
    proxy.sock.close()


@pytest.mark.parametrize("runtime", RUNNERS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_both_runners_keep_the_contract(run_case: Any, case: Case, runtime: str) -> None:
    ran = run_case(case, runtime)
    log = ran.stdout + ran.stderr
    assert ran.message.get("status") == case.status, (ran.message, log)
    assert ran.message.get("errorClass") == case.error_class, (ran.message, log)
    assert ran.exit_code == case.exit_code, (ran.message, log)
    if case.error_class:
        retryable = case.error_class in ("TransientError", "Timeout", "OutOfMemory")
        assert ran.message["retryable"] is retryable
    if case.message:
        assert case.message in ran.message.get("message", ""), ran.message
    if case.summary is not None:
        assert ran.message.get("resultSummary") == case.summary, ran.message
    # Whatever happened, no form of the secret or the token left the process.
    assert found(log + json.dumps(ran.message), [SECRET, TOKEN]) == []


@pytest.mark.parametrize("runtime", RUNNERS)
def test_what_the_code_prints_shows_masked_and_complete(run_case: Any, runtime: str) -> None:
    case = next(c for c in CASES if c.id == "secret-decrypted-and-every-form-masked")
    ran = run_case(case, runtime)
    lines = ran.stdout.splitlines()
    assert [line.split(" ")[0] for line in lines] == ["raw", "b64", "hex", "url", "json", "split"]
    assert lines[0] == "raw ***" and lines[5] == "split *** end", lines
    assert "to stderr ***" in ran.stderr
    assert FakeBroker.seen == [f"Bearer {TOKEN}"]  # the key, once, with the projected token


@pytest.mark.parametrize("runtime", RUNNERS)
def test_the_egress_proxy_gets_the_broker_token_as_its_password(
    run_case: Any, runtime: str
) -> None:
    case = next(c for c in CASES if c.id == "egress-denied")
    ran = run_case(case, runtime)
    assert ran.message["errorClass"] == "EgressDenied"
    expected = "Basic " + base64.b64encode(f"run:{TOKEN}".encode()).decode()
    assert run_case.proxy.authorizations == [expected]


# The egress proxy's host as the proxy variables spell it, and as the run's log names it: an IPv6
# address in brackets (a cluster on IPv6 gives the gateway Service an IPv6 ClusterIP).
PROXY_HOSTS = {"ipv4": ("127.0.0.1", "127.0.0.1"), "ipv6": ("::1", "[::1]")}


@pytest.mark.parametrize("family", PROXY_HOSTS)
@pytest.mark.parametrize("runtime", RUNNERS)
def test_a_proxy_away_at_start_is_waited_for_then_the_code_runs(
    run_case: Any, runtime: str, family: str
) -> None:
    """Both runners probe the egress proxy before the code, for at most the wait's bound, then
    run the code anyway and say so in the run's log."""
    case = next(c for c in CASES if c.id == "egress-proxy-away-is-transient-and-says-so")
    named = PROXY_HOSTS[family][1]
    proxy_env = {name: f"http://{named}:2" for name in contract.PROXY_VARIABLES}
    ran = run_case(replace(case, env={**case.env, **proxy_env}), runtime)
    assert ran.message["errorClass"] == "TransientError", ran.message
    assert (
        f"docrelay runner: the egress proxy at {named}:2 did not answer within 0.5 s; "
        "running the code anyway"
    ) in ran.stderr, ran.stderr
    assert f"(the egress proxy at {named}:2 is not reachable; retried)" in ran.message["message"]


class LateProxy:
    """The egress proxy as a new pod sees it while its network is not ready: the first
    `closed` connections end at once (a NetworkPolicy controller that has not programmed the
    pod yet refuses it; a relay in front of the proxy closes), later ones answer 407."""

    def __init__(self, closed: int, host: str = "127.0.0.1") -> None:
        self.closed, self.connections = closed, 0
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                if self.connections > self.closed:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")


@pytest.mark.parametrize("family", PROXY_HOSTS)
@pytest.mark.parametrize("runtime", RUNNERS)
def test_code_runs_once_the_egress_proxy_answers(run_case: Any, runtime: str, family: str) -> None:
    """Both runners wait before the code until the proxy answers: the code's own first call
    reaches it (without the wait it would be closed), and the log says the runner waited. An
    IPv6 proxy (`http://[::1]:port`) is probed at its address, not at the bracketed name."""
    host, named = PROXY_HOSTS[family]
    proxy = LateProxy(closed=2, host=host)
    try:
        case = Case(
            "late-proxy",
            "import socket\ndef lambda_handler(event, context):\n"
            f"    with socket.create_connection(('{host}', {proxy.port}), timeout=5) as s:\n"
            "        s.sendall(b'CONNECT api.example.com:443 HTTP/1.1\\r\\n\\r\\n')\n"
            "        return {'summary': s.recv(64).decode().split('\\r\\n')[0] or 'closed'}\n",
            "const net = require('node:net');\n"
            "exports.handler = () => new Promise((resolve, reject) => {\n"
            f"  const s = net.connect({{ host: '{host}', port: {proxy.port} }},\n"
            "    () => s.write('CONNECT api.example.com:443 HTTP/1.1\\r\\n\\r\\n'));\n"
            "  let seen = '';\n"
            "  s.on('data', (d) => { seen += d; });\n"
            "  s.on('error', reject);\n"
            "  s.on('close', () => resolve({ summary: seen.split('\\r\\n')[0] || 'closed' }));\n"
            "});\n",
            summary="HTTP/1.1 407 Proxy Authentication Required",
            env={name: f"http://{named}:{proxy.port}" for name in contract.PROXY_VARIABLES},
        )
        ran = run_case(case, runtime)
    finally:
        proxy.sock.close()
    assert ran.message.get("resultSummary") == case.summary, (ran.message, ran.stderr)
    assert "the egress proxy answered after" in ran.stderr, ran.stderr
    assert "this pod's network was not ready when it started" in ran.stderr


def test_the_node_runners_masker_matches_the_python_table() -> None:
    """tests/node/masking.test.mjs: the JavaScript masker against the generated vectors."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [node(), "--test", "tests/node/"], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout


def test_the_masking_vectors_are_those_of_the_python_table() -> None:
    from devkit import maskvectors

    assert maskvectors.PATH.read_text() == maskvectors.render(), (
        "tests/unit/vectors/masking.json is stale: run `python -m devkit.maskvectors`"
    )


@pytest.mark.parametrize(
    ("code", "status", "summary"),
    [
        (
            "exports.handler = (event, context, callback) => {\n"
            "  setTimeout(() => callback(null, { summary: 'called back' }), 10);\n};\n",
            "Succeeded",
            "called back",
        ),
        (
            "exports.handler = (event, context, callback) => callback(new Error('nope'));\n",
            "Failed",
            None,
        ),
    ],
)
def test_a_nodejs_handler_may_answer_through_a_callback_as_on_lambda(
    run_case: Any, code: str, status: str, summary: str | None
) -> None:
    ran = run_case(Case("callback", "", code), "nodejs")
    assert ran.message["status"] == status, ran
    assert ran.message.get("resultSummary") == summary
    if status == "Failed":
        assert ran.message["message"] == "Error: nope" and ran.exit_code == 1


def test_a_nodejs_heap_that_outgrows_the_memory_limit_is_out_of_memory(run_case: Any) -> None:
    """The runner gives the code's heap 3/4 of the container's limit (DOCRELAY_MEMORY_LIMIT_MIB,
    from the downward API): past it, OutOfMemory (exit 4, retryable), not a kernel kill."""
    code = (
        "export async function handler() {\n"
        "  const kept = [];\n"
        "  while (true) kept.push(new Array(100000).fill({ n: kept.length }));\n}\n"
    )
    case = Case("heap", "", code, env={contract.ENV_MEMORY_LIMIT_MIB: "128"})
    ran = run_case(case, "nodejs")
    assert (ran.message["errorClass"], ran.exit_code) == ("OutOfMemory", 4), ran
    assert ran.message["retryable"] is True
    assert ran.message["message"] == "the code ran out of memory (JavaScript heap)"
