"""The run's side of the egress proxy: the proxy variables a run gets, the token as the proxy
password, and a refusal from the proxy becoming EgressDenied whichever client the code uses
(urllib, http.client, requests, httpx) against a loopback server answering as the proxy does."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import requests

from docrelay.builders.run import RunAttempt, build_run_job
from docrelay.gateway.egress import refusal_response
from docrelay.models.run import ErrorClass
from docrelay.reconcile.run import RETRYABLE
from docrelay.runner import contract
from docrelay.runner.egress import (
    install_proxy_credentials,
    proxy_address,
    proxy_unreachable,
    wait_for_proxy,
)
from docrelay.runner.main import Context, call_with_deadline, egress_wait

REASON = "evil.example.net:443 is not allowed; list it in spec.egress.hosts of the Integration"


def attempt(**changes: object) -> RunAttempt:
    base: dict[str, object] = dict(
        namespace="t", run="r", run_uid="u", attempt=1, integration="i", revision="i-1",
        code_config_map="c", code_key="handler.py", code_hash="sha256:00", event={},
        idempotency_key="k", timeout_seconds=60,
    )  # fmt: skip
    base.update(changes)
    return RunAttempt(**base)  # type: ignore[arg-type]


def env_of(job: dict) -> dict[str, str]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_run_pods_get_the_proxy_without_credentials_and_the_broker_direct() -> None:
    env = env_of(build_run_job(attempt(
        broker_url="http://127.0.0.1:8090", egress_proxy_url="http://127.0.0.1:3128"
    )))  # fmt: skip
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        assert env[name] == "http://127.0.0.1:3128"
    # The broker's host and port only: another port of its host still goes through the proxy.
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1:8090"
    for elsewhere in ("http://127.0.0.1:6443/", "http://127.0.0.1/"):
        assert not urllib.request.proxy_bypass_environment(
            urllib.parse.urlsplit(elsewhere).netloc, {"no": env["NO_PROXY"]}
        )
    assert urllib.request.proxy_bypass_environment("127.0.0.1:8090", {"no": env["NO_PROXY"]})
    assert "HTTPS_PROXY" not in env_of(build_run_job(attempt(broker_url="http://b:1")))


def test_the_broker_token_outlives_the_run() -> None:
    def seconds(timeout: int) -> int:
        job = build_run_job(attempt(timeout_seconds=timeout))
        (volume,) = [
            v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "broker-token"
        ]
        return int(volume["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"])

    assert seconds(60) == 600  # the API server's minimum
    assert seconds(3600) > 3600 + 5  # past the Job's deadline


def test_the_token_becomes_the_proxy_password(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("eyJ.abc-_.def\n")
    environ = {
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "http_proxy": "127.0.0.1:3128",
        contract.ENV_BROKER_TOKEN_PATH: str(token),
    }
    target: dict[str, str] = {}
    assert install_proxy_credentials(environ, target) == "eyJ.abc-_.def"
    assert target == {
        "HTTPS_PROXY": "http://run:eyJ.abc-_.def@127.0.0.1:3128",
        "http_proxy": "http://run:eyJ.abc-_.def@127.0.0.1:3128",
    }
    assert install_proxy_credentials({}, target) is None  # no proxy configured


class FakeProxy:
    """Answers every request with the egress proxy's 403 (or closes: `refuse=True`)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://run:tok@127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(refusal_response(403, REASON))


@pytest.fixture
def fake_proxy() -> Iterator[FakeProxy]:
    proxy = FakeProxy()
    yield proxy
    proxy.sock.close()


def outcome_of(call: Callable[[], object]):  # type: ignore[no-untyped-def]
    return call_with_deadline(lambda event, context: call(), {}, Context("r", 1, 1e12), 10)


def urllib_get(proxy: str, url: str) -> object:
    handler = urllib.request.ProxyHandler({"http": proxy, "https": proxy})
    return urllib.request.build_opener(handler).open(url, timeout=5).read()


