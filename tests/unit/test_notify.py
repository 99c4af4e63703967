"""Notifications (spec.notify) without a cluster: the model, what is sent (Slack text, a
Standard Webhooks event the gateway's own verifier accepts), deduplication and the rate limit,
and that the URL, a credential, is never logged. tests/cluster/test_notify.py sends for real."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from docrelay.gateway.signatures import verify_standard_webhook
from docrelay.handlers.notify import THREAD, Notifier, dead_letter_notice, paused_notice
from docrelay.models import Integration
from docrelay.models.integration import Notify, NotifyEvent
from docrelay.reconcile.notify import (
    RATE_LIMIT,
    RATE_WINDOW,
    Gate,
    Notice,
    PinnedUrl,
    TargetRefused,
    pin_url,
    slack_body,
)

URL = "https://hooks.example.com/services/T000/B000/cnry-secret-token"
PUBLIC = "93.184.215.14"  # what hooks.example.com resolves to here (a public address)
PINNED = "https://93.184.215.14/services/T000/B000/cnry-secret-token"


def public(host: str, port: int) -> list[str]:
    assert (host, port) == ("hooks.example.com", 443)
    return [PUBLIC]


SIGNING = b"0123456789abcdef0123456789abcdef"


def integration(**notify: Any) -> Integration:
    return Integration.model_validate(
        {
            "metadata": {"name": "orders", "namespace": "team"},
            "spec": {
                "workspace": "ws",
                "documentType": "dt",
                "trigger": "DocumentValidated",
                "code": "x",
                "notify": {"urlSecret": "NOTIFY_URL", **notify},
            },
        }
    )


def test_the_model() -> None:
    assert Notify.model_validate({"urlSecret": "HOOK"}).wants(NotifyEvent.PAUSED)
    only = Notify.model_validate({"urlSecret": "HOOK", "events": ["DeadLettered"]})
    assert only.wants(NotifyEvent.DEAD_LETTERED) and not only.wants(NotifyEvent.PAUSED)
    with pytest.raises(ValueError, match="signingSecret is needed for format StandardWebhooks"):
        Notify.model_validate({"urlSecret": "HOOK", "format": "StandardWebhooks"})


def test_slack_text_names_the_run_and_what_to_do() -> None:
    notice = dead_letter_notice("team", "orders", "orders-1a2b", "TransientError")
    assert json.loads(slack_body(notice, dropped=2)) == {
        "text": "docrelay: team/orders: DeadLettered (orders-1a2b): run orders-1a2b was "
        "dead-lettered (TransientError); see `docrelay logs orders-1a2b`, then `docrelay replay "
        "orders` once fixed [2 more notice(s) were rate-limited]"
    }


def test_duplicates_are_sent_once_and_each_integration_is_rate_limited() -> None:
    gate = Gate()
    first = dead_letter_notice("team", "orders", "r0", "TransientError")
    assert gate.admit(first, 0.0) == (True, 0)
    assert gate.admit(first, 1.0) == (False, 0)  # the same notice again
    for n in range(1, RATE_LIMIT):
        assert gate.admit(dead_letter_notice("team", "orders", f"r{n}", "X"), 2.0)[0]
    assert gate.admit(dead_letter_notice("team", "orders", "late1", "X"), 3.0) == (False, 0)
    assert gate.admit(dead_letter_notice("team", "orders", "late2", "X"), 4.0) == (False, 0)
    assert gate.admit(paused_notice("team", "other", 5, "t1"), 4.0) == (True, 0)  # per integration
    # Once the window has passed, the next one goes and says how many were dropped.
    assert gate.admit(dead_letter_notice("team", "orders", "later", "X"), RATE_WINDOW + 2.5) == (
        True,
        2,
    )
    # A second pause (another transition time) is a new notice.
    assert gate.admit(paused_notice("team", "other", 5, "t2"), 5.0) == (True, 0)


class Recorder:
    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)


def opener(values: Mapping[str, bytes]):  # type: ignore[no-untyped-def]
    def open_keys(namespace: str, name: str, keys: tuple[str, ...]) -> dict[str, bytes]:
        assert (namespace, name) == ("team", "orders")
        return {k: values[k] for k in keys}

    return open_keys


def test_a_standard_webhooks_notice_verifies_with_the_gateways_own_verifier() -> None:
    recorder = Recorder()
    secret = b"whsec_" + base64.b64encode(SIGNING)
    notifier = Notifier(
        opener({"NOTIFY_URL": URL.encode(), "NOTIFY_KEY": secret}),
        transport=httpx.MockTransport(recorder),
        resolve=public,
    )
    target = integration(format="StandardWebhooks", signingSecret="NOTIFY_KEY")
    notice = dead_letter_notice("team", "orders", "orders-1a2b", "TransientError")
    assert notifier.send(target, notice) == 200
    (request,) = recorder.requests
    # Sent to the address that was checked, with the URL's name as Host and for TLS.
    assert str(request.url) == PINNED
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    body = request.content
    verified = verify_standard_webhook(
        body, dict(request.headers), [SIGNING], float(request.headers["webhook-timestamp"])
    )
    assert verified.delivery_id == request.headers["webhook-id"]
    event = json.loads(body)
    assert event["type"] == "docrelay.run.dead_lettered"
    assert event["data"]["subject"] == "orders-1a2b" and event["data"]["integration"] == "orders"
    assert notifier.send(target, notice) is None  # sent once


def test_the_url_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect to {request.url}")

    notifier = Notifier(
        opener({"NOTIFY_URL": URL.encode()}), transport=httpx.MockTransport(refuse), resolve=public
    )
    notice = dead_letter_notice("team", "orders", "r1", "TransientError")
    done = threading.Event()

    def in_its_thread() -> None:
        notifier.send(integration(), notice)
        done.set()

    threading.Thread(target=in_its_thread, name=THREAD).start()
    assert done.wait(10)
    ok = Notifier(
        opener({"NOTIFY_URL": URL.encode()}), transport=httpx.MockTransport(Recorder()),
        resolve=public,
    )  # fmt: skip
    thread = threading.Thread(
        target=lambda: ok.send(integration(), dead_letter_notice("team", "orders", "r2", "X")),
        name=THREAD,
    )
    thread.start()
    thread.join(10)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered (ConnectError)" in logged and "sent: HTTP 200" in logged
    assert "cnry-secret-token" not in logged and "hooks.example.com" not in logged
    notifier.stop()
    ok.stop()


def test_a_value_that_is_not_a_url_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    notifier = Notifier(
        opener({"NOTIFY_URL": b"not a url"}), transport=httpx.MockTransport(recorder)
    )
    notice = Notice("team", "orders", NotifyEvent.PAUSED, "since t", "paused")
    assert notifier.send(integration(), notice) is None
    assert recorder.requests == []
    assert "is not an http(s) URL" in caplog.text and "not a url" not in caplog.text


def test_the_agents_failed_tests_reach_the_runs_notifier() -> None:
    from types import SimpleNamespace

    from docrelay.handlers.agent import AgentWorker
    from docrelay.handlers.notify import agent_failed_notice
    from docrelay.handlers.runs import RUNS_MEMO_KEY

    heard: list[tuple[str, Notice]] = []
    notifier = SimpleNamespace(notify=lambda i, n: heard.append((i.metadata.name, n)))
    worker = AgentWorker.__new__(AgentWorker)  # only its notify() is exercised here
    worker.memo = {RUNS_MEMO_KEY: SimpleNamespace(notifier=notifier)}
    notice = agent_failed_notice("team", "orders", "orders-9f8e7d", "orders-t-1, orders-t-2")
    worker.notify(integration(), notice)
    assert heard == [("orders", notice)]
    assert notice.text() == (
        "docrelay: team/orders: AgentTestFailed (orders-9f8e7d): the agent's revision "
        "orders-9f8e7d failed its test runs (orders-t-1, orders-t-2); it cannot be deployed "
        "(see status.agent, `docrelay diff orders-9f8e7d`)"
    )
    worker.memo = None  # before the operator started: nothing to send, nothing raised
    worker.notify(integration(), notice)
    assert len(heard) == 1


@pytest.mark.parametrize(
    ("url", "addresses", "reason"),
    [
        ("http://127.0.0.1:8080/hook", ["127.0.0.1"], "loopback"),
        ("http://localhost/hook", ["::1", "127.0.0.1"], "loopback"),
        ("http://169.254.169.254/latest/meta-data/", ["169.254.169.254"], "link-local"),
        ("http://metadata.google.internal/", ["169.254.169.254"], "link-local"),
        ("https://hooks.internal/x", ["10.0.4.7"], "private"),
        ("https://hooks.internal/x", ["fd00:ec2::254"], "private"),
        ("https://rebind.example/x", ["::ffff:127.0.0.1"], "loopback"),
        ("http://0.0.0.0:9443/", ["0.0.0.0"], "unspecified"),
        ("https://nowhere.example/x", [], None),
    ],
)
def test_the_operators_own_network_is_not_a_notification_target(
    url: str, addresses: list[str], reason: str | None
) -> None:
    with pytest.raises(TargetRefused) as refused:
        pin_url(url, addresses, allow_private=False)
    message = str(refused.value)
    if reason is None:
        assert message == "the URL's host has no address"
    else:
        assert message.startswith(f"the URL's host is a {reason} address; ")
        assert "operator.notify.allowPrivateTargets" in message
    assert urlsplit(url).hostname not in message  # the URL is a sealed value


@pytest.mark.parametrize(
    ("url", "addresses", "allow", "pinned"),
    [
        (URL, [PUBLIC], False, PinnedUrl(PINNED, "hooks.example.com", "hooks.example.com")),
        # A name that also resolves to a private address: only the public one is used.
        ("http://a.example:8080/h?x=1", ["10.0.0.1", PUBLIC], False,
         PinnedUrl(f"http://{PUBLIC}:8080/h?x=1", "a.example:8080", None)),
        ("https://u:p@a.example/h", ["2606:2800:220:1::"], False,
         PinnedUrl("https://u:p@[2606:2800:220:1::]/h", "a.example", "a.example")),
        # Allowed by the install: a sink on the cluster's network.
        ("http://sink.ns.svc:8080/h", ["10.96.0.12"], True,
         PinnedUrl("http://10.96.0.12:8080/h", "sink.ns.svc:8080", None)),
        ("http://127.0.0.1:9000/h", ["127.0.0.1"], True,
         PinnedUrl("http://127.0.0.1:9000/h", "127.0.0.1:9000", None)),
    ],
)  # fmt: skip
def test_a_url_is_bound_to_an_address_that_was_checked(
    url: str, addresses: list[str], allow: bool, pinned: PinnedUrl
) -> None:
    assert pin_url(url, addresses, allow_private=allow) == pinned


def test_a_notification_to_a_private_address_is_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The notifier resolves the URL's host itself and refuses before connecting; the log says
    why and names neither the URL nor its host."""
    recorder = Recorder()
    url = "http://ledger-admin.internal:8080/hook/cnry-secret-token"
    notifier = Notifier(
        opener({"NOTIFY_URL": url.encode()}), transport=httpx.MockTransport(recorder),
        resolve=lambda host, port: ["10.0.4.7"],
    )  # fmt: skip
    notice = dead_letter_notice("team", "orders", "r1", "TransientError")
    assert notifier.send(integration(), notice) is None
    assert recorder.requests == []
    assert "not sent: the URL's host is a private address" in caplog.text
    assert "ledger-admin" not in caplog.text and "cnry-secret-token" not in caplog.text
    allowed = Notifier(
        opener({"NOTIFY_URL": url.encode()}), transport=httpx.MockTransport(recorder),
        resolve=lambda host, port: ["10.0.4.7"], allow_private=True,
    )  # fmt: skip
    assert allowed.send(integration(), notice) == 200
    (request,) = recorder.requests
    assert str(request.url) == "http://10.0.4.7:8080/hook/cnry-secret-token"
    assert request.headers["host"] == "ledger-admin.internal:8080"
