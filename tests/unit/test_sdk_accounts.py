"""`api_request` and `execute_action` end to end without a cluster: the SDK -> the broker's real
routes (authentication stubbed: a fixed token is the run's pod) -> the Pipedream Connect
stand-in -> a small upstream API, all over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from devkit.standins.pipedream import PipedreamStandin, echo_upstream
from devkit.standins.server import serving
from docrelay import sdk
from docrelay.gateway import broker as b
from docrelay.gateway.settings import GatewaySettings
from docrelay.pipedream import ProjectBuckets, TokenBucket
from docrelay.pipedream.credentials import ClientCache
from docrelay.runner import contract
from docrelay.sealing import KeyRing
from tests.leakcheck import assert_clean, canary

TOKEN = "projected-token"
NS = "tenant-a"
CALLER = b.Caller(NS, "pod", "pod-uid-1", "run-1-1", "run-1", "run-uid", 1, "orders", "d1", False)
SECRET = canary(header=True)  # ASCII: the stand-in compares it with compare_digest
PUBLIC_URL = "https://docrelay.example.com/"
RING = KeyRing.create()


class Kube:
    """The API objects the broker reads: the run's Integration, accounts, the Secret."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, str]] = {}

    async def get_json(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(f"{namespace}/{name}")

    async def create_json(self, path: str, body: dict[str, Any]) -> bool:
        full = f"{path}/{body['metadata']['name']}"
        created = full not in self.objects
        self.objects.setdefault(full, body)
        return created

    def add(self, plural: str, name: str, spec: dict[str, Any]) -> None:
        path = f"/apis/docrelay.io/v1alpha1/namespaces/{NS}/{plural}/{name}"
        self.objects[path] = {"metadata": {"name": name, "namespace": NS}, "spec": spec}


class Broker(b.Broker):
    caller = CALLER

    async def authenticate(self, request: Request) -> b.Caller:
        if b.bearer_token(request.headers.get("authorization")) != TOKEN:
            raise b.Refusal(401, "token not accepted")
        return self.caller


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PipedreamStandin, str, list[dict[str, Any]]]]:
    pd = PipedreamStandin(client_secret=SECRET)
    received: list[dict[str, Any]] = []
    with serving(pd.app) as connect, serving(echo_upstream(received)) as upstream:
        pd.base_url = connect.base_url  # type: ignore[attr-defined]
        yield pd, upstream.base_url, received


class World:
    def __init__(self, pd: PipedreamStandin, upstream: str, received: list[dict[str, Any]],
                 kube: Kube, broker: Broker) -> None:
        self.pd, self.upstream, self.received, self.kube, self.broker = (
            pd, upstream, received, kube, broker)
        self.broker_url = ""