CLIENTS: dict[str, Callable[[str, str], object]] = {
    "urllib": urllib_get,
    "requests": lambda proxy, url: requests.get(
        url, proxies={"http": proxy, "https": proxy}, timeout=5
    ).raise_for_status(),
    "httpx": lambda proxy, url: httpx.get(url, proxy=proxy, timeout=5).raise_for_status(),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_proxy_refusal_is_egress_denied(fake_proxy: FakeProxy, client: str, scheme: str) -> None:
    outcome = outcome_of(lambda: CLIENTS[client](fake_proxy.url, f"{scheme}://evil.example.net/"))
    assert outcome.error_class == contract.EGRESS_DENIED, outcome
    assert outcome.message is not None
    assert outcome.message.startswith(f"EgressDenied: {REASON} (the egress proxy refused; ")
    assert not outcome.retryable
    assert ErrorClass.EGRESS_DENIED not in RETRYABLE  # the operator does not retry it


def test_other_403s_and_the_proxy_away_are_not_egress_denied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def forbidden() -> None:
        raise urllib.error.HTTPError("https://api.test/", 403, "Forbidden", None, None)  # type: ignore[arg-type]

    assert outcome_of(forbidden).error_class == contract.CODE_ERROR
    with socket.socket() as s:  # a port nothing listens on: the proxy restarting
        s.bind(("127.0.0.1", 0))
        away = f"http://run:tok@127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HTTPS_PROXY", away)
    assert proxy_unreachable({"HTTPS_PROXY": away}) is not None
    outcome = outcome_of(lambda: urllib_get(away, "https://api.test/"))
    assert outcome.error_class == contract.TRANSIENT_ERROR and outcome.retryable
    assert outcome.message is not None and "the egress proxy at 127.0.0.1:" in outcome.message
    assert "is not reachable; retried" in outcome.message


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("http://gw.ns.svc:3128", ("gw.ns.svc", 3128)),
        ("gw.ns.svc:3128", ("gw.ns.svc", 3128)),
        ("http://run:tok@gw:3128/", ("gw", 3128)),  # credentials never reach a message
        ("http://[::1]:3128", ("::1", 3128)),
        ("http://gw", ("gw", 80)),
        ("http://gw:port", None),
        ("http://:3128", None),
    ],
)
def test_the_proxy_address_is_read_from_its_variable(
    value: str, address: tuple[str, int] | None
) -> None:
    assert proxy_address({"HTTPS_PROXY": value}) == address


def test_a_proxy_that_never_answers_is_waited_for_only_so_long() -> None:
    """Nothing listening: the wait ends at its bound (a clock that only sleeping advances) and
    names the proxy; the code then runs and its calls fail as TransientError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    now = [0.0]
    waited, probes, away = wait_for_proxy(
        {"HTTPS_PROXY": f"http://127.0.0.1:{port}"}, 1.0,
        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
    )  # fmt: skip
    assert away == f"127.0.0.1:{port}"
    assert 0.9 <= waited <= 1.0 and probes >= 10, (waited, probes)  # one every 0.1 s
    # No proxy configured, or no wait asked for: not one probe.
    assert wait_for_proxy({}, 10.0) == (0.0, 0, None)
    assert wait_for_proxy({"HTTPS_PROXY": f"http://127.0.0.1:{port}"}, 0) == (0.0, 0, None)


def test_the_wait_keeps_half_the_deadline_for_the_code() -> None:
    assert egress_wait({}, 300) == contract.EGRESS_WAIT_SECONDS
    assert egress_wait({}, 8) == 4.0
    assert egress_wait({contract.ENV_EGRESS_WAIT: "2.5"}, 300) == 2.5
    assert egress_wait({contract.ENV_EGRESS_WAIT: "0"}, 300) == 0.0
    assert egress_wait({contract.ENV_EGRESS_WAIT: "soon"}, 300) == contract.EGRESS_WAIT_SECONDS
