"""The LLM stand-in itself: scripting over HTTP, recording, and `python -m` on its own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devkit.standins.llm import serving_llm
from docrelay.agent.codecheck import check_generated_code, extract_code
from docrelay.agent.providers import Anthropic, Message, OpenAICompatible

ROOT = Path(__file__).resolve().parents[2]


def test_scripting_and_reading_over_http() -> None:
    with serving_llm(api_key="k-1234") as (stand_in, server):
        queued = httpx.post(
            server.base_url + "/_standin/script",
            json={"replies": ["one", {"text": "two", "model": "m2"}, {"fault": {"status": 503}}]},
        )
        assert queued.json() == {"queued": 3}
        provider = OpenAICompatible(base_url=server.base_url + "/v1", model="m", api_key="k-1234")
        assert provider.complete("sys", [Message("user", "q1")]).text == "one"
        second = provider.complete("sys", [Message("user", "q2")])
        assert (second.text, second.model) == ("two", "m2")
        recorded = httpx.get(server.base_url + "/_standin/requests").json()
        assert [r["messages"] for r in recorded] == [[["user", "q1"]], [["user", "q2"]]]
        assert all(r["system"] == "sys" and r["authorized"] for r in recorded)
        # Credentials are checked but never kept.
        assert all("authorization" not in r.headers for r in stand_in.requests)
        httpx.delete(server.base_url + "/_standin/requests")
        assert stand_in.requests == []


def test_unscripted_requests_fail_loudly() -> None:
    with serving_llm() as (_, server):
        response = httpx.post(
            server.base_url + "/v1/messages",
            headers={"anthropic-version": "2023-06-01"},
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
    assert response.status_code == 500
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "llm stand-in: no reply scripted for this request",
        },
    }


def test_python_dash_m_serves_a_canned_valid_handler() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "devkit.standins.llm", "--port", str(port), "--api-key", "k-42"],
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}", "PATH": "/usr/bin:/bin"},
    )
    try:
        provider = Anthropic(base_url=f"http://127.0.0.1:{port}", model="m", api_key="k-42")
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert process.poll() is None, "the stand-in exited"
                assert time.monotonic() < deadline, "the stand-in did not start"
                time.sleep(0.1)
        reply = provider.complete("", [Message("user", "write it")])
        assert check_generated_code(extract_code(reply.text)) == []
    finally:
        process.terminate()
        process.wait(timeout=10)