@pytest.fixture
def world(
    servers: tuple[PipedreamStandin, str, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[World]:
    pd, upstream, received = servers
    pd.reset()
    received.clear()
    xero = pd.add_account("finance", "xero_accounting_api", environment="development")
    slack = pd.add_account("finance", "slack", environment="development")
    kube = Kube()
    kube.add("integrations", "orders", {"connectedAccounts": ["xero", "slack", "gone"]})
    kube.add("connectedaccounts", "xero", {"app": "xero_accounting_api", "accountId": xero.id,
                                           "externalUserId": "finance"})
    kube.add("connectedaccounts", "slack", {"app": "slack", "accountId": slack.id,
                                            "externalUserId": "finance"})
    kube.add("connectedaccounts", "other", {"app": "slack", "accountId": "apn_other1",
                                            "externalUserId": "finance"})

    def enc(value: str) -> str:
        return base64.b64encode(value.encode()).decode()

    kube.secrets[f"{NS}/docrelay-pipedream"] = {
        "client_id": enc(pd.client_id), "client_secret": enc(SECRET),
        "project_id": enc(pd.project_id), "environment": enc("development"),
        "url": enc(pd.base_url),  # type: ignore[attr-defined]
    }
    kube.secrets[f"{NS}-docrelay-keys/docrelay-sealing-keys"] = {
        k: base64.b64encode(v).decode() for k, v in RING.to_secret_data().items()
    }
    settings = GatewaySettings(namespace=NS, public_url=PUBLIC_URL)
    broker = Broker(settings, kube)  # type: ignore[arg-type]
    app = FastAPI()
    b.register(app, settings, kube, broker)  # type: ignore[arg-type]
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv(contract.ENV_BROKER_TOKEN_PATH, str(token))
    with serving(app) as server:
        monkeypatch.setenv(contract.ENV_BROKER_URL, server.base_url)
        world = World(pd, upstream, received, kube, broker)
        world.broker_url = server.base_url
        yield world
    broker.accounts.clients.close()


def test_api_request_reaches_the_target_with_the_accounts_auth(world: World) -> None:
    xero = next(a for a in world.pd.accounts.values() if a.app_slug == "xero_accounting_api")
    answer = sdk.api_request(
        "xero", f"{world.upstream}/echo", "POST", body={"InvoiceNumber": "INV-1"},
        headers={"Idempotency-Key": "k-1"}, params={"page": "2"},
    )
    assert answer["success"] is True and answer["status_code"] == 200
    seen = answer["data"]
    # The account's credentials, inserted by the Pipedream stand-in.
    assert seen["headers"]["authorization"] == f"Bearer {xero.access_token}"
    assert seen["headers"]["idempotency-key"] == "k-1"
    assert seen["query"] == {"page": "2"}
    assert seen["body"] == '{"InvoiceNumber":"INV-1"}'
    (call,) = world.pd.recorded("/proxy/", "POST")
    assert call.query == {"external_user_id": "finance", "account_id": xero.id}
    assert "x-pd-proxy-idempotency-key" in call.headers
    assert "idempotency-key" not in call.headers
    # The account's apn_ id works too, as in platform code.
    assert sdk.api_request(xero.id, f"{world.upstream}/echo", "GET")["success"] is True


def test_an_account_the_integration_does_not_list_is_refused(world: World) -> None:
    for account in ("other", "apn_other1", "gone"):
        with pytest.raises(sdk.Forbidden) as refused:
            sdk.api_request(account, f"{world.upstream}/echo")
        assert refused.value.status_code == 403
        assert contract.classify(refused.value) == "CodeError"
    assert world.pd.recorded("/proxy/") == []


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [(429, sdk.RateLimited, 1.0), (504, sdk.UpstreamTimeout, 5.0)],
)
def test_429_and_504_are_retryable(
    world: World, status: int, error: type[sdk.SdkError], retry_after: float
) -> None:
    world.pd.fail_next(status)
    with pytest.raises(error) as failed:
        sdk.api_request("xero", f"{world.upstream}/echo")
    assert failed.value.status_code == status
    assert contract.classify(failed.value) == "TransientError"
    if isinstance(failed.value, sdk.RateLimited):
        assert failed.value.retry_after == retry_after
    assert sdk.api_request("xero", f"{world.upstream}/echo")["success"] is True  # the retry


def test_the_upstream_time_limit_is_a_retryable_504(world: World) -> None:
    world.pd.upstream_timeout = 0.5  # Pipedream's 30 s, shortened
    try:
        with pytest.raises(sdk.UpstreamTimeout) as slow:
            sdk.api_request("xero", f"{world.upstream}/slow?seconds=2", "GET")
    finally:
        world.pd.upstream_timeout = 30.0
    assert slow.value.status_code == 504
    assert contract.classify(slow.value) == "TransientError"


@pytest.mark.parametrize(("code", "error_class"), [(404, "CodeError"), (503, "TransientError")])
def test_a_targets_error_raises_with_its_status(
    world: World, code: int, error_class: str
) -> None:
    with pytest.raises(sdk.ApiRequestError) as failed:
        sdk.api_request("xero", f"{world.upstream}/status/{code}?secret=q", "GET")
    assert failed.value.status_code == code
    assert failed.value.response["data"] == {"error": f"upstream says {code}"}
    assert contract.classify(failed.value) == error_class
    assert "secret=q" not in str(failed.value)  # the query may hold user data


def test_the_project_budget_refuses_before_calling(world: World) -> None:
    world.broker.accounts.clients = ClientCache(
        buckets=ProjectBuckets(lambda: TokenBucket(1, 0.01))
    )
    assert sdk.api_request("xero", f"{world.upstream}/echo")["success"]
    with pytest.raises(sdk.RateLimited) as limited:
        sdk.api_request("xero", f"{world.upstream}/echo")
    assert contract.classify(limited.value) == "TransientError"
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    assert len(world.pd.recorded("/proxy/")) == 1


def test_multipart_upload_and_raw_bodies(world: World) -> None:
    pdf = b"%PDF-1.7\n" + bytes(range(256))
    answer = sdk.api_request(
        "xero", f"{world.upstream}/upload", files={"file": ("bill.pdf", pdf, "application/pdf")},
        data={"note": "scan"},
    )
    parts = {p["name"]: p for p in answer["data"]["parts"]}
    assert parts["file"]["filename"] == "bill.pdf"
    assert parts["file"]["sha256"] == hashlib.sha256(pdf).hexdigest()
    assert parts["note"]["size"] == 4
    raw = sdk.api_request("xero", f"{world.upstream}/echo", body="a=1",
                          headers={"Content-Type": "text/plain"})
    assert raw["data"]["body"] == "a=1"
    assert raw["data"]["headers"]["content-type"] == "text/plain"


def test_execute_action_returns_the_actions_ret(world: World) -> None:
    answer = sdk.execute_action(
        "xero", "xero_accounting_api-create-invoice",
        {"contact_name": "ACME", "line_items": [{"UnitAmount": 10, "Quantity": 2}]},
    )
    invoice = answer["result"]["ret"]["Invoices"][0]
    assert (invoice["Contact"]["Name"], invoice["Total"]) == ("ACME", 20.0)
    with pytest.raises(sdk.ActionFailed) as failed:
        sdk.execute_action("slack", "slack-send-message", {"text": "no channel"})
    assert contract.classify(failed.value) == "CodeError"
    with pytest.raises(sdk.NotFound):
        sdk.execute_action("xero", "xero_accounting_api-no-such-action", {})
    with pytest.raises(sdk.Forbidden):
        sdk.execute_action("other", "slack-send-message", {"channel": "c"})


def test_an_expired_server_token_is_refreshed_transparently(world: World) -> None:
    assert sdk.api_request("xero", f"{world.upstream}/echo")["success"]
    world.pd.expire_tokens()
    assert sdk.api_request("xero", f"{world.upstream}/echo")["success"]
    assert len(world.pd.recorded("/v1/oauth/token")) == 2
    statuses = [r.status for r in world.pd.recorded("/proxy/")]
    assert statuses == [200, 401, 200]  # refused once, then the new token


def test_no_credentials_is_a_retryable_503(world: World) -> None:
    world.kube.secrets.clear()
    with pytest.raises(sdk.BrokerUnavailable) as failed:
        sdk.api_request("xero", f"{world.upstream}/echo")
    assert failed.value.status_code == 503


def test_the_client_secret_and_tokens_appear_nowhere(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    sdk.api_request("xero", f"{world.upstream}/echo")
    for setup, call in (
        (lambda: world.pd.fail_next(429), lambda: sdk.api_request("xero", world.upstream)),
        (lambda: world.pd.fail_next(504), lambda: sdk.api_request("xero", world.upstream)),
        (lambda: None, lambda: sdk.api_request("xero", f"{world.upstream}/status/500")),
        (lambda: None, lambda: sdk.execute_action("slack", "slack-send-message", {})),
        (world.pd.expire_tokens, lambda: sdk.api_request("other", world.upstream)),
    ):
        setup()
        try:
            texts.append(repr(call()))
        except sdk.SdkError as exc:
            texts.append(f"{exc!r} {exc} {getattr(exc, 'response', '')}")
    texts.append(caplog.text)
    texts.extend(repr(r) for r in world.received)
    canaries = [SECRET, *world.pd.issued_tokens]
    assert_clean("\n".join(texts), canaries, "results, errors, logs and upstream requests")


def test_upload_file_answers_a_signed_url_that_serves_the_file(world: World) -> None:
    import httpx

    pdf = b"%PDF-1.7\n" + bytes(range(256)) * 8
    url = sdk.upload_file("xero", pdf, "bill 7.pdf", "application/pdf")
    assert url.startswith(f"{PUBLIC_URL}v1/files/{NS}/docrelay-file-")
    assert "/bill%207.pdf?expires=" in url and "&signature=" in url
    (stored,) = [o for p, o in world.kube.objects.items() if "/configmaps/" in p]
    assert stored["metadata"]["ownerReferences"][0]["name"] == "run-1"
    assert stored["immutable"] is True
    local = url.replace(PUBLIC_URL.rstrip("/"), world.broker_url)
    fetched = httpx.get(local)
    assert fetched.status_code == 200 and fetched.content == pdf
    assert fetched.headers["content-type"] == "application/pdf"
    assert fetched.headers["content-disposition"] == "attachment; filename*=UTF-8''bill%207.pdf"
    # The same file again is the same object; a changed URL is refused.
    assert sdk.upload_file("xero", pdf, "bill 7.pdf", "application/pdf").split("?")[0] == (
        url.split("?")[0])
    expires = int(local.split("expires=")[1].split("&")[0])
    for bad in (
        local.replace("signature=", "signature=x"),
        local.replace(f"expires={expires}", f"expires={expires + 1}"),
        local.replace("signature=", "nosignature="),
    ):
        assert httpx.get(bad).status_code == 403
    assert httpx.get(local.replace(f"/{NS}/", "/other-ns/")).status_code == 404
    with pytest.raises(sdk.Forbidden):
        sdk.upload_file("other", pdf, "bill.pdf", "application/pdf")
    with pytest.raises(sdk.SdkError) as too_big:
        sdk.upload_file("xero", b"x" * (701 * 1024), "big.bin", "application/octet-stream")
    assert too_big.value.status_code == 413
    with pytest.raises(sdk.SdkError) as bad_name:
        sdk.upload_file("xero", pdf, "../etc/passwd", "application/pdf")
    assert bad_name.value.status_code == 400


def test_an_expired_file_url_is_refused() -> None:
    from docrelay.gateway import files

    key = b"k" * 32
    sig = files.signature(key, NS, "docrelay-file-abc-run", 1000)
    files.check_signature(key, NS, "docrelay-file-abc-run", "1000", sig, now=999.0)
    with pytest.raises(files.FileRefused) as expired:
        files.check_signature(key, NS, "docrelay-file-abc-run", "1000", sig, now=1001.0)
    assert expired.value.status == 403
    with pytest.raises(files.FileRefused):
        files.check_signature(key, NS, "some-configmap", "1000", sig, now=999.0)


def test_a_dry_run_sends_no_write_and_records_what_it_simulated(world: World) -> None:
    """A dry test run: writes come back as marked simulations and reach neither Pipedream nor
    the target; reads are real; a refusal is the same as in a live run; every action is
    recorded for the run without bodies, values or query strings."""
    recorded: list[tuple[b.Caller, Any]] = []
    world.broker.actions = lambda caller, entry: recorded.append((caller, entry))
    world.broker.caller = b.Caller(**{**CALLER.__dict__, "test": True, "dry_run": True})

    posted = sdk.api_request(
        "xero", f"{world.upstream}/echo?token=q", "POST", body={"InvoiceNumber": "INV-1"}
    )
    assert posted["success"] is True and posted["dry_run"] is True
    assert posted["data"]["dryRun"] is True and "not sent" in posted["data"]["simulated"]
    ran = sdk.execute_action("xero", "xero_accounting_api-create-invoice", {"contact_name": "A"})
    assert ran["dry_run"] is True and ran["result"]["ret"]["dryRun"] is True
    url = sdk.upload_file("xero", b"%PDF-1.7", "bill 7.pdf", "application/pdf")
    assert url == "https://dry-run.docrelay.invalid/not-stored/bill%207.pdf"
    assert world.pd.recorded("/proxy/") == [] and world.pd.recorded("/actions/run") == []
    assert world.received == []
    assert not [p for p in world.kube.objects if "/configmaps/" in p]  # no file stored

    read = sdk.api_request("xero", f"{world.upstream}/echo", "GET")  # reads are real
    assert read["success"] is True and "dry_run" not in read
    assert len(world.received) == 1
    with pytest.raises(sdk.Forbidden):
        sdk.api_request("other", f"{world.upstream}/echo", "POST", body={})

    entries = [entry.to_json() for _, entry in recorded]
    assert [(e["action"], e["outcome"], e.get("method")) for e in entries] == [
        ("api_request", "simulated", "POST"),
        ("execute_action", "simulated", None),
        ("upload_file", "simulated", None),
        ("api_request", "sent", "GET"),
        ("api_request", "refused:403", "POST"),
    ]
    assert all(e["dryRun"] is True for e in entries)
    assert entries[0]["path"] == "/echo" and entries[0]["host"] == "127.0.0.1"
    assert entries[1]["tool"] == "xero_accounting_api-create-invoice"
    assert entries[1]["props"] == ["contact_name"]
    assert entries[2]["fileName"] == "bill 7.pdf"
    shown = repr(entries)
    assert "INV-1" not in shown and "token=q" not in shown and "A'" not in shown


def test_a_live_run_records_its_actions_as_sent(world: World) -> None:
    recorded: list[Any] = []
    world.broker.actions = lambda caller, entry: recorded.append(entry.to_json())
    world.broker.caller = b.Caller(**{**CALLER.__dict__, "test": True})
    sdk.api_request("xero", f"{world.upstream}/echo", "POST", body={"InvoiceNumber": "INV-1"})
    assert len(world.received) == 1
    (entry,) = recorded
    assert (entry["outcome"], entry["status"], entry["dryRun"]) == ("sent", 200, False)


def test_the_runs_token_in_a_path_or_file_name_is_masked_in_the_record(world: World) -> None:
    """The broker's record keeps what the code names freely (a path, a file name, an action
    key); the run's own broker token, the one value the gateway knows, never reaches it."""
    recorded: list[Any] = []
    world.broker.actions = lambda caller, entry: recorded.append(entry.to_json())
    world.broker.caller = b.Caller(**{**CALLER.__dict__, "test": True, "dry_run": True})
    sdk.api_request("xero", f"{world.upstream}/v1/{TOKEN}/bills", "POST", body={})
    sdk.upload_file("xero", b"%PDF-1.7", f"bill-{TOKEN}.pdf", "application/pdf")
    sdk.execute_action("xero", f"xero-{TOKEN}", {f"p-{TOKEN}": "A"})
    assert [e.get("path") or e.get("fileName") or e.get("tool") for e in recorded] == [
        "/v1/***/bills",
        "bill-***.pdf",
        "xero-***",
    ]
    assert recorded[2]["props"] == ["p-***"]
    assert TOKEN not in repr(recorded)
