"""What a run's start costs (docs/runner.md, "Start-up"): the runner reaches the handler
without importing what it does not need, reads the event as json.loads would, and its Outcome
behaves as the frozen dataclass it replaced."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from docrelay.runner import contract
from docrelay.runner.contract import Outcome, load_event, parse_outcome

OPERATOR = Path(contract.__file__).resolve().parents[2]

# Each costs a run's start milliseconds, and none is needed before the handler is called.
HEAVY = (
    "json",
    "re",
    "typing",
    "dataclasses",
    "pathlib",
    "traceback",
    "hashlib",
    "http.client",
    "urllib.parse",
    "socket",
    "docrelay.masking",
)

PROBE = """
import os, sys
from docrelay.runner import main

def lambda_handler(event, context):
    heavy = [m for m in {heavy!r} if m in sys.modules]
    print("imported before the handler:", ",".join(heavy) or "none", flush=True)
    print("event:", sorted(event), flush=True)
    print("proxy:", os.environ.get("HTTPS_PROXY"), flush=True)

main.load_handler = lambda path, expected_hash="": lambda_handler
sys.exit(main.main())
"""


def answering_proxy() -> int:
    """A port where the egress proxy answers a request without a token: 407, as it does."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


@pytest.mark.parametrize("proxy", [False, True], ids=["plain", "egress proxy"])
def test_the_handler_is_called_before_any_heavy_import(tmp_path: Path, proxy: bool) -> None:
    """`python -m docrelay.runner`'s own work, up to the handler, imports none of HEAVY (the
    site's and the interpreter's own imports aside: a module the bare interpreter already
    has costs the runner nothing). With the egress proxy (every run the chart starts) the
    runner probes it until it answers (here at once, as the proxy does: 407), the token goes
    into the proxy variables and stdout masks it, still without them."""
    listing = f"import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    bare = subprocess.run(
        [sys.executable, "-c", listing],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(OPERATOR)},
    )
    preloaded = set(bare.stdout.strip().split(",")) - {""}
    code = tmp_path / "handler.py"
    code.write_text("def lambda_handler(event, context):\n    return None\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(OPERATOR),
        "DOCRELAY_CODE_PATH": str(code),
        "DOCRELAY_EVENT": json.dumps({"document_identifier": "doc-1", "attempt": 1}),
        "DOCRELAY_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination"),
        "DOCRELAY_TIMEOUT_SECONDS": "30",
    }
    for name in [*contract.PROXY_VARIABLES, contract.ENV_SEALED_KEYS]:
        env.pop(name, None)
    if proxy:
        (tmp_path / "token").write_text("broker-token-1\n")
        env["HTTPS_PROXY"] = f"http://localhost:{answering_proxy()}"  # a name: resolved too
        env[contract.ENV_BROKER_TOKEN_PATH] = str(tmp_path / "token")
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("imported before"))
    imported = {m for m in line.split(": ", 1)[1].split(",") if m != "none"}
    assert imported <= preloaded, imported - preloaded
    assert "event: ['attempt', 'document_identifier']" in done.stdout
    if proxy:  # the masker was made at the first write, and masked the token
        assert "broker-token-1" not in done.stdout + done.stderr
    outcome = parse_outcome((tmp_path / "termination").read_text())
    assert outcome == Outcome("Succeeded")


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        ' {"a": [1, -2.5e3, "x\\u00e9\\n", null, true, false, {"b": {}}], "c": ""} \n',
        "[]",
        '"text"',
        "3",
        "-0.0",
        "NaN",
        "Infinity",
        '{"a": 1, "a": 2}',
        '{"émoji": "🙂"}',
    ],
)
def test_the_event_reads_as_json_loads_reads_it(text: str) -> None:
    expected, got = json.loads(text), load_event(text)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "text", ["", " ", '{"a": 1} x', '{"a": 1}{}', '{"a":', "nul", '{"a": "\x01"}', "{'a': 1}"]
)
def test_what_json_loads_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        load_event(text)


def test_outcome_is_an_immutable_value() -> None:
    failed = Outcome("Failed", contract.CODE_ERROR, "ValueError", "bad", None, "handler.py:3")
    assert failed == Outcome(
        status="Failed",
        error_class=contract.CODE_ERROR,
        exception_type="ValueError",
        message="bad",
        traceback_tail="handler.py:3",
    )
    assert failed != Outcome("Failed", contract.CODE_ERROR)
    assert hash(failed) == hash(Outcome(*[getattr(failed, f) for f in failed.__slots__]))
    assert failed.replace(message="masked") == Outcome(
        "Failed", contract.CODE_ERROR, "ValueError", "masked", None, "handler.py:3"
    )
    assert failed.message == "bad"
    with pytest.raises(AttributeError):
        failed.message = "changed"
    with pytest.raises(TypeError):
        failed.replace(colour="red")
    assert "message='bad'" in repr(failed)
    assert parse_outcome(failed.to_json()) == failed
