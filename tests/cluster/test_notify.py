"""Notifications against the real control plane and the local node: spec.notify's webhook (a
local sink standing in for Slack) hears about dead letters and the pause, from a URL sealed like
any secret; the canary token in that URL appears in no log, status or Event. The sink is on
loopback, which the operator refuses unless the install allows private targets
(DOCRELAY_NOTIFY_ALLOW_PRIVATE_TARGETS, chart operator.notify.allowPrivateTargets): without it
the same URL is never called.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.cluster.harness import (
    CODE_UNAVAILABLE,
    Sink,
    Tenant,
    create_run,
    custom,
    eventually,
    get_integration,
    make_integration,
    running_tenant,
    set_secret,
    wait_finished,
)


@pytest.fixture
def notifying_tenant(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    """Pausing after 2 failed runs, and allowed to notify a sink on this machine's loopback."""
    env = {"DOCRELAY_PAUSE_AFTER_FAILURES": "2", "DOCRELAY_NOTIFY_ALLOW_PRIVATE_TARGETS": "true"}
    with running_tenant(api, namespace, tmp_path, env) as started:
        yield started


def test_dead_letters_and_the_pause_reach_the_webhook_whose_url_stays_sealed(
    api: client.ApiClient, namespace: str, notifying_tenant: Tenant, sink: str
) -> None:
    pausing_tenant = notifying_tenant
    ns = namespace
    token = f"cnry-{uuid.uuid4().hex}"  # URL-safe: it goes in a path, as Slack's tokens do
    url = f"{sink}/services/{token}"  # as a Slack incoming webhook's URL holds its token
    once = {"maxAttempts": 1, "backoffBaseSeconds": 1, "backoffCapSeconds": 1}
    make_integration(
        api, ns, "flaky", CODE_UNAVAILABLE, retry=once, notify={"urlSecret": "NOTIFY_URL"}
    )
    set_secret(api, ns, "flaky", "NOTIFY_URL", url)
    dead = [create_run(api, ns, "flaky", document) for document in ("d1", "d2")]
    for run in dead:
        assert wait_finished(api, ns, run)["phase"] == "DeadLettered"

    def texts() -> list[str]:
        return [json.loads(body)["text"] for path, _, body in Sink.seen]

    got = eventually(texts, lambda t: len(t) >= 3, "two dead letters and the pause notified")
    paths = {path for path, _, _ in Sink.seen}
    assert paths == {f"/services/{token}"}, paths
    kinds = [{k.lower(): v for k, v in h.items()}.get("content-type") for _, h, _ in Sink.seen]
    assert kinds == ["application/json"] * len(Sink.seen), kinds
    for run in dead:
        assert (
            f"docrelay: {ns}/flaky: DeadLettered ({run}): run {run} was dead-lettered "
            f"(TransientError); see `docrelay logs {run}`, then `docrelay replay flaky` once fixed"
        ) in got
    paused = [t for t in got if ": Paused (since " in t]
    assert len(paused) == 1
    assert "paused after 2 failed runs in a row" in paused[0]
    assert len(got) == 3  # each notice once

    # The URL's token is nowhere but in the sink's request line.
    status = json.dumps(get_integration(api, ns, "flaky")) + "".join(
        json.dumps(custom(api).get_namespaced_custom_object(
            "docrelay.io", "v1alpha1", ns, "integrationruns", r)) for r in dead
    )  # fmt: skip
    events = json.dumps([e.message for e in client.CoreV1Api(api).list_namespaced_event(ns).items])
    for where, text in (
        ("the operator's log", pausing_tenant.log_text()),
        ("the statuses", status),
        ("the Events", events),
    ):
        assert token not in text, f"the webhook URL's token leaked into {where}"
    assert "notification DeadLettered for" in pausing_tenant.log_text()


def test_a_webhook_on_the_operators_own_network_is_never_called(
    api: client.ApiClient, namespace: str, tenant: Tenant, sink: str
) -> None:
    """By default a tenant cannot point the operator at loopback (here the sink; in a cluster
    the API server, the operator's own ports, cloud metadata): the name is resolved, the
    address refused, nothing sent; the operator's log says why without the URL."""
    ns = namespace
    token = f"cnry-{uuid.uuid4().hex}"
    port = sink.rsplit(":", 1)[1]
    url = f"http://localhost:{port}/services/{token}"  # a name that resolves to loopback
    once = {"maxAttempts": 1, "backoffBaseSeconds": 1, "backoffCapSeconds": 1}
    make_integration(
        api, ns, "nosy", CODE_UNAVAILABLE, retry=once, notify={"urlSecret": "NOTIFY_URL"}
    )
    set_secret(api, ns, "nosy", "NOTIFY_URL", url)
    run = create_run(api, ns, "nosy")
    assert wait_finished(api, ns, run)["phase"] == "DeadLettered"
    refused = (
        f"notification DeadLettered for {ns}/nosy not sent: the URL's host is a loopback "
        "address; the operator sends notifications to public addresses only (the chart's "
        "operator.notify.allowPrivateTargets allows others)"
    )
    eventually(tenant.log_text, lambda log: refused in log, "the refusal in the operator's log")
    assert Sink.seen == []
    assert token not in tenant.log_text() and "localhost" not in tenant.log_text()


def test_the_api_server_refuses_a_signed_format_without_its_key(
    api: client.ApiClient, namespace: str
) -> None:
    from tests.cluster.harness import GROUP, VERSION, integration_manifest

    body = integration_manifest(
        "unsigned", "x = 1", notify={"urlSecret": "HOOK", "format": "StandardWebhooks"}
    )
    with pytest.raises(client.ApiException) as refused:
        custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, "integrations", body)
    assert refused.value.status == 422
    assert "signingSecret is needed for format StandardWebhooks" in str(refused.value.body)
